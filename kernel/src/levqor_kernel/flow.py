"""The flow of one run: sequences, conditions, branches, parallel paths, loops, error paths,
waits, sub-pipelines and stops (the constructs of docs/pipelines.md).

Every step, nested or not, is recorded under its *path*: ``send`` at the top, ``each[17].send``
in item 17 of a loop, ``route.paths[1].notify`` in a branch path, ``send.on_error.alert`` in an
error path, ``on_failure.alert`` in the pipeline's failure steps. A run resumes from what the
host hands back by path (``RunRequest.completed`` and ``decided``): a succeeded step is never
run again, so a loop resumes at its unfinished items and a branch inside the path it took.

A wait (or a sub-pipeline call) longer than :data:`INLINE_WAIT_SECONDS` *suspends* the run:
the step is reported ``waiting`` and :meth:`Flow.run` returns a ``waiting`` result; no thread
is held. The host decides the step later (time passed, approved, child run final) and runs
the run again, which goes on after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .ai import usage_of
from .conditions import evaluate
from .errors import LevqorError
from .pipeline import (
    INLINE_WAIT_SECONDS,
    MAX_CONCURRENCY,
    MAX_WAIT_SECONDS,
    exported,
    step_type,
    walk_steps,
)
from .recording import (
    CANCELLED,
    FAILED,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    CredentialResolver,
    Recorder,
    RunRequest,
    RunResult,
    StepRecord,
    _Cancelled,
)
from .templating import render

if TYPE_CHECKING:
    from .runner import Runner

_MISSING = object()
CANCELLED_ERROR = {"type": "Cancelled", "message": "run cancelled", "retryable": False}


class Failed(Exception):
    """A step failed and its error path did not take the failure: it travels up until a
    construct or the run takes it. ``error`` names the innermost failed step's path."""

    def __init__(self, error: dict) -> None:
        super().__init__(error.get("message", "failed"))
        self.error = error


class Suspended(Exception):
    """The run waits (``wait``: what for); nothing after the waiting step runs now."""

    def __init__(self, wait: dict) -> None:
        super().__init__(wait.get("kind", "wait"))
        self.wait = wait


class Stopped(Exception):
    """A stop step ended the run with ``status`` and ``output``."""

    def __init__(self, status: str, output: Any, error: dict | None) -> None:
        super().__init__(status)
        self.status, self.output, self.error = status, output, error


class _BlockStop(Exception):
    """``core.filter`` found its conditions false: the rest of its block is skipped."""

    def __init__(self, output: Any) -> None:
        super().__init__("filter")
        self.output = output


class _Serial:
    """A recorder whose calls never overlap (loops and parallel paths call it from threads)."""

    def __init__(self, recorder: Recorder, lock: threading.RLock) -> None:
        self._recorder, self._lock = recorder, lock

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self._recorder, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return fn(*args, **kwargs)

        return call


def _error(path: str, e: BaseException) -> dict:
    from .runner import _error_dict

    return {"step": path, **_error_dict(e, [])}


def _problem(path: str, message: str, code: str) -> Failed:
    return Failed({"step": path, "type": "PayloadError", "code": code, "message": message, "retryable": False})


