"""The model actions: ``chat``, ``extract``, ``classify`` and the agent's ``agent_turn``.

Each sends Chat Completions requests through :mod:`levqor_openai.client` and answers its output
with ``usage`` (:data:`levqor_kernel.ai.USAGE_SCHEMA`, summed over every request the step made,
with the model the step asked for, so the connector's ``rates`` price it).

``extract`` and ``classify`` ask for structured output: strict ``json_schema`` when the schema
fits OpenAI's strict subset (and ``mode`` is not ``"json"``), else JSON mode (``json_object``)
with the schema in the instructions. Either way the answer is validated; an answer that does not
validate goes back to the model with its problems (``repair_rounds`` times, default 1, at most
3), after which the step fails closed (permanent, code ``invalid_answer``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from levqor_kernel.context import StepContext
from levqor_kernel.errors import ConnectorError, PayloadError, PermanentError
from referencing.exceptions import Unresolvable

from .client import DEFAULT_BASE_URL, Endpoint, call
from .strict import (
    LOCAL_REFS,
    NotStrictable,
    remote_refs,
    strict_problems,
    strictify,
    strip_nulls,
)

DEFAULT_REPAIR_ROUNDS = 1
MAX_REPAIR_ROUNDS = 3
#: the key a non-object answer schema is wrapped under (strict mode and JSON mode want objects)
WRAPPED = "value"


# ------------------------------------------------------------------------ one request
@dataclass
class Answer:
    """One completion: the assistant message's parts and the tokens of the request."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    model: str
    input_tokens: int
    output_tokens: int


@dataclass
class Tokens:
    """The tokens a step used, over all its requests."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    def add(self, a: Answer) -> None:
        self.input_tokens += a.input_tokens
        self.output_tokens += a.output_tokens
        self.requests += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _malformed(ep: Endpoint, what: str) -> PermanentError:
    return PermanentError(f"{ep.service} answered a completion {what}", code="malformed_response")


def complete(context: StepContext, ep: Endpoint, body: dict[str, Any]) -> Answer:
    """POST /chat/completions and read the first choice. A refusal or a content filter stop
    is a permanent error with the provider's words."""
    data = call(context, ep, "POST", "/chat/completions", body)
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    spent = Tokens(str(body["model"]), _count(usage.get("prompt_tokens")),
                   _count(usage.get("completion_tokens")), 1)
    try:
        return _read(ep, body, data, spent)
    except ConnectorError as e:  # the request was answered: its tokens were used all the same
        e.usage = spent.to_json()
        raise


def _read(ep: Endpoint, body: dict[str, Any], data: Mapping[str, Any], spent: Tokens) -> Answer:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _malformed(ep, "without choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise _malformed(ep, "without a message")
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else None
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        raise PermanentError(
            f"the model refused: {refusal.strip()[:1000]}", code="refused", status=200
        )
    if finish == "content_filter":
        raise PermanentError(
            f"{ep.service} withheld the answer: its content filter flagged it "
            "(finish_reason content_filter)",
            code="content_policy",
            status=200,
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed(ep, "whose content is not text")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _malformed(ep, "whose tool_calls is not a list")
    return Answer(
        content=content,
        tool_calls=[c for c in calls if isinstance(c, Mapping)],
        finish_reason=finish,
        model=str(data.get("model") or body["model"]),
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
    )


def _options(payload: Mapping[str, Any], ep: Endpoint) -> dict[str, Any]:
    """``temperature`` and the token limit: OpenAI's own API takes ``max_completion_tokens``
    (``max_tokens`` is deprecated there and refused by its reasoning models); compatible
    servers (vLLM, Ollama, proxies) know ``max_tokens``."""
    out: dict[str, Any] = {}
    if payload.get("temperature") is not None:
        out["temperature"] = payload["temperature"]
    if payload.get("max_tokens") is not None:
        key = "max_completion_tokens" if ep.base_url == DEFAULT_BASE_URL else "max_tokens"
        out[key] = payload["max_tokens"]
    return out


# ------------------------------------------------------------------------ chat
def chat(payload: Mapping[str, Any], ep: Endpoint, context: StepContext) -> dict[str, Any]:
    messages = []
    if _text(payload.get("system")):
        messages.append({"role": "system", "content": payload["system"]})
    prompt = payload.get("prompt")
    if not _text(prompt):
        raise PayloadError("prompt is required and must not be blank")
    messages.append({"role": "user", "content": prompt})
    body = {"model": payload["model"], "messages": messages, **_options(payload, ep)}
    a = complete(context, ep, body)
    tokens = Tokens(payload["model"])
    tokens.add(a)
    return {
        "text": a.content or "",
        "finish_reason": a.finish_reason,
        "model": a.model,
        "usage": tokens.to_json(),
    }


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# ------------------------------------------------------------------------ agent turn
def _wire_message(m: Mapping[str, Any]) -> dict[str, Any]:
    """A provider-neutral message (levqor_kernel.ai) as Chat Completions sends it."""
    role = m["role"]
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": m.get("content")}
        calls = m.get("tool_calls") or []
        if calls:
            out["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {
                        "name": c["name"],
                        "arguments": json.dumps(c.get("arguments") or {}),
                    },
                }
                for c in calls
            ]
        elif out["content"] is None:
            out["content"] = ""
        return out
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": m.get("tool_call_id") or "",
            "content": m.get("content") or "",
        }
    return {"role": role, "content": m.get("content") or ""}


