"""The agent step: a model works toward a goal with connector actions as its tools.

Each model turn is a child step at ``<agent>.turns[i]`` (the model connector's turn action,
:data:`levqor_kernel.ai.AGENT_TURN_PAYLOAD`), each tool call the model asks for one at
``<agent>.turns[i].calls[j]`` (the tool's connector action), and an approval a call waits for
a ``flow.wait`` at ``<agent>.turns[i].calls[j].approval``. Children go through the runner like
any step (validation, credentials, retries, deadline, redaction, recording, price), with a
payload the flow makes itself: the model's text and the tools' outputs are data and never
rendered as templates. The idempotency key of a call is ``<run>:<path of the call>``.

A resumed run never runs a child again: a succeeded child's output (``RunRequest.completed``)
and a failed child's error (``RunRequest.decided``) are replayed, so the conversation is rebuilt
as it was and the agent goes on where it stopped (after a crash, after an approval).

Limits: ``max_iterations`` model turns (a model that still calls tools after the last fails the
step, code ``max_iterations``), ``max_tokens`` summed over the turns (code ``max_tokens``) and
``timeout`` seconds of this execution, waiting for approvals not counted (code ``timeout``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import ai
from .errors import PermanentError
from .recording import CANCELLED, FAILED, SUCCEEDED, WAITING, _Cancelled
from .templating import render

if TYPE_CHECKING:
    from .flow import Flow

#: the most characters of a tool's result (its output or error as JSON) the model is given
MAX_TOOL_RESULT_CHARS = 20_000
#: the most characters of a call's output or error shown in the agent's trace
MAX_TRACE_CHARS = 2_000
#: the most tool calls of one model turn that run; the model is told to ask for the rest later
MAX_CALLS_PER_TURN = 16
#: a model turn may take at most this long (the agent's time left caps it further)
MAX_TURN_SECONDS = 900.0
#: what the model is told of a call that was not approved (then why: the host's reason)
DECLINED = "this call was not approved, so it was not made: do not call it again with the same arguments"


@dataclass
class Tool:
    """A connector action offered to the model, with what the author fixed."""

    name: str
    connector: str
    action: str
    credential: str | None
    fixed: dict[str, Any]
    approval: bool
    spec: dict[str, Any]
    step: dict[str, Any] = field(default_factory=dict)


def clip(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters, saying so."""
    if len(text) <= most:
        return text
    return text[:most] + f"... [truncated: {len(text)} characters in all]"


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _shown(value: Any) -> Any:
    """What the trace shows of a call's output or error: the value, or its JSON clipped."""
    text = as_json(value)
    return value if len(text) <= MAX_TRACE_CHARS else clip(text, MAX_TRACE_CHARS)


def _fail(path: str, code: str, message: str) -> Exception:
    from .flow import Failed

    return Failed({"step": path, "type": "AgentError", "code": code, "message": message, "retryable": False})


