"""The poller: polls due app triggers, in the scheduler leader's process only.

It runs beside the :class:`~levqor_host.workers.scheduler.SchedulerService`, which starts and
stops it, and works only while that scheduler holds the leader lock. Every ``tick`` it claims
the polling triggers that are due (:meth:`Triggers.claim_due`, a conditional UPDATE: of two
leaders for a moment during a hand-over, each trigger goes to one) and polls them on a bounded
thread pool (``LEVQOR_POLL_WORKERS``), never claiming more than it has free threads, so a
claimed trigger is polled at once rather than waiting in a queue while its lease runs. The next
poll time each poll records carries jitter (``store/triggers.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from levqor_host.runs.triggers import TriggerService
    from levqor_host.store.rows import TriggerRow

log = logging.getLogger("levqor.poller")

#: how long a claimed trigger is kept from other pollers (a poll takes at most about a minute;
#: a poller that dies mid-poll leaves the trigger due again after this)
LEASE_SECONDS = 300.0


class Poller:
    """Handed the trigger service, ``leader()`` (whether this process may poll now), the
    number of poll threads and how often it looks for due triggers."""

    def __init__(
        self,
        triggers: TriggerService,
        leader: Callable[[], bool],
        *,
        workers: int = 8,
        tick: float = 0.5,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.triggers = triggers
        self.leader = leader
        self.workers = max(1, workers)
        self.tick = tick
        self.lease_seconds = lease_seconds
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._lock = threading.Lock()
        #: called after each poll with the row as claimed (``next_poll_at``: when it was due),
        #: the poll's outcome and when the poll began (``time.time()``): the bench's lateness
        self.on_polled: Callable[[TriggerRow, dict, float], None] | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="levqor-poll")
        self._thread = threading.Thread(target=self._loop, name="levqor-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for due triggers now (a trigger was just saved)."""
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.leader():
                    self.poll_due()
            except Exception:  # noqa: BLE001 - the database may be away for a moment
                log.exception("looking for due triggers failed")
            self._wake.wait(self.tick)
            self._wake.clear()

    def poll_due(self) -> int:
        """Claim as many due triggers as there are free threads and hand them to the pool;
        how many were claimed."""
        with self._lock:
            free = self.workers - self._inflight
        if free <= 0 or self._pool is None:
            return 0
        claimed = self.triggers.store.triggers.claim_due(limit=free, lease_seconds=self.lease_seconds)
        for row in claimed:
            with self._lock:
                self._inflight += 1
            try:
                self._pool.submit(self._poll, row)
            except RuntimeError:  # the pool is shutting down: the lease brings it back
                with self._lock:
                    self._inflight -= 1
        return len(claimed)

    def _poll(self, row: TriggerRow) -> None:
        began = time.time()
        try:
            outcome = self.triggers.poll(row)
            if self.on_polled is not None:
                self.on_polled(row, outcome, began)
        except Exception:  # noqa: BLE001 - poll() records failures; this is a bug, logged
            log.exception("polling trigger %s failed", row["id"])
        finally:
            with self._lock:
                self._inflight -= 1
            self._wake.set()  # a thread is free: more may be due