def _neutral_call(c: Mapping[str, Any], n: int) -> dict[str, Any]:
    """A wire tool call as the flow wants it: arguments parsed into an object.

    Arguments that are not a JSON object (a model can emit broken JSON outside strict mode)
    come back as ``arguments: {}`` with ``arguments_error`` saying why, so the flow reports the
    problem to the model instead of guessing what it meant."""
    fn = c.get("function") if isinstance(c.get("function"), Mapping) else {}
    raw = fn.get("arguments")
    out: dict[str, Any] = {
        "id": c["id"] if isinstance(c.get("id"), str) and c["id"] else f"call_{n}",
        "name": fn.get("name") if isinstance(fn.get("name"), str) else "",
        "arguments": {},
    }
    if isinstance(raw, Mapping):  # some compatible servers send the object itself
        out["arguments"] = dict(raw)
        return out
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return out
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as e:
        out["arguments_error"] = f"the arguments are not valid JSON ({e.msg} at {e.pos})"
        return out
    if isinstance(parsed, dict):
        out["arguments"] = parsed
    else:
        out["arguments_error"] = "the arguments must be a JSON object"
    return out


def agent_turn(payload: Mapping[str, Any], ep: Endpoint, context: StepContext) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": payload["model"],
        "messages": [_wire_message(m) for m in payload["messages"]],
        **_options(payload, ep),
    }
    tools = payload.get("tools") or []
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description") or "",
                    "parameters": t.get("parameters") or {"type": "object", "properties": {}},
                },
            }
            for t in tools
        ]
        body["tool_choice"] = "auto"
    a = complete(context, ep, body)
    tokens = Tokens(payload["model"])
    tokens.add(a)
    return {
        "content": a.content,
        "tool_calls": [_neutral_call(c, i) for i, c in enumerate(a.tool_calls, 1)],
        "usage": tokens.to_json(),
        "finish_reason": a.finish_reason,
    }


# ------------------------------------------------------------------------ structured answers
@dataclass
class Structured:
    """How to ask for a structured answer and check it.

    ``schema`` validates every answer; ``strict`` is the schema strict mode is asked with
    (default: ``schema`` made strict, when it can be); ``check`` looks at a valid answer once
    more and returns it (normalised) with a problem or None."""

    name: str
    schema: dict[str, Any]
    system: str
    user: str
    forced_json: bool = False
    repair_rounds: int = DEFAULT_REPAIR_ROUNDS
    check: Callable[[Any], tuple[Any, str | None]] | None = None
    strict: dict[str, Any] | None = None
    strict_schema: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.forced_json:
            return
        try:
            candidate = strictify(self.schema if self.strict is None else self.strict)
        except NotStrictable:
            return
        if not strict_problems(candidate):
            self.strict_schema = candidate

    @property
    def mode(self) -> str:
        return "json" if self.strict_schema is None else "strict"


