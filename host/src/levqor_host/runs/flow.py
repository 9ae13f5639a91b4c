"""The host's side of flow control: runs that wait, and runs that start other runs.

A run whose runner answers ``waiting`` is suspended by the worker that holds it
(:meth:`Flow.suspend`: its step rows, ``waiting``, the wait's descriptor with a fresh nonce and
``resume_at``, and the lease given up, in one transaction); it holds no thread while it waits.
A wait ends exactly once (:meth:`Flow.decide`, one conditional UPDATE on the nonce), which
queues the run again; the next claim hands the runner the decided step.

What decides a wait:

- ``time`` (a wait step, or ``core.delay`` over a few seconds): the sweep (:meth:`Flow.resume_due`)
  once ``resume_at`` has come; output ``{"waited": s, "until": iso}``.
- ``approval``: :meth:`Flow.approve` (the API, the dashboard, a signed link); the sweep at its
  timeout (``on_timeout``: ``reject``, the default, or ``approve``). Output
  ``{"approved", "by", "at", "comment"}``; a rejection fails the step (``Rejected``).
- ``pipeline``: the child run (same owner, trigger ``pipeline``, idempotency key
  ``<run>:<step path>``, so a crash never starts two) ending (:meth:`Flow.child_finished`);
  the sweep looks at the child now and then, so a lost start or a lost end is caught up.

A failed run whose document names an ``error_pipeline`` starts it (:meth:`Flow.error_pipeline`).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from levqor_kernel.runner import RunResult

from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_host.config import Config
    from levqor_host.security.signing import LinkSigner
    from levqor_host.store import Store

log = logging.getLogger("levqor.flow")


class Runs(Protocol):
    """What waits need of the run service (:class:`~levqor_host.runs.service.RunService`,
    which owns this object as ``runs.flow``): named here so the two modules import one way."""

    store: Store
    config: Config
    mailer: Any

    def start(
        self,
        user: dict,
        pipeline: dict,
        input: Any,
        *,
        trigger: str = ...,
        idempotency_key: str | None = ...,
        parent_run_id: str | None = ...,
        parent_step: str | None = ...,
    ) -> tuple[dict, bool]: ...

    def dispatch(self, run: dict) -> None: ...

    def cancel(self, user_id: str, run_id: str) -> dict | None: ...

#: how often the sweep looks at a sub-pipeline's child run (a lost start or end is caught up)
CHILD_CHECK_SECONDS = 30.0
FINAL = ("succeeded", "failed", "cancelled")
DECISIONS = ("approve", "reject")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def rejected(message: str) -> dict[str, Any]:
    """The error of a rejected (or timed-out) approval."""
    return {"type": "Rejected", "code": "rejected", "message": message, "retryable": False}


def _step_failed(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ChildRunFailed", "code": code, "message": message, "retryable": False, **extra}


class Flow:
    """Waits and sub-pipelines of one app's runs (``runs.flow``)."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.store = runs.store
        self.config = runs.config
        self.signer: LinkSigner | None = None  # set by the wiring: the approval links

    # ----------------------------------------------------------------- suspend
    def nonce(self, run_id: str, step: str) -> str:
        """The nonce of the wait of ``run_id`` at step path ``step``: derived from both (a
        path waits at most once in a run), so the approval's links can be made before the run
        suspends (its notify steps post them); random when no signer is wired."""
        if self.signer is None:
            return secrets.token_urlsafe(18)
        return self.signer.sign("wait nonce", run_id, step)[:24]

    def approval_links(self, run_id: str) -> Any:
        """The runner's ``approval_links(path)`` for ``run_id``: the signed approve and reject
        URLs of the wait at ``path`` (none when no signer is wired)."""
        if self.signer is None:
            return None

        def links(path: str) -> dict[str, str]:
            nonce = self.nonce(run_id, path)
            return {
                f"{d}_url": self._url(run_id, (run_id, path, nonce, d), nonce, d) for d in DECISIONS
            }

        return links

    @staticmethod
    def descriptor(
        wait: dict[str, Any], now: datetime, nonce: str | None = None
    ) -> tuple[dict, datetime | None]:
        """The stored wait (the runner's descriptor, its nonce (random unless given), when it
        began and, for a timer, when it ends) and its ``resume_at``."""
        desc = {**wait, "nonce": nonce or secrets.token_urlsafe(18), "since": _iso(now)}
        kind = wait.get("kind")
        resume_at: datetime | None = None
        if kind == "time":
            until = _parse_time(wait.get("until"))
            if until is None:
                try:
                    seconds = max(0.0, float(wait.get("seconds") or 0))
                except (TypeError, ValueError, OverflowError):
                    seconds = 0.0  # the runner checked it; a timer that cannot be read ends now
                until = now + timedelta(seconds=min(seconds, 10 * 366 * 86400))
            desc["until"] = _iso(until)
            resume_at = until
        elif kind == "approval":
            timeout = (wait.get("approval") or {}).get("timeout")
            if isinstance(timeout, int | float) and not isinstance(timeout, bool):
                resume_at = now + timedelta(seconds=float(timeout))
                desc["expires_at"] = _iso(resume_at)
        elif kind == "pipeline":
            resume_at = now + timedelta(seconds=CHILD_CHECK_SECONDS)
        else:  # a kind this host does not know: the sweep fails the step at once
            resume_at = now
        return desc, resume_at

    def suspend(self, run: dict, result: RunResult, worker_id: str, steps: list[dict]) -> bool:
        """Suspend a run ``worker_id`` holds whose runner answered ``waiting``: the step rows
        not written yet, the run ``waiting`` with its wait and ``resume_at``, its lease given
        up, in one transaction. No settlement: the run is not final. Then a sub-pipeline's
        child is started, and a timer already due is decided. False when the lease was lost."""
        wait = dict(result.wait or {})
        nonce = self.nonce(run["id"], str(wait.get("step") or ""))
        desc, resume_at = self.descriptor(wait, _now(), nonce)
        with self.store.write() as conn:
            self.store.steps.record_many_in(conn, steps)
            if not self.store.waits.suspend_in(conn, run["id"], worker_id, desc, resume_at):
                return False
        waiting = {**run, "status": "waiting", "wait": desc, "resume_at": resume_at}
        try:
            if desc.get("kind") == "approval":
                self.request_approval(waiting)
            elif desc.get("kind") == "pipeline":
                self.start_child(waiting)
            elif desc.get("kind") == "time" and resume_at is not None and resume_at <= _now():
                self.resume_timer(waiting)
        except Exception:  # noqa: BLE001 - the run waits; the sweep takes it up at resume_at
            log.exception("what follows the suspension of run %s failed", run["id"])
        return True

    def request_approval(self, run: dict) -> None:
        """Email the pipeline's owner the approval's message and signed links (when mail is
        configured); never raises: the run waits whatever happens to the email."""
        mailer = self.runs.mailer
        approve, reject = self.link(run, "approve"), self.link(run, "reject")
        if mailer is None or approve is None or reject is None:
            return
        try:
            mailer.approval_requested(run, approve, reject)
        except Exception:  # noqa: BLE001
            log.exception("the approval email of run %s was not sent", run["id"])

    # ----------------------------------------------------------------- decide
    def decide(
        self, run: dict, status: str, *, output: Any = None, error: dict | None = None
    ) -> bool:
        """End the current wait of ``run`` (as read, with its ``wait``): its step becomes
        ``status`` and the run is queued and dispatched. False when the wait was decided
        already (by another call, host or sweep) or the run is no longer waiting."""
        wait = run.get("wait") or {}
        if run.get("status") != "waiting" or not wait.get("nonce"):
            return False
        won = self.store.waits.decide(
            run["id"], wait["nonce"], wait.get("step") or "", status=status, output=output,
            error=error,
        )
        if won:
            self.runs.dispatch(run)
        return won

    def approve(
        self,
        user_id: str | None,
        run_id: str,
        approved: bool,
        *,
        by: str,
        comment: str | None = None,
        nonce: str | None = None,
    ) -> dict:
        """Approve or reject the approval a run waits for; the run as it is now. ``nonce``:
        the wait a signed link was made for. Raises ApiError: 404 no such run, 409 not waiting
        for an approval, or decided already (by someone else, or a second click)."""
        run = self.store.runs.get(user_id, run_id)
        if run is None:
            raise ApiError(404, "not_found", "run not found")
        wait = run.get("wait") or {}
        if run["status"] != "waiting" or wait.get("kind") != "approval":
            raise ApiError(
                409, "conflict", f"the run is not waiting for an approval (it is {run['status']})"
            )
        if nonce is not None and wait.get("nonce") != nonce:
            raise ApiError(409, "conflict", "this approval was decided already")
        at = _iso(_now())
        output = {"approved": approved, "by": by, "at": at, "comment": comment}
        error = None if approved else {**rejected(f"rejected by {by}"), "comment": comment}
        if not self.decide(
            run, "succeeded" if approved else "failed", output=output, error=error
        ):
            raise ApiError(409, "conflict", "this approval was decided already")
        return self.store.runs.get(user_id, run_id) or run

    def resume_timer(self, run: dict) -> bool:
        wait = run["wait"]
        since = _parse_time(wait.get("since")) or _now()
        waited = round(max(0.0, (_now() - since).total_seconds()), 3)
        return self.decide(run, "succeeded", output={"waited": waited, "until": wait.get("until")})

    def time_out(self, run: dict) -> bool:
        """An approval whose timeout came: decided as its ``on_timeout`` says."""
        approval = run["wait"].get("approval") or {}
        output = {"approved": approval.get("on_timeout") == "approve", "by": "timeout",
                  "at": _iso(_now()), "comment": None}
        if output["approved"]:
            return self.decide(run, "succeeded", output=output)
        return self.decide(run, "failed", output=output, error=rejected("the approval timed out"))

    def resume_due(self, limit: int = 100) -> int:
        """The sweep: decide the waits whose ``resume_at`` came (timers, approval timeouts) and
        look at sub-pipelines' children. Safe in every process at once (a wait is decided
        once; a child is started once). Returns how many runs it resumed."""
        n = 0
        for run in self.store.waits.due(limit=limit):
            kind = (run.get("wait") or {}).get("kind")
            try:
                if kind == "time":
                    n += self.resume_timer(run)
                elif kind == "approval":
                    n += self.time_out(run)
                elif kind == "pipeline":
                    n += self.start_child(run)
                else:
                    n += self.decide(run, "failed", error={
                        "type": "InvalidWait", "message": f"unknown wait kind {kind!r}",
                        "retryable": False,
                    })
            except Exception:  # noqa: BLE001 - one broken wait must not stop the sweep
                log.exception("resuming waiting run %s failed", run["id"])
        return n

    # ----------------------------------------------------------------- links
    def _link_fields(self, run: dict, decision: str) -> tuple[str, ...]:
        wait = run.get("wait") or {}
        return (run["id"], str(wait.get("step") or ""), str(wait.get("nonce") or ""), decision)

    def link(self, run: dict, decision: str) -> str | None:
        """The absolute, signed one-time URL that approves or rejects ``run``'s approval (None
        when it waits for none)."""
        wait = run.get("wait") or {}
        if self.signer is None or run.get("status") != "waiting" or wait.get("kind") != "approval":
            return None
        return self._url(run["id"], self._link_fields(run, decision), wait["nonce"], decision)

    def _url(self, run_id: str, fields: tuple[str, ...], nonce: str, decision: str) -> str:
        assert self.signer is not None
        query = urlencode({"nonce": nonce, "sig": self.signer.sign(*fields)})
        return f"{self.config.base_url}/resume/{quote(run_id)}/{decision}?{query}"

    def check_link(self, run_id: str, decision: str, nonce: str, sig: str) -> dict:
        """The run a signed link is for. Raises ApiError: 404 no such run or decision, 403 a
        signature that is not ours, 410 a link used already or expired (the wait it was made
        for has ended)."""
        if decision not in DECISIONS:
            raise ApiError(404, "not_found", "no such link")
        run = self.store.runs.get(None, run_id)
        if run is None or self.signer is None:
            raise ApiError(404, "not_found", "no such link")
        wait = run.get("wait") or {}
        fields = (run_id, str(wait.get("step") or ""), nonce, decision)
        if not self.signer.verify(sig, *fields):
            if nonce and (run["status"] != "waiting" or wait.get("nonce") != nonce):
                raise ApiError(410, "gone", "this link was used already or has expired")
            raise ApiError(403, "forbidden", "this link is not valid")
        if run["status"] != "waiting" or wait.get("kind") != "approval":
            raise ApiError(410, "gone", "this link was used already or has expired")
        return run

    # ----------------------------------------------------------------- sub-pipelines
    def start_child(self, run: dict) -> bool:
        """Start (or find: the idempotency key is ``<run>:<step path>``) the child run a
        waiting run's ``pipeline`` step calls, and decide the step at once when the child is
        final, or cannot be started: an unknown pipeline or another owner's, one nested deeper
        than ``LEVQOR_MAX_PIPELINE_DEPTH``, one the gate refuses. True when it decided."""
        wait = run["wait"]
        step, pipeline_id = str(wait.get("step") or ""), wait.get("pipeline")
        most = self.config.executor.max_pipeline_depth
        user = self.store.users.get(run["user_id"])
        pipeline = (
            self.store.pipelines.get(run["user_id"], pipeline_id)
            if isinstance(pipeline_id, str) and user is not None
            else None
        )
        if pipeline is None or pipeline.get("archived"):
            return self.decide(run, "failed", error=_step_failed(
                "pipeline_not_found", f"pipeline {pipeline_id!r} not found"
            ))
        if self.store.waits.depth(run["id"], most=most) + 1 > most:
            return self.decide(run, "failed", error=_step_failed(
                "pipeline_depth",
                f"sub-pipelines nest at most {most} deep (LEVQOR_MAX_PIPELINE_DEPTH)",
            ))
        try:
            child, _ = self.runs.start(
                user,
                pipeline,
                wait.get("input") if wait.get("input") is not None else {},
                trigger="pipeline",
                idempotency_key=f"{run['id']}:{step}",
                parent_run_id=run["id"],
                parent_step=step,
            )
        except ApiError as e:
            return self.decide(run, "failed", error=_step_failed(
                e.code, f"the sub-pipeline could not start: {e.message}", details=e.details
            ))
        if child["status"] in FINAL:
            return self.child_finished(child)
        next_check = _now() + timedelta(seconds=CHILD_CHECK_SECONDS)
        self.store.waits.rewait(
            run["id"], wait["nonce"], {**wait, "child_run_id": child["id"]}, next_check
        )
        return False

    def child_finished(self, child: dict) -> bool:
        """A sub-pipeline's run is final: decide its parent's step (succeeded with
        ``{"run_id", "status", "output"}``, else failed ``ChildRunFailed``). True when it
        decided (False: no parent waits for it, or the step was decided already)."""
        parent_id = child.get("parent_run_id")
        if not parent_id:
            return False
        parent = self.store.runs.get(None, parent_id)
        if parent is None or parent["status"] != "waiting":
            return False
        wait = parent.get("wait") or {}
        if wait.get("kind") != "pipeline" or wait.get("step") != child.get("parent_step"):
            return False
        child = self.store.runs.get(None, child["id"]) or child
        if child["status"] == "succeeded":
            out = {"run_id": child["id"], "status": "succeeded", "output": child.get("output")}
            return self.decide(parent, "succeeded", output=out)
        reason = (child.get("error") or {}).get("message") or child["status"]
        return self.decide(parent, "failed", error=_step_failed(
            "child_failed", f"the sub-pipeline's run {child['id']} {child['status']}: {reason}",
            run_id=child["id"],
        ))

    def cancel_child(self, run: dict) -> None:
        """A waiting run was cancelled: its sub-pipeline's child run is cancelled too."""
        child_id = (run.get("wait") or {}).get("child_run_id")
        if child_id:
            self.runs.cancel(run["user_id"], child_id)

    # ----------------------------------------------------------------- error pipelines
    def catch_up_error_pipelines(self, *, older_than: float, within: float = 3600.0) -> int:
        """Start the error pipelines of failed runs whose start was lost (the process died
        between settling the run and starting it), for runs that failed between ``within`` and
        ``older_than`` seconds ago. Returns how many it started."""
        docs: dict[tuple[str, int], Any] = {}
        n = 0
        for run in self.store.waits.failed_without_error_run(
            older_than=older_than, within=within
        ):
            key = (run["pipeline_id"], run["version"])
            if key not in docs:
                version = self.store.pipelines.get_version(run["user_id"], *key)
                docs[key] = ((version or {}).get("doc") or {}).get("error_pipeline")
            target = docs[key]
            if isinstance(target, str) and self.store.pipelines.get(run["user_id"], target):
                result = RunResult("failed", run.get("error"))
                n += self.error_pipeline(run, result) is not None
        return n

    def error_pipeline(self, run: dict, result: RunResult) -> dict | None:
        """A failed run whose document names an ``error_pipeline`` starts it (same owner,
        trigger ``error``, idempotency key ``<run>:error``) with ``{"run_id", "pipeline_id",
        "step", "error"}``; a run started as an error pipeline never starts another. The run
        started (or found), or None."""
        if result.status != "failed" or run.get("trigger") == "error":
            return None
        version = self.store.pipelines.get_version(
            run["user_id"], run["pipeline_id"], run["version"]
        )
        target = ((version or {}).get("doc") or {}).get("error_pipeline")
        if not isinstance(target, str):
            return None
        user = self.store.users.get(run["user_id"])
        pipeline = self.store.pipelines.get(run["user_id"], target) if user else None
        if pipeline is None or pipeline.get("archived"):
            log.warning("run %s failed; its error pipeline %s is not found", run["id"], target)
            return None
        error = result.error or run.get("error") or {}
        data = {
            "run_id": run["id"],
            "pipeline_id": run["pipeline_id"],
            "step": error.get("step"),
            "error": error,
        }
        try:
            started, _ = self.runs.start(
                user, pipeline, data, trigger="error", idempotency_key=f"{run['id']}:error"
            )
        except ApiError as e:
            log.warning("run %s failed; its error pipeline %s did not start: %s",
                        run["id"], target, e.message)
            return None
        return started
