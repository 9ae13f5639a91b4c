"""Gunicorn entry points.

``levqor serve --prod`` runs gunicorn in-process with the seed's defaults (2 workers, 4
threads, 30 s timeout, 20 s graceful shutdown), each overridable by ``GUNICORN_WORKERS``,
``GUNICORN_THREADS``, ``GUNICORN_TIMEOUT``, ``GUNICORN_GRACEFUL_TIMEOUT``,
``GUNICORN_KEEPALIVE``, ``GUNICORN_MAX_REQUESTS`` (+ ``_JITTER``) and ``GUNICORN_BIND``. An external gunicorn can serve
``levqor_host.wsgi:app`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from levqor_host.config import Config, GunicornConfig


def _settings(g: GunicornConfig, host: str, port: int) -> dict[str, Any]:
    return {
        "bind": g.bind or f"{host}:{port}",
        "workers": g.workers,
        "threads": g.threads,
        "worker_class": "gthread",
        "timeout": g.timeout,
        "graceful_timeout": g.graceful_timeout,
        "keepalive": g.keepalive,
        # recycle a worker after this many requests (0: never), with jitter
        "max_requests": g.max_requests,
        "max_requests_jitter": g.max_requests_jitter,
        "accesslog": g.accesslog,
        "errorlog": "-",
        "loglevel": g.loglevel,
        "proc_name": "levqor",
    }


def bind_address(g: GunicornConfig, host: str, port: int) -> tuple[str, int] | None:
    """The TCP address gunicorn will bind (``GUNICORN_BIND`` or ``host:port``); None for a Unix
    socket, an inherited descriptor or an address without a port."""
    bind = _settings(g, host, port)["bind"]
    if bind.startswith(("unix:", "fd://")):
        return None
    h, sep, p = bind.rpartition(":")
    if not sep or not p.isdigit():
        return None
    return h.strip("[]") or "0.0.0.0", int(p)


def run_gunicorn(cfg: Config, host: str, port: int, *, scheduler: bool = True) -> None:
    """Serve ``cfg``'s app with gunicorn; each worker process builds its own app from it."""
    from gunicorn.app.base import BaseApplication

    from levqor_host.app import create_app

    def worker_exit(server: Any, worker: Any) -> None:
        _worker_exit(cfg, worker)

    class LevqorGunicorn(BaseApplication):
        def load_config(self) -> None:
            for k, v in _settings(cfg.gunicorn, host, port).items():
                if v is not None:
                    self.cfg.set(k, v)
            self.cfg.set("worker_exit", worker_exit)

        def load(self):
            return create_app(
                cfg, start_workers=cfg.executor.kind == "embedded", start_scheduler=scheduler
            )

    _prepare_multiproc_dir(cfg.observability.prometheus_multiproc_dir)
    LevqorGunicorn().run()


def _prepare_multiproc_dir(d: str | None) -> None:
    """Prometheus multiprocess mode: the folder must exist and start empty (stale files of an
    earlier run would be merged into the counters)."""
    if not d:
        return
    from pathlib import Path

    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    for f in p.glob("*.db"):
        f.unlink(missing_ok=True)


def _worker_exit(cfg: Config, worker: Any) -> None:
    if cfg.observability.prometheus_multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
    app = getattr(worker, "wsgi", None)
    st = getattr(app, "extensions", {}).get("levqor") if app is not None else None
    if st is None:
        return
    if st.scheduler is not None:
        st.scheduler.stop()
    if st.executor is not None:
        st.executor.stop(cfg.gunicorn.graceful_timeout * 0.9)


def __getattr__(name: str) -> Any:
    # `gunicorn levqor_host.wsgi:app`: built on first access, in the worker process
    if name == "app":
        from levqor_host.app import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