def _problems(validator: Draft202012Validator, value: Any) -> list[str]:
    try:
        errs = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except (Unresolvable, RecursionError):  # a $ref to nothing, or to itself without end
        raise PayloadError(
            "schema has a $ref that cannot be resolved or refers to itself", code="bad_schema"
        ) from None
    return [
        f"{'/' + '/'.join(str(p) for p in e.absolute_path) if e.absolute_path else '/'}: {e.message}"
        for e in errs[:10]
    ]


def _request(spec: Structured) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``response_format`` and the first messages of a structured request."""
    system = spec.system
    if spec.strict_schema is None:
        response_format: dict[str, Any] = {"type": "json_object"}
        system += (
            "\n\nAnswer with one JSON object, and nothing else, that validates against this "
            "JSON Schema:\n" + json.dumps(spec.schema, separators=(",", ":"))
        )
    else:
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": spec.name, "strict": True, "schema": spec.strict_schema},
        }
    return response_format, [
        {"role": "system", "content": system},
        {"role": "user", "content": spec.user},
    ]


def _no_json_schema(e: PermanentError) -> bool:
    """Whether a server refused the request for its ``json_schema`` response format (an
    OpenAI-compatible server or a model without structured outputs)."""
    if e.status not in (400, 422) or e.code in ("context_length_exceeded", "content_policy"):
        return False
    text = e.message.lower()
    return "json_schema" in text or "response_format" in text or "structured output" in text


def ask_structured(
    spec: Structured, payload: Mapping[str, Any], ep: Endpoint, context: StepContext
) -> tuple[Any, Tokens, int]:
    """The validated answer, the tokens used and the attempts made; fails closed.

    A server that refuses strict structured output (400 naming ``json_schema`` or
    ``response_format``) is asked again at once in JSON mode: ``spec.mode`` then says
    ``json``."""
    response_format, messages = _request(spec)
    validator = Draft202012Validator(spec.schema, registry=LOCAL_REFS)
    tokens = Tokens(payload["model"])
    problems: list[str] = []
    attempt = 0
    while attempt <= spec.repair_rounds:
        body = {
            "model": payload["model"],
            "messages": messages,
            "response_format": response_format,
            **_options(payload, ep),
        }
        try:
            a = complete(context, ep, body)
        except ConnectorError as e:
            if (
                not isinstance(e, PermanentError)
                or spec.strict_schema is None
                or attempt > 0
                or not _no_json_schema(e)
            ):
                e.usage = _plus(tokens, e.usage)  # earlier rounds' tokens, and this one's
                raise
            spec.strict_schema = None
            response_format, messages = _request(spec)
            continue
        attempt += 1
        tokens.add(a)
        content = a.content or ""
        try:
            value = json.loads(content)
        except ValueError:
            cut = " (cut off: max_tokens reached)" if a.finish_reason == "length" else ""
            problems = [f"/: the answer is not valid JSON{cut}"]
        else:
            if spec.strict_schema is not None:
                value = strip_nulls(value, spec.schema)
            problems = _problems(validator, value)
            if not problems and spec.check is not None:
                value, problem = spec.check(value)
                problems = [problem] if problem else []
        if not problems:
            return value, tokens, attempt
        if attempt <= spec.repair_rounds:
            messages.append({"role": "assistant", "content": content})
            messages.append(
                {
                    "role": "user",
                    "content": "That answer is not valid. Fix these problems and answer again "
                    "with the whole corrected JSON object:\n"
                    + "\n".join(f"- {p}" for p in problems),
                }
            )
    raise PermanentError(
        f"the model's answer does not validate after {spec.repair_rounds} repair round(s): "
        + "; ".join(problems[:5]),
        code="invalid_answer",
        usage=tokens.to_json(),  # the rounds' tokens were used all the same
    )


def _plus(tokens: Tokens, usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What ``tokens`` used plus ``usage`` (the request that failed), or None when nothing."""
    extra = usage or {}
    total = Tokens(tokens.model, tokens.input_tokens + _count(extra.get("input_tokens")),
                   tokens.output_tokens + _count(extra.get("output_tokens")))
    return total.to_json() if total.input_tokens or total.output_tokens else None