def _view(step: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The step as the recorder sees it: its path as ``id``; constructs as ``flow.<type>``."""
    kind = step_type(step)
    if kind == "action":
        return {**step, "id": path}
    return {"id": path, "connector": "flow", "action": kind}


class Flow:
    """One execution of one run (see the module docstring). Made and used by :class:`Runner`."""

    def __init__(
        self,
        runner: Runner,
        req: RunRequest,
        resolve: CredentialResolver,
        recorder: Recorder,
        cancelled: Callable[[], bool],
    ) -> None:
        self.runner, self.req, self.resolve = runner, req, resolve
        self.lock = threading.RLock()
        self.recorder = _Serial(recorder, self.lock)
        self._cancelled = cancelled
        self.result = RunResult(status=SUCCEEDED)
        #: the credential values of the steps run so far: what a construct's record, the run's
        #: output, its wait and its error must not show (a connector may echo a secret)
        self.secrets: list[str] = []
        doc = req.pipeline
        self.positions = {
            s["id"]: i
            for i, (s, _d) in enumerate(walk_steps([*doc.get("steps", []), *doc.get("on_failure", [])]))
        }

    # ------------------------------------------------------------------ the run
    def run(self, scope: dict[str, Any] | None = None) -> RunResult:
        """Run the pipeline's steps to a final state or a wait."""
        req, result = self.req, self.result
        if scope is None:
            scope = {
                "trigger": req.trigger,
                "steps": {},
                "run": {"id": req.run_id, "pipeline_id": req.pipeline_id},
            }
        steps = list(req.pipeline.get("steps", []))
        try:
            result.output = self.block(steps, scope, "")
        except Stopped as s:
            result.status, result.output, result.error = s.status, s.output, s.error
            if s.status == FAILED and s.error is not None:
                self.on_failure(scope, s.error)  # a stop that fails the run is a failure
        except Suspended as s:
            result.status, result.wait = WAITING, s.wait
        except _Cancelled:
            result.status, result.error = CANCELLED, dict(CANCELLED_ERROR)
        except Failed as f:
            result.status, result.error = FAILED, f.error
            self.on_failure(scope, f.error)
        if result.status != WAITING:
            for step in steps:
                if step["id"] not in result.steps and step["id"] not in req.completed:
                    self.finish(step, step["id"], SKIPPED)
        result.output, result.wait, result.error = (
            self.redact(v) for v in (result.output, result.wait, result.error)
        )
        self.recorder.run_finished(req.run_id, result.status, result.error)
        return result

    def redact(self, value: Any) -> Any:
        """``value`` with every credential value seen in this run redacted."""
        from .runner import redact_value

        return redact_value(value, self.secrets) if self.secrets else value

    def on_failure(self, scope: dict[str, Any], error: dict) -> None:
        """The pipeline's ``on_failure`` steps, with ``error`` in scope. Their own failure is
        recorded and does not change the run's (it failed already); a wait in them suspends."""
        steps = self.req.pipeline.get("on_failure")
        if not steps:
            return
        try:
            self.block(steps, {**scope, "error": error}, "on_failure.")
        except Suspended as s:
            self.result.status, self.result.wait = WAITING, s.wait
        except (Failed, Stopped, _Cancelled):
            pass

    # ------------------------------------------------------------------ blocks and steps
    def block(self, steps: list, scope: dict[str, Any], prefix: str) -> Any:
        """Run a list of steps in order; the output of the last one that ran."""
        last = None
        for i, step in enumerate(steps):
            try:
                out = self.node(step, scope, prefix)
            except _BlockStop as b:
                for rest in steps[i + 1 :]:
                    path = prefix + rest["id"]
                    if path not in self.req.completed:
                        self.finish(rest, path, SKIPPED)
                    self.see(scope, rest, None, SKIPPED)
                return b.output
            if out is not _MISSING:
                last = out
        return last

    def node(self, step: Mapping[str, Any], scope: dict[str, Any], prefix: str) -> Any:
        """One step of any kind, its condition and its error path; its output, or _MISSING
        when its condition was false."""
        path = prefix + step["id"]
        done = self.req.completed.get(path, _MISSING)
        if done is not _MISSING:
            return self.resumed(step, scope, path, done)
        decided = self.req.decided.get(path)
        if decided is not None:
            if decided.get("status") == SUCCEEDED:
                return self.resumed(step, scope, path, decided.get("output"))
            self.result.steps[path] = FAILED
            err = {"step": path, **(decided.get("error") or {"message": "failed"})}
            return self.on_error(step, scope, path, err)
        if self.cancelled():
            raise _Cancelled("run cancelled")
        if "if" in step:
            try:
                ok, value = evaluate(step["if"], scope, max_bytes=self.runner.max_value_bytes)
            except LevqorError as e:
                return self.on_error(step, scope, path, self.failed(step, path, e))
            if not ok:
                self.finish(step, path, SKIPPED, input={"if": value})
                self.see(scope, step, None, SKIPPED)
                return _MISSING
        kind = step_type(step)
        try:
            out = getattr(self, f"_{kind}")(step, scope, path)
        except Failed as f:
            if kind != "action":
                self.finish(step, path, FAILED, error=f.error)
            return self.on_error(step, scope, path, f.error)
        except _Cancelled:
            raise
        except LevqorError as e:  # a construct's own fields did not render
            return self.on_error(step, scope, path, self.failed(step, path, e))
        self.see(scope, step, out, SUCCEEDED)
        return out

    def resumed(self, step: Mapping[str, Any], scope: dict[str, Any], path: str, output: Any) -> Any:
        """A step that succeeded before: its output, and what it meant (a stop, a filter)."""
        self.see(scope, step, output, SUCCEEDED)
        self.result.outputs[path] = output
        self.result.steps[path] = SUCCEEDED
        kind = step_type(step)
        if kind == "stop" and isinstance(output, dict):
            raise Stopped(*self._stop_outcome(step, path, output.get("output"), output.get("message")))
        if (step.get("connector"), step.get("action")) == ("core", "filter") and isinstance(output, dict):
            if output.get("passed") is False:
                raise _BlockStop(output)
        return output

    def failed(self, step: Mapping[str, Any], path: str, e: BaseException) -> dict:
        """Record ``step`` failed with ``e`` (something before its connector: a condition or a
        construct's field); the error."""
        err = _error(path, e)
        self.finish(step, path, FAILED, error=err)
        return err

    def on_error(self, step: Mapping[str, Any], scope: dict[str, Any], path: str, err: dict) -> Any:
        """The step's ``on_error``: fail (raise), continue (output null), or fallback steps
        with ``error`` in scope (their last output stands for the step's)."""
        policy = step.get("on_error", "fail")
        if policy == "continue":
            self.see(scope, step, None, FAILED, err)
            return None
        if isinstance(policy, list):
            out = self.block(policy, {**scope, "error": err}, f"{path}.on_error.")
            self.see(scope, step, out, FAILED, err)
            return out
        raise Failed(err)

    def see(self, scope: dict[str, Any], step: Mapping[str, Any], output: Any, status: str, error: dict | None = None) -> None:
        entry: dict[str, Any] = {"output": output, "status": status}
        if error is not None:
            entry["error"] = error
        scope["steps"][step["id"]] = entry

    def skip_in_scope(self, scope: dict[str, Any], steps: list) -> None:
        """Steps of a path not taken: later templates see them as skipped (not recorded)."""
        for s in steps:
            for sid in exported(s):
                scope["steps"].setdefault(sid, {"output": None, "status": SKIPPED})

    # ------------------------------------------------------------------ recording
    def cancelled(self) -> bool:
        return bool(self._cancelled())

    def started(self, step: Mapping[str, Any], path: str) -> None:
        self.recorder.step_started(self.req.run_id, _view(step, path), self.positions.get(step["id"], 0), 1)

    def finish(
        self,
        step: Mapping[str, Any],
        path: str,
        status: str,
        *,
        attempts: int = 0,
        input: Any = None,
        output: Any = None,
        error: dict | None = None,
        duration: float = 0.0,
    ) -> None:
        """A step reached ``status`` (or ``waiting``): tell the recorder, keep its record."""
        view = _view(step, path)
        pos = self.positions.get(step["id"], 0)
        if view["connector"] == "flow":  # a construct's record carries what its steps gave
            input, output, error = self.redact(input), self.redact(output), self.redact(error)
        with self.lock:
            self.recorder.step_finished(
                self.req.run_id, view, pos, status=status, attempts=attempts, input=input,
                output=output, error=error, duration=duration,
            )
            self.result.steps[path] = status
            if status == SUCCEEDED:
                self.result.outputs[path] = output
            if status != WAITING:
                self.result.records.append(
                    StepRecord(
                        path, pos, view["connector"], view["action"], status, attempts, duration,
                        self.usage(view, output if status == SUCCEEDED else error),
                    )
                )

    def usage(self, view: Mapping[str, Any], output: Any) -> dict[str, Any] | None:
        """The tokens a metered action's output (or a failed one's error) says it used (None
        for anything else)."""
        if view["connector"] == "flow" or not isinstance(output, Mapping):
            return None
        action = self.runner.pm.catalog.action(view["connector"], view["action"])
        return usage_of(output) if action is not None and action.metered else None

    # ------------------------------------------------------------------ actions
    def _action(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        if (step.get("connector"), step.get("action")) == ("core", "delay"):
            seconds = self._delay_seconds(step, scope)
            if seconds is not None and seconds > INLINE_WAIT_SECONDS:
                self.suspend(step, path, self._timed(path, seconds))
        from .runner import redact_value

        view = {**step, "id": path}
        meta: dict[str, Any] = {}
        pos = self.positions.get(step["id"], 0)
        status, out, err = self.runner._run_step(
            self.req, view, pos, scope, self.resolve, self.recorder, self.cancelled, meta
        )
        ran = SUCCEEDED if status == "stopped" else status
        secrets = meta["secrets"]
        if secrets:
            with self.lock:
                self.secrets.extend(s for s in secrets if s not in self.secrets)
        self.finish(
            step, path, ran, attempts=meta["attempts"],
            input=redact_value(meta["payload"], secrets),
            output=redact_value(out, secrets) if ran == SUCCEEDED else None,
            error=err if ran != SUCCEEDED else None,
            duration=meta["duration"],
        )
        if status == "stopped":
            self.see(scope, step, out, SUCCEEDED)
            raise _BlockStop(out)
        if ran == CANCELLED:
            raise _Cancelled("run cancelled")
        if ran == FAILED:
            raise Failed({"step": path, **(err or {})})
        return out

    def _delay_seconds(self, step: Mapping[str, Any], scope: dict[str, Any]) -> float | None:
        try:
            value = render(step.get("payload", {}), scope).get("seconds")
        except (LevqorError, AttributeError):
            return None  # the step itself reports it
        cap = float(self.runner.env.get("LEVQOR_MAX_DELAY_SECONDS", "300"))
        return min(float(value), cap) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    # ------------------------------------------------------------------ waits
    def suspend(self, step: Mapping[str, Any], path: str, wait: dict) -> None:
        self.finish(step, path, WAITING, input=wait)
        raise Suspended(wait)

    @staticmethod
    def _timed(path: str, seconds: float) -> dict:
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        return {"step": path, "kind": "time", "seconds": round(seconds, 3), "until": until.isoformat()}

    def _wait(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        mb = self.runner.max_value_bytes
        if "approval" in step:
            approval = render(step["approval"], scope, max_bytes=mb)
            if step.get("notify"):
                links = self.req.approval_links(path) if self.req.approval_links else {}
                links = {"approve_url": None, "reject_url": None, **links}
                self.block(step["notify"], {**scope, "approval": {**approval, **links}}, f"{path}.notify.")
            self.suspend(step, path, {"step": path, "kind": "approval", "approval": approval})
        if "until" in step:
            raw = render(step["until"], scope, max_bytes=mb)
            try:
                until = datetime.fromisoformat(str(raw))
            except ValueError:
                raise _problem(path, f"until is not an ISO 8601 time: {str(raw)[:80]!r}", "invalid_time") from None
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
            seconds = max(0.0, (until - datetime.now(UTC)).total_seconds())
        else:
            raw = render(step["seconds"], scope, max_bytes=mb)
            if isinstance(raw, str):
                try:
                    raw = float(raw)
                except ValueError:
                    pass
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw >= 0:
                raise _problem(path, f"seconds must be a number of at least 0, not {raw!r}", "invalid_seconds")
            seconds = float(raw)
        if not seconds <= MAX_WAIT_SECONDS:  # also NaN and infinity
            raise _problem(path, f"a wait lasts at most {MAX_WAIT_SECONDS} seconds (366 days)", "invalid_seconds")
        if seconds > INLINE_WAIT_SECONDS:
            self.suspend(step, path, self._timed(path, seconds))
        self.started(step, path)
        self.runner._wait(seconds, self.cancelled)
        out = {"waited": round(seconds, 3)}
        self.finish(step, path, SUCCEEDED, output=out)
        return out

    def _pipeline(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        inp = render(step.get("input", {}), scope, max_bytes=self.runner.max_value_bytes)
        self.suspend(step, path, {"step": path, "kind": "pipeline", "pipeline": step["pipeline"], "input": inp})

    # ------------------------------------------------------------------ agent
    def _agent(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        from .agent import Agent

        return Agent(self, step, scope, path).run()

    # ------------------------------------------------------------------ stop
    def _stop_outcome(self, step: Mapping[str, Any], path: str, output: Any, message: Any) -> tuple:
        status = step.get("status", SUCCEEDED)
        error = None
        if status == FAILED:
            error = {
                "step": path, "type": "Stopped", "code": "stopped", "retryable": False,
                "message": str(message or "stopped by the pipeline"),
            }
        return status, output, error

    def _stop(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        mb = self.runner.max_value_bytes
        output = render(step.get("output"), scope, max_bytes=mb)
        message = render(step.get("message", ""), scope, max_bytes=mb)
        status = step.get("status", SUCCEEDED)
        self.finish(step, path, SUCCEEDED, output={"status": status, "output": output, "message": message})
        raise Stopped(*self._stop_outcome(step, path, output, message))

    # ------------------------------------------------------------------ branch and parallel
    def _branch(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        self.started(step, path)
        chosen: int | None = None
        evaluated = []
        for j, p in enumerate(step["paths"]):
            ok, value = evaluate(p["if"], scope, max_bytes=self.runner.max_value_bytes)
            evaluated.append(value)
            if ok:
                chosen = j
                break
        blocks = [(f"paths[{j}]", p["steps"], p.get("name")) for j, p in enumerate(step["paths"])]
        blocks.append(("default", step.get("default") or [], "default"))
        taken = blocks[chosen] if chosen is not None else blocks[-1]
        for b in blocks:
            if b is not taken:
                self.skip_in_scope(scope, b[1])
        last = self.block(taken[1], scope, f"{path}.{taken[0]}.") if taken[1] else None
        which = chosen if chosen is not None else ("default" if taken[1] else None)
        out = {"path": which, "name": taken[2] if which is not None else None, "output": last}
        self.finish(step, path, SUCCEEDED, input={"conditions": evaluated}, output=out)
        return out

    def _parallel(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        self.started(step, path)
        paths = step["paths"]
        scopes: list[dict[str, Any]] = [{**scope, "steps": dict(scope["steps"])} for _ in paths]

        def one(j: int) -> Any:
            return self.block(paths[j]["steps"], scopes[j], f"{path}.paths[{j}].")

        outcomes = self.concurrently(
            len(paths), one, step.get("concurrency", min(len(paths), MAX_CONCURRENCY)),
            lambda j: not paths[j].get("required", True),
        )
        for j, (ok, _out, err) in enumerate(outcomes):
            if not ok:  # an optional path that failed: its failed step, then what never ran
                failed_id = str((err or {}).get("step", "")).rsplit(".", 1)[-1]
                self.see(scopes[j], {"id": failed_id}, None, FAILED, err)
                self.skip_in_scope(scopes[j], paths[j]["steps"])
            for sid, entry in scopes[j]["steps"].items():
                scope["steps"].setdefault(sid, entry)
        out = [o for _ok, o, _e in outcomes]
        self.finish(step, path, SUCCEEDED, input={"paths": len(paths)}, output=out)
        return out

    # ------------------------------------------------------------------ loops
    def _for_each(self, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> Any:
        self.started(step, path)
        items = render(step["items"], scope, max_bytes=self.runner.max_value_bytes)
        if not isinstance(items, list):
            raise _problem(path, f"items must be an array, not {type(items).__name__}", "not_a_list")
        cap = min(self.runner.max_items, int(step.get("max_items", self.runner.max_items)))
        if len(items) > cap:
            raise _problem(path, f"{len(items)} items, over the limit of {cap}", "too_many_items")
        body = step["steps"]

        def one(i: int) -> Any:
            item_scope = {**scope, "steps": dict(scope["steps"]), "item": items[i], "index": i}
            return self.block(body, item_scope, f"{path}[{i}].")

        collect = step.get("on_item_error") == "collect"
        outcomes = self.concurrently(len(items), one, int(step.get("concurrency", 1)), lambda i: collect)
        out = [o for _ok, o, _e in outcomes]
        failed = sum(1 for ok, _o, _e in outcomes if not ok)
        self.finish(step, path, SUCCEEDED, input={"items": len(items), "failed": failed}, output=out)
        return out

    def concurrently(
        self, n: int, fn: Callable[[int], Any], limit: int, tolerate: Callable[[int], bool]
    ) -> list[tuple[bool, Any, dict | None]]:
        """``fn(0) .. fn(n-1)``, at most ``limit`` at a time: per index (succeeded, output,
        error). A failure ``tolerate(i)`` accepts is kept; anything else (a failure, a wait, a
        stop, a cancel) lets the started ones finish, starts no more, and is raised (a cancel
        first, else the lowest index's)."""
        results: list[tuple[bool, Any, dict | None]] = [(False, None, None)] * n
        if limit <= 1 or n <= 1:
            for i in range(n):
                try:
                    results[i] = (True, fn(i), None)
                except Failed as f:
                    if not tolerate(i):
                        raise
                    results[i] = (False, None, f.error)
            return results
        ended: list[tuple[int, BaseException]] = []
        with ThreadPoolExecutor(max_workers=min(limit, n), thread_name_prefix="levqor-flow") as pool:
            running: dict[Future, int] = {}
            nxt = 0
            while running or (nxt < n and not ended):
                while nxt < n and not ended and len(running) < limit:
                    running[pool.submit(fn, nxt)] = nxt
                    nxt += 1
                done, _ = wait_for(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        results[i] = (True, fut.result(), None)
                    except Failed as f:
                        if tolerate(i):
                            results[i] = (False, None, f.error)
                        else:
                            ended.append((i, f))
                    except BaseException as e:  # noqa: BLE001 - re-raised below
                        ended.append((i, e))
        if ended:
            cancel = [e for _i, e in ended if isinstance(e, _Cancelled)]
            raise cancel[0] if cancel else min(ended, key=lambda t: t[0])[1]
        return results


def find_step(steps: list, step_id: str) -> Mapping[str, Any] | None:
    """The step with ``step_id`` anywhere in ``steps``."""
    for s, _d in walk_steps(steps):
        if s["id"] == step_id:
            return s
    return None


__all__ = ["Failed", "Flow", "Stopped", "Suspended", "find_step"]
