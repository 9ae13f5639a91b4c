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

Usage::

    with FakeOpenAI(api_key="sk-test") as ai:
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
    """``/v1/chat/completions`` answering scripted contents in order.

    ``completions`` holds every accepted request body; ``check`` (optional) is called with each
    body and may return a problem message, answered as a 400 ``invalid_request_error`` so a test
    sees the client's request was wrong. Strict ``json_schema`` requests get their scripted
    content checked against the schema, as the real API guarantees it.
    """

    def __init__(self, api_key: str = "sk-test-" + "x" * 8, model_prefix: str = "") -> None:
        self.api_key = api_key
        self.server = FakeServer()
        self.completions: list[dict[str, Any]] = []
        self.check: Callable[[dict[str, Any]], str | None] | None = None
        self._script: deque[Reply | tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self.server.route("POST", r"/v1/chat/completions", self._handle)

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

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ script
    def answer_plan(self, answer: Any, *, finish_reason: str = "stop") -> None:
        """Queue a content: a dict/list is sent as JSON text, a str as it is."""
        content = answer if isinstance(answer, str) else json.dumps(answer)
        with self._lock:
            self._script.append(("content", (content, finish_reason)))

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
        delay: float = 0.0,
    ) -> None:
        """Answer the next request with an error (the documented body unless given)."""
        if body is None:
            body = openai_error(status, code=code)
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
    def _handle(self, req: Recorded) -> Reply:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or not secrets.compare_digest(
            auth[7:].encode(), self.api_key.encode()
        ):
            return Reply(
                401,
                openai_error(
                    401,
                    "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_api_key",
                ),
            )
        try:
            body = req.json()
        except ValueError:
            return Reply(
                400, openai_error(400, "We could not parse the JSON body of your request.")
            )
        problem = self._check_request(body)
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
        if kind == "refusal":
            message = {"role": "assistant", "content": None, "refusal": value}
            finish = "stop"
        else:
            content, finish = value
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
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            },
            {"x-request-id": "req_" + secrets.token_hex(8)},
            delay,
        )

    @staticmethod
    def _check_request(body: Any) -> str | None:
        """The contract checks the real API makes (a 400 with this message when broken)."""
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty array"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
            ):
                return f"Invalid value for 'messages[{i}].role'"
            if not isinstance(m.get("content"), str):
                return f"Invalid type for 'messages[{i}].content'"
        rf = body.get("response_format")
        if rf is None:
            return None
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type'"
        if rf["type"] == "json_object":
            if not any("json" in m["content"].lower() for m in msgs):
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