class Agent:
    """One execution of one agent step (made by :meth:`Flow._agent`)."""

    def __init__(self, flow: Flow, step: Mapping[str, Any], scope: dict[str, Any], path: str) -> None:
        self.flow, self.step, self.scope, self.path = flow, step, scope, path
        self.runner = flow.runner
        self.req = flow.req
        catalog = self.runner.pm.catalog
        info = catalog.get(step["connector"])
        if info is None or not info.agent_action:
            raise _fail(path, "unknown_connector", f"connector {step['connector']!r} cannot drive an agent (not installed?)")
        self.turn_action = info.agent_action
        self.max_iterations = int(step.get("max_iterations", ai.DEFAULT_AGENT_ITERATIONS))
        self.max_tokens = int(step.get("max_tokens", ai.DEFAULT_AGENT_TOKENS))
        self.deadline = time.monotonic() + float(step.get("timeout", ai.DEFAULT_AGENT_TIMEOUT))
        mb = self.runner.max_value_bytes
        self.system = render(step["system"], scope, max_bytes=mb) if step.get("system") else None
        self.goal = render(step["goal"], scope, max_bytes=mb)
        self.tools: dict[str, Tool] = {}
        for t in step.get("tools", []):
            action = catalog.action(t["connector"], t["action"])
            if action is None or action.hidden:
                raise _fail(path, "unknown_connector", f"tool {t['connector']}.{t['action']} is not installed")
            fixed = render(t.get("payload") or {}, scope, max_bytes=mb)
            name = t.get("name") or ai.tool_name(t["connector"], t["action"])
            description = t.get("description") or " ".join(
                x for x in (action.title + ".", action.description) if x
            )
            policy = step.get("approval", "writes")
            needs = t.get("approval")
            if needs is None:
                needs = policy == "all" or (policy == "writes" and action.writes is not False)
            child = {"id": step["id"], "connector": t["connector"], "action": t["action"]}
            for key in ("credential", "timeout", "retry"):
                if key in t:
                    child[key] = t[key]
            self.tools[name] = Tool(
                name, t["connector"], t["action"], t.get("credential"), fixed, bool(needs),
                {"name": name, "description": description[:1024],
                 "parameters": ai.tool_parameters(action.payload, fixed)},
                child,
            )
        self.trace: list[dict[str, Any]] = []
        self.usages: list[dict[str, Any] | None] = []

    # ------------------------------------------------------------------ the conversation
    def run(self) -> dict[str, Any]:
        flow, step, path = self.flow, self.step, self.path
        flow.started(step, path)
        began = time.monotonic()
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": str(self.system)})
        messages.append({"role": "user", "content": str(self.goal)})
        sent = 0  # the messages a turn's record already shows
        calls = 0
        for i in range(self.max_iterations):
            turn = self.model_turn(i, messages, sent)
            self.usages.append(ai.usage_of(turn))
            spent = ai.add_usage(self.usages)["total_tokens"]
            if spent > self.max_tokens:
                raise _fail(path, "max_tokens", f"the agent used {spent} tokens, over its limit of {self.max_tokens}")
            wanted = turn.get("tool_calls") or []
            if not wanted:
                out = {
                    "answer": turn.get("content"),
                    "turns": i + 1,
                    "tool_calls": calls,
                    "usage": ai.add_usage(self.usages),
                    "trace": self.trace,
                }
                flow.finish(
                    step, path, SUCCEEDED, input=self.record_input(), output=out,
                    duration=time.monotonic() - began,
                )
                return out
            if i == self.max_iterations - 1:
                raise _fail(
                    path, "max_iterations",
                    f"the model still called tools after {self.max_iterations} turns (max_iterations)",
                )
            messages.append({"role": "assistant", "content": turn.get("content"), "tool_calls": wanted})
            sent = len(messages)
            for j, call in enumerate(wanted):
                content = self.tool_call(i, j, call)
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "name": call["name"], "content": content}
                )
                calls += 1
        raise AssertionError("unreachable: the last turn returns or fails")  # pragma: no cover

    def record_input(self) -> dict[str, Any]:
        return {"goal": self.goal, "tools": list(self.tools), "model": self.step["model"]}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self, where: str) -> None:
        if self.flow.cancelled():
            raise _Cancelled("run cancelled")
        if self.left() <= 0:
            timeout = float(self.step.get("timeout", ai.DEFAULT_AGENT_TIMEOUT))
            raise _fail(where, "timeout", f"the agent ran out of time ({timeout:g}s, its timeout)")

    def replayed(self, path: str) -> tuple[str, Any] | None:
        """(status, output or error) of a child that ended before this execution, or None."""
        done = self.req.completed.get(path, _NOT)
        if done is not _NOT:
            return SUCCEEDED, done
        decided = self.req.decided.get(path)
        if decided is not None:
            if decided.get("status") == SUCCEEDED:
                return SUCCEEDED, decided.get("output")
            return FAILED, decided.get("error") or {"message": "failed"}
        return None

    def model_turn(self, i: int, messages: list[dict[str, Any]], sent: int) -> dict[str, Any]:
        """Turn ``i``: the model's answer (replayed when it was given before)."""
        path = f"{self.path}.turns[{i}]"
        before = self.replayed(path)
        if before is not None:
            status, value = before
            if status == FAILED:
                raise _child_failed(path, value)
            return value
        self.check_time(path)
        payload: dict[str, Any] = {
            "model": self.step["model"],
            "messages": messages,
            "tools": [t.spec for t in self.tools.values()],
        }
        if "temperature" in self.step:
            payload["temperature"] = self.step["temperature"]
        child = {"id": self.step["id"], "connector": self.step["connector"], "action": self.turn_action,
                 "timeout": max(0.001, min(MAX_TURN_SECONDS, self.left()))}
        for key in ("credential", "retry"):
            if key in self.step:
                child[key] = self.step[key]
        shown = {"model": self.step["model"], "messages": messages[sent:], "tools": list(self.tools)}
        status, out, err = self.child(child, path, payload, shown)
        if status != SUCCEEDED:
            self.check_time(path)  # a turn cut short by the agent's time is the agent's timeout
            raise _child_failed(path, err)
        return out

    def tool_call(self, i: int, j: int, call: Mapping[str, Any]) -> str:
        """Call ``j`` of turn ``i`` (replayed, refused, declined or run): the tool message's
        content for the model."""
        path = f"{self.path}.turns[{i}].calls[{j}]"
        name, args = call.get("name"), call.get("arguments")
        tool = self.tools.get(name) if isinstance(name, str) else None
        entry: dict[str, Any] = {"turn": i, "tool": name, "path": path,
                                 "arguments": self.flow.redact(args)}
        if tool is not None:
            entry.update(connector=tool.connector, action=tool.action)
        self.trace.append(entry)
        before = self.replayed(path)
        if before is not None:
            return self.result(entry, *before)
        if j >= MAX_CALLS_PER_TURN:
            return self.refuse(entry, {"id": self.step["id"], "connector": "flow", "action": "tool_call"},
                               path, "invalid_tool_call",
                               f"at most {MAX_CALLS_PER_TURN} tool calls run per turn: ask for this one again")
        if tool is None:
            names = ", ".join(self.tools) or "none"
            return self.refuse(entry, {"id": self.step["id"], "connector": "flow", "action": "tool_call"},
                               path, "invalid_tool_call", f"there is no tool named {name!r} (the tools: {names})")
        if isinstance(call.get("arguments_error"), str):  # the connector could not read them
            return self.refuse(entry, tool.step, path, "invalid_tool_call",
                               f"invalid arguments: {call['arguments_error'][:500]}")
        payload = {**(args if isinstance(args, dict) else {}), **tool.fixed}
        problems = self.runner.pm.catalog.validate_payload(tool.connector, tool.action, payload, base="")
        if problems:
            text = "; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems[:5])
            return self.refuse(entry, tool.step, path, "invalid_tool_call", f"invalid arguments: {text}")
        if tool.approval:
            decision = self.approval(path, tool, args, payload)
            if decision is not None:
                message = DECLINED
                reason = decision.get("message")  # "rejected by ann", "the approval timed out"
                if isinstance(reason, str) and reason:
                    message += f" ({reason[:200]})"
                if isinstance(decision.get("comment"), str) and decision["comment"]:
                    message += f"; the reviewer's comment: {decision['comment'][:500]}"
                return self.refuse(entry, tool.step, path, "rejected", message)
        self.check_time(path)
        step = {**tool.step, "timeout": max(0.001, min(float(tool.step.get("timeout", 30.0)), self.left()))}
        status, out, err = self.child(step, path, payload, None)
        if status != SUCCEEDED:
            self.check_time(path)
        return self.result(entry, status, out if status == SUCCEEDED else err)

    def approval(self, path: str, tool: Tool, args: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Suspend the run until a person decides the call at ``path`` (recorded ``waiting``
        with the payload it would run with, its approval under it); once decided, None when
        approved, else the rejection's error."""
        apath = f"{path}.approval"
        decided = self.req.decided.get(apath)
        if decided is None and apath in self.req.completed:
            decided = {"status": SUCCEEDED}
        if decided is not None:
            return None if decided.get("status") == SUCCEEDED else (decided.get("error") or {})
        shown = self.flow.redact(args)
        approval: dict[str, Any] = {
            "message": clip(f"The agent wants to call {tool.name} ({tool.connector}.{tool.action}) with "
                            f"{as_json(shown)}", 2000),
            "tool": tool.name, "connector": tool.connector, "action": tool.action,
            "arguments": shown, "on_timeout": "reject",
        }
        if "approval_timeout" in self.step:
            approval["timeout"] = self.step["approval_timeout"]
        self.flow.finish(tool.step, path, WAITING, input=self.flow.redact(payload))
        self.flow.suspend({"id": self.step["id"], "type": "wait"}, apath,
                          {"step": apath, "kind": "approval", "approval": approval})
        raise AssertionError("unreachable: suspend raises")  # pragma: no cover

    # ------------------------------------------------------------------ children
    def child(self, step: dict[str, Any], path: str, payload: dict[str, Any], shown: Any) -> tuple[str, Any, Any]:
        """Run one child step with a payload made here; record it (input ``shown``, or the
        payload); (status, output, error)."""
        from .runner import redact_value

        flow = self.flow
        meta: dict[str, Any] = {}
        view = {**step, "id": path}
        pos = flow.positions.get(step["id"], 0)
        status, out, err = self.runner._run_step(
            self.req, view, pos, self.scope, flow.resolve, flow.recorder, flow.cancelled, meta,
            payload=payload, deadline=self.deadline,
        )
        if meta["secrets"]:
            with flow.lock:
                flow.secrets.extend(s for s in meta["secrets"] if s not in flow.secrets)
        status = SUCCEEDED if status == "stopped" else status
        out = flow.redact(redact_value(out, meta["secrets"]))
        err = flow.redact(err)
        flow.finish(
            step, path, status, attempts=meta["attempts"],
            input=flow.redact(redact_value(shown if shown is not None else meta["payload"], meta["secrets"])),
            output=out if status == SUCCEEDED else None,
            error=err if status != SUCCEEDED else None,
            duration=meta["duration"],
        )
        if status == CANCELLED:
            raise _Cancelled("run cancelled")
        return status, out, err

    def refuse(self, entry: dict, step: Mapping[str, Any], path: str, code: str, message: str) -> str:
        """A call not run (unknown tool, invalid arguments, declined): recorded failed with no
        attempt; the model is told why."""
        err = PermanentError(message, code=code).to_dict()
        self.flow.finish(step, path, FAILED, input=entry["arguments"], error=err)
        return self.result(entry, FAILED, err)

    def result(self, entry: dict[str, Any], status: str, value: Any) -> str:
        """The trace entry completed; the tool message's content."""
        entry["status"] = status
        if status == SUCCEEDED:
            entry["output"] = _shown(value)
            return clip(as_json(value), MAX_TOOL_RESULT_CHARS)
        error = {k: value.get(k) for k in ("code", "message") if isinstance(value, Mapping) and value.get(k)}
        entry["error"] = _shown(error)
        return clip(as_json({"error": error}), MAX_TOOL_RESULT_CHARS)


_NOT = object()


def _child_failed(path: str, err: Any) -> Exception:
    from .flow import Failed

    return Failed({"step": path, **(err if isinstance(err, Mapping) else {"message": "failed"})})


__all__ = ["DECLINED", "MAX_CALLS_PER_TURN", "MAX_TOOL_RESULT_CHARS", "MAX_TRACE_CHARS", "Agent", "Tool"]
