"""Runs one pipeline run, step by step. Persists nothing: it reports to a recorder.

Per step: render the payload (sandbox) -> validate it (schema, then the owner's
``validate_payload``) -> resolve credentials -> ``run_task`` on the owning plugin with a
deadline, retried with exponential backoff and full jitter (honouring Retry-After) while the
error is retryable -> check the result is a JSON object -> report. Anything unexpected fails
the step and the run, and no later step runs (fail closed). A run resumes from its first
unfinished step when given the outputs of the finished ones.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from .context import StepContext
from .errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
    StopRun,
    TemplateError,
    TooLargeError,
)
from .flow import Flow, find_step
from .http import redact, secrets_in
from .limits import DEFAULT_MAX_VALUE_BYTES, json_size
from .oauth import call_with_refresh
from .pipeline import DEFAULT_MAX_ITEMS, DEFAULT_TIMEOUT, retry_policy
from .plugins import LevqorPluginManager
from .recording import (  # noqa: F401 - the run types are imported from here too
    CANCELLED,
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    CredentialResolver,
    ListRecorder,
    NullRecorder,
    Recorder,
    RefreshingCredentials,
    RunRequest,
    RunResult,
    StepRecord,
    _Cancelled,
)
from .templating import render

log = logging.getLogger("levqor.runner")

def secret_fields(creds: Mapping[str, Any], schema: Mapping[str, Any] | None) -> Any:
    """The credential values to redact: the fields the schema marks ``writeOnly`` when it marks
    any (an email or a token URL in a service-account key is not secret), else every value."""
    marked: set[str] = set()
    if isinstance(schema, Mapping):
        for sub in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
            props = sub.get("properties") if isinstance(sub, Mapping) else None
            for name, prop in (props or {}).items():
                if isinstance(prop, Mapping) and prop.get("writeOnly"):
                    marked.add(name)
    if not marked:
        return creds
    return {k: v for k, v in creds.items() if k in marked}


def _error_dict(e: BaseException, secrets: list[str]) -> dict:
    if isinstance(e, ConnectorError):
        d = e.to_dict()
        d["message"] = redact(d["message"], secrets)
        return d
    return {"type": type(e).__name__, "message": redact(str(e), secrets)[:500], "retryable": False}


def redact_value(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret string redacted (dicts and lists recursively)."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, secrets) for v in value]
    return value


def _is_json_object(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class Runner:
    """Executes runs for one plugin manager.

    ``sleep(seconds, cancelled)`` waits between retries (tests pass a recording no-op);
    ``rng()`` gives the jitter fraction; steps run on a small thread pool so a connector
    that ignores its deadline still cannot hold the run past the step timeout.
    ``max_value_bytes`` bounds each step's rendered payload (while it renders) and each step's
    output, as compact JSON (:mod:`levqor_kernel.limits`); beyond it the step fails with a
    permanent :class:`TooLargeError`. ``env`` is the settings every step's context carries
    (:attr:`StepContext.env`): the host hands in its plugin settings; none by default.
    ``max_items`` caps a for-each loop's items (the operator's limit; a step may set a lower one).
    """

    def __init__(
        self,
        pm: LevqorPluginManager,
        *,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] = random.random,
        max_threads: int = 32,
        validate_output: bool = True,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if max_value_bytes < 1:
            raise ValueError("max_value_bytes must be at least 1")
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.pm = pm
        self.max_items = max_items
        self.max_value_bytes = max_value_bytes
        self.env: Mapping[str, str] = {} if env is None else env
        self._sleep = sleep
        self.rng = rng
        self.validate_output = validate_output
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="levqor-step")
        self._out_validators: dict[tuple[str, str], Any] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ helpers
    def _wait(self, seconds: float, cancelled: Callable[[], bool]) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            if cancelled():
                raise _Cancelled("run cancelled")
            return
        end = time.monotonic() + seconds
        ev = threading.Event()
        while (left := end - time.monotonic()) > 0:
            if cancelled():
                raise _Cancelled("run cancelled")
            ev.wait(min(left, 0.5))

    def _delay(self, policy: Mapping[str, float], attempt: int, err: BaseException | None) -> float:
        max_delay = float(policy["max_delay"])
        if isinstance(err, ConnectorError) and err.retry_after is not None:
            return min(float(err.retry_after), max_delay)
        ceiling = min(max_delay, float(policy["initial_delay"]) * (2 ** (attempt - 1)))
        return self.rng() * ceiling  # full jitter

    def _call(
        self,
        step: Mapping[str, Any],
        payload: dict,
        creds: Any,
        ctx: StepContext,
        timeout: float,
        inline: bool,
    ) -> Any:
        connector = step["connector"]
        if inline:
            # a cooperative connector returns by its deadline by itself: no thread hop
            out = self.pm.call_owner(
                "run_task",
                connector,
                connector=connector,
                action=step["action"],
                payload=payload,
                credentials=creds,
                context=ctx,
            )
            if ctx.deadline is not None and time.monotonic() > ctx.deadline + 1.0:
                raise RetryableError(f"step overran its {timeout:g}s timeout", code="timeout")
            return out
        fut = self._pool.submit(
            self.pm.call_owner,
            "run_task",
            connector,
            connector=connector,
            action=step["action"],
            payload=payload,
            credentials=creds,
            context=ctx,
        )
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            fut.cancel()
            raise RetryableError(f"step timed out after {timeout:g}s", code="timeout") from None

    def _check_output(self, step_id: str, connector: str, action: str, out: Any) -> None:
        # measured before anything serializes it: a list repeating one long string is small
        # in memory and huge as JSON
        if json_size(out, self.max_value_bytes) > self.max_value_bytes:
            raise TooLargeError(
                f"step {step_id!r}: connector {connector!r} returned an output over the limit "
                f"of {self.max_value_bytes} bytes",
                code="too_large",
            )
        if not _is_json_object(out):
            raise PermanentError(
                f"connector {connector!r} returned {type(out).__name__}, not a JSON object",
                code="malformed_result",
            )
        if not self.validate_output:
            return
        key = (connector, action)
        v = self._out_validators.get(key)
        if v is None:
            from jsonschema import Draft202012Validator

            a = self.pm.catalog.action(connector, action)
            v = Draft202012Validator(a.output if a else {})
            self._out_validators[key] = v
        err = next(iter(v.iter_errors(out)), None)
        if err is not None:
            raise PermanentError(
                f"connector {connector!r} returned output that breaks its own schema: {err.message[:200]}",
                code="malformed_result",
            )

    # ------------------------------------------------------------------ one step
    def _prepare(
        self,
        step: Mapping[str, Any],
        scope: dict,
        resolve: CredentialResolver,
        meta: dict,
        rendered: dict | None = None,
    ) -> tuple[Any, Any]:
        """Before a step's first attempt: the connector is installed and owned, its credential
        resolves, its payload renders and validates. Returns (connector info, credentials);
        ``meta`` gets the secrets and the rendered payload as soon as they are known.
        ``rendered``: a payload made by the flow itself (an agent's model turn, a tool call
        with the model's arguments), used as it is: data, never rendered as a template."""
        sid, connector, action = step["id"], step["connector"], step["action"]
        info = self.pm.catalog.get(connector)
        if info is None or action not in info.actions:
            raise PermanentError(
                f"connector {connector}.{action} is not installed", code="unknown_connector"
            )
        if self.pm.owner_impl("run_task", connector) is None:
            raise PermanentError(f"no plugin runs connector {connector!r}", code="unknown_connector")
        creds = None
        if info.credentials is not None:
            cname = step.get("credential")
            creds = resolve(cname, connector) if cname else None
            if not creds and (cname or info.credentials_required):
                raise CredentialError(
                    f"credential {cname!r} for {connector!r} is missing"
                    if cname
                    else f"{connector!r} needs a credential",
                    code="missing_credential",
                )
            meta["secrets"] = [
                s for s in secrets_in(secret_fields(creds or {}, info.credentials)) if len(s) >= 6
            ]
        if rendered is not None:
            if json_size(rendered, self.max_value_bytes) > self.max_value_bytes:
                raise TooLargeError(
                    f"step {sid!r}: the payload is over the limit of {self.max_value_bytes} bytes",
                    code="too_large",
                )
            payload = rendered
        else:
            try:
                payload = render(step.get("payload", {}), scope, max_bytes=self.max_value_bytes)
            except TemplateError as e:
                if e.code != "too_large":
                    raise
                raise TooLargeError(f"step {sid!r}: {e.message}", code="too_large") from None
        meta["payload"] = payload
        problems = self.pm.catalog.validate_payload(connector, action, payload)
        if problems:
            raise PayloadError(
                "payload invalid: " + "; ".join(str(p) for p in problems[:5]),
                code="invalid_payload",
            )
        if self.pm.owner_impl("validate_payload", connector) is not None:
            extra = self.pm.call_owner(
                "validate_payload", connector, connector=connector, action=action, payload=payload
            )
            if extra:
                raise PayloadError(
                    "payload invalid: " + "; ".join(map(str, extra[:5])), code="invalid_payload"
                )
        return info, creds

    def _attempts(
        self,
        req: RunRequest,
        step: Mapping[str, Any],
        position: int,
        info: Any,
        creds: Any,
        recorder: Recorder,
        cancelled: Callable[[], bool],
        meta: dict,
        resolve: CredentialResolver | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Call the connector until it succeeds, fails for good or runs out of attempts
        (the step's retry policy); ``meta["attempts"]`` counts them. A 401 on an OAuth2
        credential is answered once per step by refreshing it (``resolve`` is a
        :class:`RefreshingCredentials`) and calling again within the same attempt.
        ``deadline`` (``time.monotonic()``): no attempt runs, nor waits for a retry, past it
        (an agent's time limit); one that would fails with code ``timeout``."""
        sid, connector, action = step["id"], step["connector"], step["action"]
        payload, secrets = meta["payload"], meta["secrets"]
        policy = retry_policy(step)
        step_timeout = float(step.get("timeout", DEFAULT_TIMEOUT))

        def left() -> float:
            return step_timeout if deadline is None else min(step_timeout, deadline - time.monotonic())

        def pause(seconds: float) -> None:
            self._wait(seconds if deadline is None else max(0.0, min(seconds, left())), cancelled)

        current = {"creds": creds, "refreshed": False}
        cname = step.get("credential")

        def refresh(stale: Mapping[str, Any]) -> Mapping[str, Any] | None:
            if current["refreshed"] or not cname or not isinstance(resolve, RefreshingCredentials):
                return None
            current["refreshed"] = True
            fresh = resolve.refresh(cname, connector, stale)
            if fresh:
                current["creds"] = fresh
                secrets.extend(
                    s for s in secrets_in(secret_fields(fresh, info.credentials)) if len(s) >= 6
                )
            return fresh

        def attempt() -> Any:
            meta["attempts"] += 1
            if cancelled():
                raise _Cancelled("run cancelled")
            timeout = left()
            if timeout <= 0:
                raise PermanentError(f"step {sid!r}: no time left to call it", code="timeout")
            recorder.step_started(req.run_id, step, position, meta["attempts"])
            ctx = StepContext(
                run_id=req.run_id,
                step_id=sid,
                attempt=meta["attempts"],
                deadline=time.monotonic() + timeout,
                env=self.env,
                user_id=req.user_id,
                cancelled=cancelled,
            )

            def call(use: Any) -> Any:
                ctx.http.add_secrets(*secrets)
                return self._call(step, payload, use, ctx, timeout, info.cooperative)

            try:
                out = call_with_refresh(call, current["creds"], refresh)
            finally:
                ctx.http.close()
            self._check_output(sid, connector, action, out)
            return out

        max_attempts = int(policy["max_attempts"])
        # the first attempt is called directly (most steps need one); tenacity takes over for
        # the retries, its attempt numbers one behind ours
        try:
            return attempt()
        except RetryableError as first:
            if max_attempts <= 1:
                raise
            delay = self._delay(policy, 1, first)
            recorder.step_retrying(req.run_id, step, position, 1, _error_dict(first, secrets), delay)
            pause(delay)

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            delay = rs.upcoming_sleep
            recorder.step_retrying(
                req.run_id, step, position, rs.attempt_number + 1, _error_dict(exc, secrets), delay
            )

        retrying = Retrying(
            stop=stop_after_attempt(max_attempts - 1),
            wait=lambda rs: self._delay(
                policy, rs.attempt_number + 1, rs.outcome.exception() if rs.outcome else None
            ),
            retry=retry_if_exception(lambda e: isinstance(e, RetryableError)),
            sleep=pause,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _run_step(
        self,
        req: RunRequest,
        step: Mapping[str, Any],
        position: int,
        scope: dict,
        resolve: CredentialResolver,
        recorder: Recorder,
        cancelled: Callable[[], bool],
        meta: dict,
        *,
        payload: dict | None = None,
        deadline: float | None = None,
    ) -> tuple[str, Any, dict | None]:
        """One step to its end: (status, output, error). ``meta`` gets the attempts, the
        duration, the rendered payload and the secrets to redact. ``payload``: a payload
        the flow made, used as it is (see :meth:`_prepare`); ``deadline``: see
        :meth:`_attempts`."""
        started = time.monotonic()
        meta.update(attempts=0, payload=None, secrets=[])
        try:
            info, creds = self._prepare(step, scope, resolve, meta, payload)
            out = self._attempts(
                req, step, position, info, creds, recorder, cancelled, meta, resolve, deadline
            )
            return SUCCEEDED, out, None
        except StopRun as e:
            return "stopped", {"passed": False, **e.output, "reason": e.reason}, None
        except _Cancelled:
            return (
                CANCELLED,
                None,
                {"type": "Cancelled", "message": "run cancelled", "retryable": False},
            )
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            if not isinstance(e, ConnectorError):
                log.warning("step %s of run %s raised %s", step["id"], req.run_id, type(e).__name__)
            return FAILED, None, _error_dict(e, meta["secrets"])
        finally:
            meta["duration"] = time.monotonic() - started

    # ------------------------------------------------------------------ one run
    def run(
        self,
        req: RunRequest,
        *,
        credentials: CredentialResolver | None = None,
        recorder: Recorder | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> RunResult:
        """Run ``req`` to a final state (succeeded, failed or cancelled) or to a wait
        (``waiting``, see :mod:`levqor_kernel.flow`)."""
        flow = Flow(
            self, req, credentials or (lambda name, connector: None), recorder or NullRecorder(), cancelled
        )
        return flow.run()

    def test_step(
        self,
        doc: Mapping[str, Any],
        step_id: str,
        *,
        trigger: Any = None,
        outputs: Mapping[str, Any] | None = None,
        credentials: CredentialResolver | None = None,
        item: Any = None,
        index: int = 0,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Run one step of ``doc`` (with what is nested in it) alone, recording nothing, with
        ``trigger`` data, ``outputs`` of earlier steps by id and, inside a loop, ``item`` and
        ``index``. Answers ``{"status", "input", "output", "error"}``; a wait or a
        sub-pipeline call answers ``waiting`` (and ``wait``) without waiting."""
        step = find_step([*doc.get("steps", []), *doc.get("on_failure", [])], step_id)
        if step is None:
            raise KeyError(step_id)
        rid = run_id or f"test_{uuid.uuid4().hex}"
        rec = ListRecorder()
        scope: dict[str, Any] = {
            "trigger": trigger if trigger is not None else {},
            "steps": {k: {"output": v, "status": SUCCEEDED} for k, v in (outputs or {}).items()},
            "run": {"id": rid, "pipeline_id": None},
            "item": item,
            "index": index,
        }
        req = RunRequest(rid, {**doc, "steps": [step], "on_failure": []})
        flow = Flow(self, req, credentials or (lambda name, connector: None), rec, lambda: False)
        result = flow.run(scope)
        first = next((e for k, e in rec.events if k == "step_finished" and e["step"] == step_id), {})
        out: dict[str, Any] = {
            "status": result.status,
            "input": first.get("input"),
            "output": result.outputs.get(step_id),
            "error": result.error,
        }
        if result.wait is not None:
            out["wait"] = result.wait
        return out
