"""Cron triggers, fired by exactly one scheduler per deployment.

Every process that may schedule (``levqor scheduler``, or each ``levqor serve`` worker when
``LEVQOR_SCHEDULER=auto``) runs this service, but only the holder of the database leader
lock ``scheduler`` has its APScheduler jobs running. A fire also carries an idempotency key
(pipeline + scheduled minute), so even two leaders during a lock hand-over start one run. The
app-trigger poller (``poller.py``), when handed one, runs in the same process and polls only
while this scheduler is the leader.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler

from levqor_host.cron import cron_trigger

if TYPE_CHECKING:
    from levqor_host.runs.service import RunService
    from levqor_host.workers.poller import Poller

log = logging.getLogger("levqor.scheduler")

LOCK = "scheduler"


class SchedulerService:
    """Handed the run service (cron fires start runs through it; its store holds the leader
    lock and the scheduled pipelines) and, optionally, the daily ``backup`` job."""

    def __init__(
        self,
        runs: RunService,
        *,
        backup: Callable[[], dict | None] | None = None,
        poller: Poller | None = None,
        ttl: float = 30.0,
        sync_interval: float = 10.0,
    ) -> None:
        self.runs = runs
        self.poller = poller  # polls app triggers while this scheduler leads
        self.store = runs.store
        self.config = runs.config
        self.backup = backup
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ttl = ttl
        self.sync_interval = sync_interval
        self.sched = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "misfire_grace_time": 60, "max_instances": 1},
        )
        self.is_leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._jobs: dict[str, tuple] = {}
        self.fired = 0

    def start(self) -> None:
        self.sched.start(paused=True)
        self._thread = threading.Thread(target=self._loop, name="levqor-scheduler", daemon=True)
        self._thread.start()
        if self.poller is not None:
            self.poller.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.poller is not None:
            self.poller.stop()
        try:
            self.sched.shutdown(wait=False)
        except Exception:  # noqa: BLE001
            pass
        if self.is_leader:
            try:
                self.store.locks.release(LOCK, self.owner)
            except Exception:  # noqa: BLE001
                log.exception("releasing the scheduler lock failed")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def next_fire(self) -> str | None:
        times = [j.next_run_time for j in self.sched.get_jobs() if j.next_run_time]
        return min(times).isoformat() if times and self.is_leader else None

    # ------------------------------------------------------------------ leadership
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                leader = self.store.locks.acquire(LOCK, self.owner, self.ttl)
            except Exception:  # noqa: BLE001
                log.exception("scheduler lock check failed")
                leader = False
            if leader and not self.is_leader:
                log.info("scheduler %s is now the leader", self.owner)
                self.is_leader = True
                self.sync()
                self.sched.resume()
            elif not leader and self.is_leader:
                log.info("scheduler %s lost the leadership", self.owner)
                self.is_leader = False
                self.sched.pause()
            elif leader:
                self.sync()
            self._stop.wait(min(self.sync_interval, self.ttl / 3))

    BACKUP_JOB = "levqor:backup"

    def _sync_backup_job(self) -> None:
        """The daily backup (``LEVQOR_BACKUP_CRON``, default 00:00 UTC; ``off`` disables it)."""
        expr = self.config.backup.cron
        if self.backup is None or expr.lower() == "off" or self.sched.get_job(self.BACKUP_JOB):
            return
        try:
            trigger = cron_trigger(expr, "UTC")
        except (ValueError, KeyError) as e:
            log.error("LEVQOR_BACKUP_CRON %r is unusable: %s", expr, e)
            return
        self.sched.add_job(
            self.run_backup, trigger, id=self.BACKUP_JOB, replace_existing=True,
            misfire_grace_time=3600,
        )

    def next_backup(self) -> str | None:
        job = self.sched.get_job(self.BACKUP_JOB)
        if job is None or not self.is_leader or job.next_run_time is None:
            return None
        return job.next_run_time.isoformat()

    def run_backup(self) -> dict | None:
        """The backup job: only the leader backs up."""
        if not self.is_leader or self.backup is None:
            return None
        return self.backup()

    PRUNE_JOB = "levqor:prune-runs"

    def _sync_prune_job(self) -> None:
        """Run retention (``LEVQOR_RUN_RETENTION_DAYS``; 0, the default, keeps every run): daily
        at 00:30 UTC the leader deletes finished runs older than that many days."""
        if self.config.database.run_retention_days <= 0 or self.sched.get_job(self.PRUNE_JOB):
            return
        self.sched.add_job(
            self.prune_runs, cron_trigger("30 0 * * *"), id=self.PRUNE_JOB,
            replace_existing=True, misfire_grace_time=3600,
        )

    def prune_runs(self) -> int | None:
        """The retention job: only the leader prunes. Returns how many runs were deleted."""
        days = self.config.database.run_retention_days
        if not self.is_leader or days <= 0:
            return None
        cutoff = datetime.now(UTC) - timedelta(days=days)
        deleted = self.store.runs.prune(cutoff)
        log.info("run retention: deleted %d runs finished before %s", deleted, cutoff.isoformat())
        return deleted

    def sync(self) -> None:
        """Make the APScheduler jobs match the scheduled pipelines in the database."""
        self._sync_backup_job()
        self._sync_prune_job()
        wanted: dict[str, tuple] = {}
        for p in self.store.pipelines.list_scheduled():
            trig = p["doc"]["trigger"]
            wanted[p["id"]] = (p["version"], trig["cron"], trig.get("timezone", "UTC"))
        for pid in list(self._jobs):
            if pid not in wanted:
                self.sched.remove_job(pid)
                del self._jobs[pid]
        for pid, spec in wanted.items():
            if self._jobs.get(pid) == spec:
                continue
            try:
                trigger = cron_trigger(spec[1], spec[2])
            except (ValueError, KeyError) as e:
                log.warning("pipeline %s has an unusable schedule: %s", pid, e)
                continue
            self.sched.add_job(self.fire, trigger, args=[pid], id=pid, replace_existing=True)
            self._jobs[pid] = spec

    def fire(self, pipeline_id: str) -> dict[str, Any] | None:
        if not self.is_leader:
            return None
        minute = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
        p = self.store.pipelines.get_any(pipeline_id)
        if p is None or p.get("archived") or not p.get("enabled", True):
            return None
        user = self.store.users.get(p["user_id"])
        if user is None:
            return None
        trig = p["doc"].get("trigger", {})
        data = {**(trig.get("input") or {}), "scheduled_at": minute}
        try:
            run, created = self.runs.start(
                user, p, data, trigger="schedule", idempotency_key=f"sched:{pipeline_id}:{minute}"
            )
        except Exception as e:  # noqa: BLE001 - a refused or invalid run must not stop the scheduler
            log.warning("scheduled run of %s not started: %s", pipeline_id, e)
            return None
        if created:
            self.fired += 1
        return run
