"""Operations endpoints.

* ``GET /health``: liveness, answers without touching the database.
* ``GET /ops/uptime``: version, start time and uptime for status pages (no database).
* ``GET /api/v1/ops/health``: readiness, every dependency checked for real (database reachable,
  migrated and writable; executor threads alive, queue depth and oldest queued run; scheduler
  leader and next fire time; plugins loaded or failed; free disk and a writable data folder;
  backup age). 503 with ``failing`` naming each failing part.
* ``GET /metrics``: Prometheus text format (``LEVQOR_METRICS_TOKEN`` protects it when set).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from levqor_kernel.http import redact

from levqor_host import __version__
from levqor_host.web.access import public
from levqor_host.web.operations import answer, content, operation

bp = Blueprint("ops", __name__)


def _state():
    return current_app.extensions["levqor"]


@bp.get("/health")
@public("liveness for load balancers; version and uptime only")
@operation(
    "Liveness",
    "Answers as long as the process serves requests, without touching the database.",
    tag="ops",
    responses={200: answer({"type": "object"})},
)
def health() -> Response:
    st = _state()
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - st.started_at, 3),
        }
    )


@bp.get("/ops/uptime")
@public("status pages; version and start time only")
@operation(
    "Uptime, version and start time (status pages; no database)",
    "The version, when this process started, how long ago, and its process id.",
    tag="ops",
    responses={200: answer({"type": "object"})},
)
def uptime() -> Response:
    st = _state()
    now = time.time()
    return jsonify(
        {
            "status": "up",
            "version": __version__,
            "started_at": datetime.fromtimestamp(st.started_at, UTC).isoformat(),
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "uptime_seconds": round(now - st.started_at, 3),
            "pid": os.getpid(),
        }
    )


@bp.get("/metrics")
@public("its own credential: LEVQOR_METRICS_TOKEN when set")
@operation(
    "Prometheus metrics in text format",
    "Requests, runs, steps, queue and scheduler metrics. When LEVQOR_METRICS_TOKEN is set, "
    "send 'Authorization: Bearer <that token>' (not an API key).",
    tag="ops",
    responses={200: content("Prometheus text", "text/plain")},
)
def metrics() -> Response:
    from levqor_host.web.observability import metrics_response

    return metrics_response(_state())


# ---------------------------------------------------------------------------------- checks
def _err(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return redact(f"{type(e).__name__}: {first}"[:300])


def check_database(st: Any) -> dict:
    store = st.store
    out: dict[str, Any] = {"ok": False, "dialect": store.dialect}
    t0 = time.perf_counter()
    try:
        if store.dialect == "sqlite":
            from levqor_host.store.maintenance import sqlite_file

            path = sqlite_file(store.url)
            if not path.exists():
                out["error"] = f"the database file {path.name} is missing from the data folder"
                return out
        store.ping()
        if not store.is_migrated():
            out["error"] = "the database is not at the latest migration: run `levqor db upgrade`"
            return out
        if store.dialect == "sqlite":
            # a write probe with a short timeout: a write lock held elsewhere shows here
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.rollback()
            except sqlite3.OperationalError as e:
                out["error"] = f"the database cannot take writes: {e} (a write lock held > 1 s)"
                return out
            finally:
                conn.close()
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        out["error"] = _err(e)
        return out
    out["ok"] = True
    out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return out


def check_executor(st: Any) -> dict:
    cfg = st.config
    out: dict[str, Any] = {"ok": True, "mode": cfg.executor.kind}
    try:
        qs = st.store.runs.queue_stats()
        out.update(
            queue_depth=qs["queued"],
            running=qs["running"],
            waiting=qs["waiting"],
            overdue_waits=qs["overdue_waits"],
            oldest_queued_age_seconds=(
                round(qs["oldest_queued_age_seconds"], 3)
                if qs["oldest_queued_age_seconds"] is not None
                else None
            ),
        )
    except Exception as e:  # noqa: BLE001
        out.update(ok=False, error=f"queue unreadable: {_err(e)}")
        return out
    if getattr(st, "dispatcher", None) is not None:  # LEVQOR_EXECUTOR=celery: the broker
        broker = st.dispatcher.check()
        out["broker"] = broker
        if not broker["ok"]:
            out.update(ok=False, error=broker["error"])
            return out
    ex = st.executor
    if ex is None:
        out["in_this_process"] = False
        out["note"] = (
            "executor off (LEVQOR_EXECUTOR=off)"
            if cfg.executor.kind == "off"
            else "no workers in this process: `levqor worker` runs the queue"
        )
    else:
        threads = list(getattr(ex, "_threads", []))
        alive = sum(1 for t in threads if t.is_alive())
        out.update(
            in_this_process=True,
            worker_id=ex.worker_id,
            threads=ex.threads,
            threads_alive=alive,
            active_runs=len(ex.active_runs),
            last_loop_age_seconds=(round(time.time() - ex.last_loop, 3) if ex.last_loop else None),
        )
        if not ex.alive():
            out.update(
                ok=False,
                error=f"the executor is stopped ({alive}/{ex.threads} worker threads alive)",
            )
            return out
    age = out.get("oldest_queued_age_seconds")
    if cfg.observability.health_max_queue_age > 0 and age is not None and age > cfg.observability.health_max_queue_age:
        out.update(
            ok=False,
            error=f"the oldest queued run has waited {age:.0f} s "
            f"(> LEVQOR_HEALTH_MAX_QUEUE_AGE={cfg.observability.health_max_queue_age:g}): no worker is taking runs",
        )
    return out


def check_scheduler(st: Any) -> dict:
    cfg = st.config
    sched = st.scheduler
    out: dict[str, Any] = {"ok": True, "mode": cfg.executor.scheduler}
    try:
        holder = st.store.locks.holder("scheduler")
    except Exception as e:  # noqa: BLE001
        out.update(ok=False, error=f"leader lock unreadable: {_err(e)}")
        return out
    out["leader"] = holder["owner"] if holder else None
    out["leader_lease_expires_at"] = holder["expires_at"] if holder else None
    if sched is not None:
        out.update(
            in_this_process=True,
            alive=sched.alive(),
            is_leader=bool(sched.is_leader),
            next_fire=sched.next_fire(),
            next_backup=sched.next_backup(),
        )
    else:
        out["in_this_process"] = False
    errors = []
    if sched is not None and not sched.alive():
        errors.append("the scheduler in this process is stopped")
    if holder is None and cfg.executor.scheduler != "off":
        errors.append(
            "no scheduler is the leader: cron triggers and backups are not firing "
            "(run `levqor scheduler` or serve with LEVQOR_SCHEDULER=auto)"
        )
    if errors:
        out.update(ok=False, error="; ".join(errors))
    elif holder is None:
        out["note"] = "LEVQOR_SCHEDULER=off here and no other scheduler holds the leader lock"
    return out


def check_plugins(st: Any) -> dict:
    pm = st.pm
    loaded = []
    for p in pm.plugin_infos():
        d = p.to_dict()
        loaded.append({"name": d["name"], "version": d.get("version")})
    failed = [
        {"name": f.name, "distribution": f.dist, "error": redact(str(f.error))[:500]}
        for f in pm.failures
    ]
    out: dict[str, Any] = {"ok": not failed, "loaded": loaded, "failed": failed}
    if failed:
        out["error"] = "failed to load: " + ", ".join(f["name"] for f in failed)
    return out


def check_disk(st: Any) -> dict:
    cfg = st.config
    d = cfg.data_dir
    out: dict[str, Any] = {"ok": False, "path": str(d)}
    try:
        usage = shutil.disk_usage(d)
    except OSError as e:
        out["error"] = f"the data folder is unreachable: {e.strerror or e}"
        return out
    out.update(
        free_bytes=usage.free,
        total_bytes=usage.total,
        free_percent=round(usage.free * 100 / usage.total, 2) if usage.total else None,
        min_free_mb=cfg.observability.health_min_free_mb,
    )
    probe = d / f".health-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        out["error"] = f"the data folder is not writable: {e.strerror or type(e).__name__}"
        return out
    if usage.free < cfg.observability.health_min_free_mb * 1024 * 1024:
        out["error"] = (
            f"{usage.free // (1024 * 1024)} MB free, below LEVQOR_HEALTH_MIN_FREE_MB="
            f"{cfg.observability.health_min_free_mb}"
        )
        return out
    out["ok"] = True
    return out


def check_backup(st: Any) -> dict:
    from levqor_host.backup.status import backup_status

    nxt = st.scheduler.next_backup() if st.scheduler is not None else None
    try:
        return backup_status(st.config, st.store.dialect, nxt)
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": _err(e)}


CHECKS = {
    "database": check_database,
    "executor": check_executor,
    "scheduler": check_scheduler,
    "plugins": check_plugins,
    "disk": check_disk,
    "backup": check_backup,
}


def readiness(st: Any) -> tuple[dict, int]:
    checks = {name: fn(st) for name, fn in CHECKS.items()}
    failing = [n for n, c in checks.items() if not c.get("ok")]
    body: dict[str, Any] = {
        "status": "failing" if failing else "ok",
        "failing": failing,
        "version": __version__,
        "uptime_seconds": round(time.time() - st.started_at, 3),
        "checks": checks,
    }
    if failing:
        body["message"] = "; ".join(f"{n}: {checks[n].get('error', 'failing')}" for n in failing)
    return body, (503 if failing else 200)


_HEALTH = {
    "type": "object",
    "required": ["status", "failing", "checks"],
    "properties": {
        "status": {"enum": ["ok", "failing"]},
        "failing": {
            "type": "array",
            "items": {"enum": list(CHECKS)},
            "description": "the parts that fail",
        },
        "message": {"type": "string"},
        "version": {"type": "string"},
        "uptime_seconds": {"type": "number"},
        "checks": {"type": "object", "properties": {k: {"type": "object"} for k in CHECKS}},
    },
}


@bp.get("/api/v1/ops/health")
@public("readiness for orchestrators; states of parts, no user data")
@operation(
    "Readiness: database, executor and queue, scheduler, plugins, disk, backups",
    "Every dependency checked for real; 503 with failing naming each failing part and "
    "message saying why.",
    tag="ops",
    responses={200: answer(_HEALTH), 503: answer(_HEALTH, "A part is failing (named in failing)")},
)
def ops_health() -> tuple[Response, int]:
    body, status = readiness(_state())
    return jsonify(body), status
