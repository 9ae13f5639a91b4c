"""Gunicorn entry points.

``levqor serve --prod`` runs gunicorn in-process with the seed's defaults (2 workers, 4
threads, 30 s timeout, 20 s graceful shutdown), each overridable by ``GUNICORN_WORKERS``,
``GUNICORN_THREADS``, ``GUNICORN_TIMEOUT``, ``GUNICORN_GRACEFUL_TIMEOUT``,
``GUNICORN_KEEPALIVE``, ``GUNICORN_MAX_REQUESTS`` (+ ``_JITTER``) and ``GUNICORN_BIND``. An external gunicorn can serve
``levqor_host.wsgi:app`` instead.
"""

from __future__ import annotations

import os
from typing import Any


def _settings(host: str, port: int) -> dict[str, Any]:
    env = os.environ
    return {
        "bind": env.get("GUNICORN_BIND") or f"{host}:{port}",
        "workers": int(env.get("GUNICORN_WORKERS", "2")),
        "threads": int(env.get("GUNICORN_THREADS", "4")),
        "worker_class": "gthread",
        "timeout": int(env.get("GUNICORN_TIMEOUT", "30")),
        "graceful_timeout": int(env.get("GUNICORN_GRACEFUL_TIMEOUT", "20")),
        "keepalive": int(env.get("GUNICORN_KEEPALIVE", "5")),
        # recycle a worker after this many requests (0: never), with jitter
        "max_requests": int(env.get("GUNICORN_MAX_REQUESTS", "0")),
        "max_requests_jitter": int(env.get("GUNICORN_MAX_REQUESTS_JITTER", "0")),
        "accesslog": env.get("GUNICORN_ACCESSLOG") or None,
        "errorlog": "-",
        "loglevel": env.get("GUNICORN_LOGLEVEL", "warning"),
        "proc_name": "levqor",
    }


def bind_address(host: str, port: int) -> tuple[str, int] | None:
    """The TCP address gunicorn will bind (``GUNICORN_BIND`` or ``host:port``); None for a Unix
    socket, an inherited descriptor or an address without a port."""
    bind = _settings(host, port)["bind"]
    if bind.startswith(("unix:", "fd://")):
        return None
    h, sep, p = bind.rpartition(":")
    if not sep or not p.isdigit():
        return None
    return h.strip("[]") or "0.0.0.0", int(p)


def run_gunicorn(host: str, port: int, *, scheduler: bool = True) -> None:
    from gunicorn.app.base import BaseApplication

    from levqor_host.app import create_app
    from levqor_host.config import Config

    class LevqorGunicorn(BaseApplication):
        def load_config(self) -> None:
            for k, v in _settings(host, port).items():
                if v is not None:
                    self.cfg.set(k, v)
            self.cfg.set("worker_exit", _worker_exit)

        def load(self):
            cfg = Config.from_env()
            return create_app(
                cfg, start_workers=cfg.executor == "embedded", start_scheduler=scheduler
            )

    _prepare_multiproc_dir()
    LevqorGunicorn().run()


def _prepare_multiproc_dir() -> None:
    """Prometheus multiprocess mode: the folder must exist and start empty (stale files of an
    earlier run would be merged into the counters)."""
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not d:
        return
    from pathlib import Path

    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    for f in p.glob("*.db"):
        f.unlink(missing_ok=True)


def _worker_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
    app = getattr(worker, "wsgi", None)
    st = getattr(app, "extensions", {}).get("levqor") if app is not None else None
    if st is None:
        return
    if st.scheduler is not None:
        st.scheduler.stop()
    if st.executor is not None:
        st.executor.stop(float(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20")) * 0.9)


def __getattr__(name: str) -> Any:
    # `gunicorn levqor_host.wsgi:app`: built on first access, in the worker process
    if name == "app":
        from levqor_host.app import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
