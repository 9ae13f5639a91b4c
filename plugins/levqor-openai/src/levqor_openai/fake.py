"""A local fake of an OpenAI-compatible Chat Completions endpoint, over real HTTP on 127.0.0.1.

Wire contract followed (checked with the docs search before writing this fake):

* https://platform.openai.com/docs/api-reference/chat/create : ``POST /v1/chat/completions``
  with ``Authorization: Bearer <key>`` and a JSON body ``{"model", "messages": [{"role",
  "content"}], "response_format", ...}``; the answer is a ``chat.completion`` object
  ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message":
  {"role": "assistant", "content", "refusal"}, "finish_reason", "logprobs"}], "usage"}``.
* https://platform.openai.com/docs/guides/structured-outputs (and the ResponseFormat schema
  mirrored at https://raw.githubusercontent.com/api-evangelist/chatgpt/refs/heads/main/json-schema/chatgpt-responseformat-schema.json):
  ``response_format`` is ``{"type": "text"}``, ``{"type": "json_object"}`` (JSON mode; the
  messages must mention JSON) or ``{"type": "json_schema", "json_schema": {"name" (a-z A-Z 0-9
  _ -, at most 64), "description", "schema", "strict"}}``. With ``strict: true`` the answer
  always matches the schema, and a refusal comes back as ``message.refusal`` with
  ``content: null`` (https://github.com/MacPaw/OpenAI/issues/249 quotes the reference).
* Error bodies ``{"error": {"message", "type", "param", "code"}}`` with types such as
  ``invalid_request_error``, ``authentication_error`` (401, code ``invalid_api_key``),
  ``rate_limit_error`` / ``insufficient_quota`` (429, with ``Retry-After``) and ``server_error``
  (5xx) (https://api-docs.hatz.ai/reference/model/OpenAIError,
  https://llmkiwi.mintlify.app/api-reference/errors).

* Function tools (https://platform.openai.com/docs/guides/function-calling): the request's
  ``tools`` are ``[{"type": "function", "function": {"name", "description", "parameters",
  "strict"?}}]`` and ``tool_choice`` is ``"none" | "auto" | "required"`` or ``{"type":
  "function", "function": {"name"}}`` (only allowed with ``tools``). The answer's message
  carries ``tool_calls: [{"id": "call_...", "type": "function", "function": {"name",
  "arguments": "<JSON text>"}}]`` (``content`` may be null) with ``finish_reason:
  "tool_calls"``. The conversation sent back holds that assistant message, then one ``{"role":
  "tool", "tool_call_id", "content"}`` per call; a tool message that answers no preceding call
  is a 400 ("Invalid parameter: messages with role 'tool' must be a response to a preceeding
  message with 'tool_calls'."), and so is an assistant message whose calls are not all
  answered.
* ``GET /v1/models`` (https://platform.openai.com/docs/api-reference/models/list): ``{"object":
  "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``, same bearer check.
* ``usage`` in a completion: ``{"prompt_tokens", "completion_tokens", "total_tokens"}``.

Usage::

    with FakeOpenAI(api_key="sk-test") as ai:
        ai.answer("Hello!", usage=(12, 3))                           # plain text
        ai.call_tools([{"name": "slack_send_message", "arguments": {"text": "hi"}}])
        ai.answer_plan({"explanation": "...", "pipeline": {...}})   # scripted answers, in order
        ai.fail_next(429, headers={"retry-after-ms": "10"})
        ... OPENAI_BASE_URL=ai.base_url, OPENAI_API_KEY="sk-test" ...
        body = ai.completions[0]                                     # what the client sent
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator
from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeOpenAI", "openai_error"]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int, message: str | None = None, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """A documented OpenAI error body."""
    etype = _TYPES.get(status, "server_error")
    if code == "insufficient_quota":
        etype = "insufficient_quota"
    return {
        "error": {
            "message": message or f"Scripted error {status}.",
            "type": etype,
            "param": param,
            "code": code,
        }
    }


class FakeOpenAI:
    """``/v1/chat/completions`` answering scripted messages in order, and ``/v1/models``.

    ``completions`` holds every accepted request body; ``check`` (optional) is called with each
    body and may return a problem message, answered as a 400 ``invalid_request_error`` so a test
    sees the client's request was wrong. An empty ``api_key`` accepts any request (a local
    server without keys). Strict ``json_schema`` requests get their scripted
    content checked against the schema, as the real API guarantees it. ``usage`` of a scripted
    answer is ``(prompt_tokens, completion_tokens)``, :data:`DEFAULT_USAGE` unless given.
    """

    DEFAULT_USAGE = (100, 50)
    DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini")

    def __init__(
        self,
        api_key: str = "sk-test-" + "x" * 8,
        model_prefix: str = "",
        *,
        models: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.api_key = api_key
        self.models = list(self.DEFAULT_MODELS if models is None else models)
        self.server = FakeServer()
        self.completions: list[dict[str, Any]] = []
        self.check: Callable[[dict[str, Any]], str | None] | None = None
        self._script: deque[Reply | tuple[str, Any]] = deque()
        self._issued: set[str] = set()
        self._calls = 0
        self._lock = threading.Lock()
        self.server.route("POST", r"/v1/chat/completions", self._handle)
        self.server.route("GET", r"/v1/models", self._models)

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be."""
        return self.server.url + "/v1"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def start(self) -> FakeOpenAI:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        """Forget the script, the recorded requests and the issued tool call ids."""
        with self._lock:
            self._script.clear()
            self.completions.clear()
            self._issued.clear()
            self._calls = 0
        self.check = None
        self.server.reset()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ script
    def answer(
        self,
        text: Any,
        *,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "stop",
    ) -> None:
        """Queue an assistant message: a dict/list is sent as JSON text, a str as it is."""
        content = text if isinstance(text, str) else json.dumps(text)
        with self._lock:
            self._script.append(("content", (content, finish_reason, usage)))

    def answer_plan(self, answer: Any, *, finish_reason: str = "stop") -> None:
        """Queue a content: a dict/list is sent as JSON text, a str as it is."""
        self.answer(answer, finish_reason=finish_reason)

    def call_tools(
        self,
        calls: list[dict[str, Any]],
        *,
        content: str | None = None,
        usage: tuple[int, int] | None = None,
    ) -> list[str]:
        """Queue an assistant message that calls tools: ``[{"name", "arguments"}]``, the
        arguments an object (sent as JSON text, as the real API does) or a str sent as it is
        (to script arguments that do not parse). Returns the call ids it will carry."""
        out = []
        with self._lock:
            for c in calls:
                self._calls += 1
                args = c.get("arguments", {})
                out.append(
                    {
                        "id": c.get("id") or f"call_{self._calls}",
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
            self._script.append(("tools", (content, out, usage)))
        return [c["id"] for c in out]

    def refuse_next(self, refusal: str = "I'm sorry, I can't help with that.") -> None:
        with self._lock:
            self._script.append(("refusal", refusal))

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request with an error (the documented body unless given)."""
        if body is None:
            body = openai_error(status, message, code=code)
        with self._lock:
            self._script.append(Reply(status, body, dict(headers or {}), delay))

    def delay_next(self, seconds: float) -> None:
        """Answer the next scripted content only after ``seconds`` (for timeouts)."""
        with self._lock:
            self._script.append(("delay", seconds))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    # ------------------------------------------------------------------ behaviour
    def _unauthorized(self, req: Recorded) -> Reply | None:
        if not self.api_key:  # a local server that wants no key (Ollama, vLLM by default)
            return None
        auth = req.header("Authorization") or ""
        if auth.startswith("Bearer ") and secrets.compare_digest(
            auth[7:].encode(), self.api_key.encode()
        ):
            return None
        return Reply(
            401,
            openai_error(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_api_key",
            ),
        )

    def _models(self, req: Recorded) -> Reply:
        refused = self._unauthorized(req)
        if refused is not None:
            return refused
        data = [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in self.models
        ]
        return Reply(200, {"object": "list", "data": data})

    def _handle(self, req: Recorded) -> Reply:
        refused = self._unauthorized(req)
        if refused is not None:
            return refused
        try:
            body = req.json()
        except ValueError:
            return Reply(
                400, openai_error(400, "We could not parse the JSON body of your request.")
            )
        problem = self._check_request(body)
        if problem is None:
            problem = self._check_tool_ids(body)
        if problem is None and self.check is not None:
            problem = self.check(body)
        if problem is not None:
            return Reply(400, openai_error(400, problem))
        delay = 0.0
        with self._lock:
            item = self._script.popleft() if self._script else None
            if isinstance(item, tuple) and item[0] == "delay":
                delay = item[1]
                item = self._script.popleft() if self._script else None
        if isinstance(item, Reply):
            return item
        if item is None:
            return Reply(500, openai_error(500, "the fake has no scripted answer left"))
        with self._lock:
            self.completions.append(body)
        kind, value = item
        usage = None
        if kind == "refusal":
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": value}
            finish = "stop"
        elif kind == "tools":
            content, calls, usage = value
            if not body.get("tools"):
                return Reply(500, openai_error(500, "fake: tool calls scripted, no tools offered"))
            message = {"role": "assistant", "content": content, "refusal": None, "tool_calls": calls}
            finish = "tool_calls"
            with self._lock:
                self._issued.update(c["id"] for c in calls)
        else:
            content, finish, usage = value
            rf = body.get("response_format") or {}
            if rf.get("type") == "json_schema" and rf["json_schema"].get("strict"):
                try:
                    parsed = json.loads(content)
                except ValueError:
                    return Reply(500, openai_error(500, "fake: strict content is not JSON"))
                errs = list(Draft202012Validator(rf["json_schema"]["schema"]).iter_errors(parsed))
                if errs:
                    return Reply(
                        500,
                        openai_error(
                            500,
                            f"fake: scripted content breaks the strict schema: {errs[0].message}",
                        ),
                    )
            message = {"role": "assistant", "content": content, "refusal": None}
        prompt, completion = usage or self.DEFAULT_USAGE
        return Reply(
            200,
            {
                "id": "chatcmpl-" + secrets.token_hex(12),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
            {"x-request-id": "req_" + secrets.token_hex(8)},
            delay,
        )

    def _check_tool_ids(self, body: dict[str, Any]) -> str | None:
        """Tool messages answer the calls of the assistant message before them, every call is
        answered, and every id is one this fake issued."""
        open_ids: set[str] = set()
        for i, m in enumerate(body["messages"]):
            role = m["role"]
            if role == "tool":
                tid = m.get("tool_call_id")
                if not isinstance(tid, str) or tid not in open_ids:
                    return (
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        f"preceeding message with 'tool_calls'. (messages[{i}])"
                    )
                with self._lock:
                    known = tid in self._issued
                if not known:
                    return f"Invalid 'messages[{i}].tool_call_id': no tool call with id {tid!r}"
                open_ids.discard(tid)
                continue
            if open_ids:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(sorted(open_ids))}"
                )
            if role == "assistant" and m.get("tool_calls"):
                open_ids = {c["id"] for c in m["tool_calls"]}
        if open_ids:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(open_ids))}"
            )
        return None

    @staticmethod
    def _check_tools(body: dict[str, Any]) -> str | None:
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not tools:
                return "Invalid 'tools': empty array. Expected an array with minimum length 1"
            for i, t in enumerate(tools):
                fn = t.get("function") if isinstance(t, dict) else None
                if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
                    return f"Invalid value for 'tools[{i}]': expected a function tool"
                if not _NAME.match(str(fn.get("name", ""))):
                    return (
                        f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                        "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
                    )
                params = fn.get("parameters")
                if params is not None and not isinstance(params, dict):
                    return f"Invalid type for 'tools[{i}].function.parameters': expected an object"
        choice = body.get("tool_choice")
        if choice is not None:
            if tools is None:
                return (
                    "Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                    "'tools' are specified."
                )
            if choice not in ("none", "auto", "required") and not (
                isinstance(choice, dict)
                and choice.get("type") == "function"
                and isinstance(choice.get("function"), dict)
                and isinstance(choice["function"].get("name"), str)
            ):
                return "Invalid value for 'tool_choice'"
        return None

    @staticmethod
    def _check_messages(msgs: list[Any]) -> str | None:
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
            ):
                return f"Invalid value for 'messages[{i}].role'"
            content = m.get("content")
            calls = m.get("tool_calls")
            if m["role"] == "assistant" and calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"Invalid 'messages[{i}].tool_calls': empty array"
                for j, c in enumerate(calls):
                    fn = c.get("function") if isinstance(c, dict) else None
                    if (
                        not isinstance(c, dict)
                        or not isinstance(c.get("id"), str)
                        or c.get("type") != "function"
                        or not isinstance(fn, dict)
                        or not isinstance(fn.get("name"), str)
                        or not isinstance(fn.get("arguments"), str)
                    ):
                        return f"Invalid value for 'messages[{i}].tool_calls[{j}]'"
                if content is not None and not isinstance(content, str):
                    return f"Invalid type for 'messages[{i}].content'"
                continue
            if m["role"] == "tool" and not isinstance(m.get("tool_call_id"), str):
                return f"Missing required parameter: 'messages[{i}].tool_call_id'."
            if not isinstance(content, str):
                return f"Invalid type for 'messages[{i}].content'"
        return None

    @classmethod
    def _check_request(cls, body: Any) -> str | None:
        """The contract checks the real API makes (a 400 with this message when broken)."""
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty array"
        problem = cls._check_messages(msgs) or cls._check_tools(body)
        if problem is not None:
            return problem
        rf = body.get("response_format")
        if rf is None:
            return None
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type'"
        if rf["type"] == "json_object":
            if not any("json" in (m.get("content") or "").lower() for m in msgs):
                return (
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'."
                )
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not _NAME.match(str(js.get("name", ""))):
                return "Invalid 'response_format.json_schema.name'"
            if not isinstance(js.get("schema"), dict):
                return "Missing required parameter: 'response_format.json_schema.schema'"
            if js.get("strict"):
                from .schema import strict_problems

                problems = strict_problems(js["schema"])
                if problems:
                    return f"Invalid schema for response_format '{js['name']}': {problems[0]}"
        return None