def _rounds(payload: Mapping[str, Any]) -> int:
    n = payload.get("repair_rounds")
    return DEFAULT_REPAIR_ROUNDS if n is None else max(0, min(int(n), MAX_REPAIR_ROUNDS))


def extract(payload: Mapping[str, Any], ep: Endpoint, context: StepContext) -> dict[str, Any]:
    schema = payload.get("schema")
    problem = schema_problem(schema)
    if problem:
        raise PayloadError(problem, code="bad_schema")
    assert isinstance(schema, dict)
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "required": [WRAPPED], "properties": {WRAPPED: schema}}
    text = payload.get("text")
    if not _text(text):
        raise PayloadError("text is required and must not be blank")
    system = _text(payload.get("instructions")) or (
        "Extract the requested information from the user's text. Use only what the text says."
    )
    spec = Structured(
        name="extraction",
        schema=schema,
        system=system,
        user=text,
        forced_json=payload.get("mode") == "json",
        repair_rounds=_rounds(payload),
    )
    value, tokens, attempts = ask_structured(spec, payload, ep, context)
    return {
        "data": value[WRAPPED] if wrapped else value,
        "mode": spec.mode,
        "attempts": attempts,
        "usage": tokens.to_json(),
    }


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be an answer's schema, or None."""
    if not isinstance(schema, dict) or not schema:
        return "schema must be a JSON Schema object (for example {\"type\": \"object\", ...})"
    try:
        Draft202012Validator.check_schema(schema)
    except Exception as e:  # noqa: BLE001 - jsonschema's SchemaError and friends
        return f"schema is not a valid JSON Schema: {getattr(e, 'message', e)}"
    found = remote_refs(schema)
    if found:
        return f"schema's $ref must refer within the schema (start with #), not to {found[0]!r}"
    return None


def labels_of(raw: Any) -> list[dict[str, str]]:
    """``labels`` as ``[{"label", "description"}]``: strings or objects, unique, non-blank."""
    if not isinstance(raw, list) or len(raw) < 2:
        raise PayloadError("labels must list at least two labels")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        label = item if isinstance(item, str) else (item or {}).get("label")
        desc = (item or {}).get("description", "") if isinstance(item, Mapping) else ""
        if not _text(label):
            raise PayloadError(f"labels[{i}] has no label")
        label = label.strip()
        if label.lower() in seen:
            raise PayloadError(f"labels[{i}]: {label!r} is listed twice")
        seen.add(label.lower())
        out.append({"label": label, "description": _text(desc)})
    return out


def classify(payload: Mapping[str, Any], ep: Endpoint, context: StepContext) -> dict[str, Any]:
    labels = labels_of(payload.get("labels"))
    names = [lb["label"] for lb in labels]
    text = payload.get("text")
    if not _text(text):
        raise PayloadError("text is required and must not be blank")
    listing = "\n".join(
        f"- {lb['label']}" + (f": {lb['description']}" if lb["description"] else "") for lb in labels
    )
    system = (
        (_text(payload.get("instructions")) + "\n\n" if _text(payload.get("instructions")) else "")
        + "Classify the user's text into exactly one of these labels:\n"
        + listing
        + '\n\nAnswer with the label, exactly as written above, as {"label": "..."}.'
    )
    by_folded = {n.casefold(): n for n in names}

    def canonical(value: Any) -> tuple[Any, str | None]:
        found = by_folded.get(str(value["label"]).strip().casefold())
        if found is None:
            return value, f"/label: {value['label']!r} is not one of the labels"
        return {**value, "label": found}, None

    def answer(label: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["label"],
            "additionalProperties": False,
            "properties": {"label": label},
        }

    spec = Structured(
        name="classification",
        # any text, then the label is looked up regardless of case; strict mode lists them
        schema=answer({"type": "string"}),
        strict=answer({"type": "string", "enum": names}),
        system=system,
        user=text,
        forced_json=payload.get("mode") == "json",
        repair_rounds=_rounds(payload),
        check=canonical,
    )
    value, tokens, attempts = ask_structured(spec, payload, ep, context)
    return {
        "label": value["label"],
        "mode": spec.mode,
        "attempts": attempts,
        "usage": tokens.to_json(),
    }


ACTIONS = {"chat": chat, "extract": extract, "classify": classify, "agent_turn": agent_turn}
