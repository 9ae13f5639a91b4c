"""The ``openai`` connector: language-model steps on OpenAI or any OpenAI-compatible server.

Actions (each metered by tokens, reading nothing upstream but the model):

* ``chat``: a system and a user message (templates), answered with text;
* ``extract``: an answer that validates against a JSON Schema, or the step fails closed;
* ``classify``: one of a list of labels, for a branch condition;
* ``agent_turn`` (hidden): one model turn of an agent step (levqor_kernel.ai).

How requests are sent, which key and server a step uses and how errors map:
:mod:`levqor_openai.client`; the actions themselves: :mod:`levqor_openai.actions`; token rates:
:data:`RATES` (documented in the plugin's README).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from levqor_kernel import hookimpl
from levqor_kernel.ai import AGENT_TURN_OUTPUT, AGENT_TURN_PAYLOAD, USAGE_SCHEMA
from levqor_kernel.context import StepContext
from levqor_kernel.errors import PayloadError

from .actions import ACTIONS, MAX_REPAIR_ROUNDS, labels_of, schema_problem
from .client import endpoint, list_models

NAME = "openai"

#: credits per million tokens, by model: the provider's list price in US dollars per million
#: tokens times 1000 (one credit stands for a tenth of a US cent); ``"*"`` is any other model,
#: at the price of gpt-4o. Operators override them with LEVQOR_MODEL_RATES.
RATES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input": 2500, "output": 10000},
    "gpt-4o-mini": {"input": 150, "output": 600},
    "gpt-4.1": {"input": 2000, "output": 8000},
    "gpt-4.1-mini": {"input": 400, "output": 1600},
    "gpt-4.1-nano": {"input": 100, "output": 400},
    "o3": {"input": 2000, "output": 8000},
    "o4-mini": {"input": 1100, "output": 4400},
    "gpt-3.5-turbo": {"input": 500, "output": 1500},
    "*": {"input": 2500, "output": 10000},
}

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect width='24' height='24' rx='5' fill='%23111'/%3E"
    "%3Cpath d='M12 5.5a3 3 0 0 1 2.8 2l.2.6.6-.1a3 3 0 0 1 2.6 4.9l-.4.5.3.5a3 3 0 0 1-3.6 "
    "4.2l-.6-.2-.4.5a3 3 0 0 1-5-1.3l-.1-.6h-.7a3 3 0 0 1-1.7-5.3l.5-.4-.2-.6A3 3 0 0 1 "
    "10 5.9z' fill='none' stroke='%23fff' stroke-width='1.4'/%3E%3C/svg%3E"
)

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "api_key": {
            "type": "string",
            "writeOnly": True,
            "title": "API key",
            "description": "Your OpenAI API key (sk-...), or the key of your OpenAI-compatible "
            "server. Leave empty for a local server that needs none.",
        },
        "base_url": {
            "type": "string",
            "format": "uri",
            "pattern": "^https?://",
            "title": "Base URL",
            "description": "Only for an OpenAI-compatible server (vLLM, Ollama, a proxy): its "
            "API base such as http://ollama.internal:11434/v1. Empty: https://api.openai.com/v1. "
            "Requests to it pass the SSRF guard.",
        },
        "organization": {
            "type": "string",
            "title": "Organization",
            "description": "Optional OpenAI organization id (org-...).",
        },
    },
}

_MODEL = {
    "type": "string",
    "minLength": 1,
    "title": "Model",
    "description": "The model to ask, such as gpt-4o-mini (the list comes from the server's "
    "/models when it answers).",
}
_TEMPERATURE = {
    "type": "number",
    "minimum": 0,
    "maximum": 2,
    "title": "Temperature",
    "description": "0 for the most predictable answers, up to 2 for the most varied.",
}
_MAX_TOKENS = {
    "type": "integer",
    "minimum": 1,
    "title": "Max tokens",
    "description": "The longest answer, in tokens.",
}
_MODE = {
    "enum": ["auto", "json"],
    "default": "auto",
    "title": "Mode",
    "description": "auto: strict structured output when the schema allows it, else JSON mode; "
    "json: always JSON mode (servers without json_schema support).",
}
_REPAIR = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_REPAIR_ROUNDS,
    "default": 1,
    "title": "Repair rounds",
    "description": "How often an answer that does not validate is sent back with its problems "
    "before the step fails.",
}
_INSTRUCTIONS = {
    "type": "string",
    "title": "Instructions",
    "description": "Optional system instructions (a template).",
}
_TEXT = {
    "type": "string",
    "minLength": 1,
    "title": "Text",
    "description": "The text to work on (a template such as {{ trigger.body }}).",
}
_USAGE_OUT = {**USAGE_SCHEMA, "description": "The tokens the step used"}
_ATTEMPTS = {"type": "integer", "minimum": 1, "description": "Requests made (1 + repairs)"}
_MODE_OUT = {"enum": ["strict", "json"], "description": "How the answer was asked for"}

CHAT = {
    "title": "Ask a model",
    "description": "Send a prompt (and optional system instructions) to a language model and "
    "get its text answer.",
    "payload": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": False,
        "properties": {
            "model": _MODEL,
            "system": {
                "type": "string",
                "title": "System message",
                "description": "How the model should behave (a template).",
            },
            "prompt": {
                "type": "string",
                "minLength": 1,
                "title": "User message",
                "description": "What to ask (a template such as {{ trigger.question }}).",
            },
            "temperature": _TEMPERATURE,
            "max_tokens": _MAX_TOKENS,
        },
    },
    "output": {
        "type": "object",
        "required": ["text", "usage"],
        "properties": {
            "text": {"type": "string", "description": "The model's answer"},
            "finish_reason": {
                "type": ["string", "null"],
                "description": "stop, or length when max_tokens cut the answer",
            },
            "model": {"type": "string", "description": "The model that answered"},
            "usage": _USAGE_OUT,
        },
    },
    "example": {
        "model": "gpt-4o-mini",
        "system": "You answer customers of an online shop briefly and politely.",
        "prompt": "Write a two-line reply to: {{ trigger.message }}",
        "temperature": 0.3,
    },
}

EXTRACT = {
    "title": "Extract data",
    "description": "Have a model read a text and answer with data shaped by a JSON Schema; an "
    "answer that does not fit fails the step.",
    "payload": {
        "type": "object",
        "required": ["model", "text", "schema"],
        "additionalProperties": False,
        "properties": {
            "model": _MODEL,
            "text": _TEXT,
            "schema": {
                "type": "object",
                "title": "Answer schema",
                "description": "The JSON Schema the answer must validate against.",
            },
            "instructions": _INSTRUCTIONS,
            "mode": _MODE,
            "repair_rounds": _REPAIR,
            "temperature": _TEMPERATURE,
            "max_tokens": _MAX_TOKENS,
        },
    },
    "output": {
        "type": "object",
        "required": ["data", "mode", "usage"],
        "properties": {
            "data": {"description": "The answer, valid against the schema"},
            "mode": _MODE_OUT,
            "attempts": _ATTEMPTS,
            "usage": _USAGE_OUT,
        },
    },
    "example": {
        "model": "gpt-4o-mini",
        "text": "{{ trigger.email_body }}",
        "instructions": "Extract the order from the customer's email.",
        "schema": {
            "type": "object",
            "required": ["order_id", "items"],
            "properties": {
                "order_id": {"type": "string"},
                "items": {"type": "array", "items": {"type": "string"}},
                "urgent": {"type": "boolean"},
            },
        },
    },
}

CLASSIFY = {
    "title": "Classify text",
    "description": "Have a model pick one label for a text; branch on "
    "{{ steps.<id>.output.label }}.",
    "payload": {
        "type": "object",
        "required": ["model", "text", "labels"],
        "additionalProperties": False,
        "properties": {
            "model": _MODEL,
            "text": _TEXT,
            "labels": {
                "type": "array",
                "minItems": 2,
                "maxItems": 100,
                "title": "Labels",
                "description": "The labels to choose from, each a string or {label, description}.",
                "items": {
                    "anyOf": [
                        {"type": "string", "minLength": 1},
                        {
                            "type": "object",
                            "required": ["label"],
                            "additionalProperties": False,
                            "properties": {
                                "label": {"type": "string", "minLength": 1},
                                "description": {"type": "string"},
                            },
                        },
                    ]
                },
            },
            "instructions": _INSTRUCTIONS,
            "mode": _MODE,
            "repair_rounds": _REPAIR,
            "temperature": _TEMPERATURE,
        },
    },
    "output": {
        "type": "object",
        "required": ["label", "usage"],
        "properties": {
            "label": {"type": "string", "description": "One of the labels, as written"},
            "mode": _MODE_OUT,
            "attempts": _ATTEMPTS,
            "usage": _USAGE_OUT,
        },
    },
    "example": {
        "model": "gpt-4o-mini",
        "text": "{{ trigger.message }}",
        "labels": [
            {"label": "refund", "description": "the customer wants their money back"},
            {"label": "question", "description": "anything else"},
        ],
    },
}

AGENT_TURN = {
    "title": "Agent turn",
    "description": "One model turn of an agent step: the conversation and the tools on offer "
    "in, the answer or the tool calls out.",
    "payload": AGENT_TURN_PAYLOAD,
    "output": AGENT_TURN_OUTPUT,
    "example": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]},
    "hidden": True,
}


def _metered(action: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **action,
        "price": 1,
        "minutes_saved": extra.get("minutes_saved", 2),
        "idempotent": True,
        "writes": False,
        "usage": "tokens",
        "options": ["model"],
    }


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": NAME,
            "title": "OpenAI",
            "description": "Ask language models on OpenAI or any OpenAI-compatible server "
            "(vLLM, Ollama, a proxy): answer, extract data, classify, and drive agent steps.",
            "icon": ICON,
            "categories": ["ai"],
            "cooperative": True,  # every request goes through context.http, bounded by the deadline
            "docs_url": "https://platform.openai.com/docs/api-reference/chat",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "credentials_required": False,
            "agent": {"action": "agent_turn"},
            "rates": RATES,
            "actions": {
                "chat": _metered(CHAT),
                "extract": _metered(EXTRACT, minutes_saved=3),
                "classify": _metered(CLASSIFY),
                "agent_turn": _metered(AGENT_TURN, minutes_saved=0),
            },
        }
    ]


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != NAME:
        return None
    if action == "extract":
        problem = schema_problem(payload.get("schema"))
        return [problem] if problem else []
    if action == "classify":
        try:
            labels_of(payload.get("labels"))
        except PayloadError as e:
            return [e.message]
    return []


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    fn = ACTIONS.get(action)
    if connector != NAME or fn is None:
        raise PayloadError(f"unknown action {connector}.{action}")
    ep = endpoint(credentials, context.env)
    context.http.add_secrets(ep.api_key)
    return fn(payload, ep, context)


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """``GET /models`` with the key: no side effects, and it proves the key and the server."""
    if connector != NAME:
        return None
    ep = endpoint(credentials, context.env)
    context.http.add_secrets(ep.api_key)
    models = list_models(context, ep)
    return {"ok": True, "account": ep.base_url, "models": len(models)}


@hookimpl
def load_options(
    connector: str,
    action: str,
    field: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> list[dict[str, Any]] | None:
    """The ``model`` choices: the ids the server's ``GET /models`` lists, sorted."""
    if connector != NAME or field != "model":
        return None
    ep = endpoint(credentials if isinstance(credentials, Mapping) else None, context.env)
    context.http.add_secrets(ep.api_key)
    return [{"value": m, "label": m} for m in list_models(context, ep)]
