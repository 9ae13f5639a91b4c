"""The connector catalog: what every installed plugin says it offers, checked once.

Validation, the planner, the dashboard forms and the marketplace all read this one catalog.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .errors import Problem

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"

#: The JSON Schema one connector description (an item of ``describe_schema()``) must satisfy.
CONNECTOR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "title", "description", "actions"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "title": {"type": "string", "minLength": 1, "maxLength": 80},
        "description": {"type": "string", "minLength": 1, "maxLength": 2000},
        "icon": {"type": "string", "maxLength": 20000},
        "categories": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-z][a-z0-9-]*$"},
        },
        "credentials": {"type": ["object", "null"]},
        "credentials_required": {
            "type": "boolean",
            "description": "false when a step may omit the credential (default true when a credentials schema is given)",
        },
        "docs_url": {"type": "string"},
        "endpoint_field": {
            "type": "string",
            "minLength": 1,
            "description": "the credential field that holds the URL the connector calls (a "
            "webhook URL): the contract kit points it at its fake server",
        },
        "kernel": {
            "type": "string",
            "description": "supported levqor-kernel versions, PEP 440 specifier",
        },
        "cooperative": {
            "type": "boolean",
            "description": "every action returns by context.deadline on its own, so the runner may call it "
            "inline instead of on a watchdog thread",
        },
        "oauth2": {
            "type": "object",
            "required": ["authorization_url", "token_url"],
            "additionalProperties": False,
            "description": "the OAuth2 variant of the credentials: the host runs the authorization "
            "code flow (with PKCE unless pkce is false) and stores the token as an OAuth2 credential "
            "(levqor_kernel.oauth.OAUTH2_CREDENTIALS), which the credentials schema must accept",
            "properties": {
                "authorization_url": {"type": "string", "pattern": "^https?://"},
                "token_url": {"type": "string", "pattern": "^https?://"},
                "scopes": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "scope_separator": {"type": "string", "default": " "},
                "pkce": {"type": "boolean", "default": True},
                "extra_params": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "added to the authorization URL (access_type=offline, prompt=consent, owner=user)",
                },
                "client_auth": {
                    "enum": ["body", "basic"],
                    "default": "body",
                    "description": "how the client id and secret reach the token endpoint: form fields, or HTTP Basic",
                },
                "token_body": {
                    "enum": ["form", "json"],
                    "default": "form",
                    "description": "how the token request's parameters are sent: a form "
                    "(application/x-www-form-urlencoded, RFC 6749), or a JSON object (Notion)",
                },
                "account": {
                    "type": "string",
                    "description": "JSON pointer into the token response to the account name shown to "
                    "the user (/team/name); the oauth_credentials hook may set it instead",
                },
                "title": {"type": "string", "description": "what the Connect button says"},
            },
        },
        "agent": {
            "type": "object",
            "required": ["action"],
            "additionalProperties": False,
            "description": "this connector drives agent steps: the flow calls action once per model "
            "turn (levqor_kernel.ai.AGENT_TURN_PAYLOAD in, AGENT_TURN_OUTPUT out)",
            "properties": {"action": {"type": "string", "pattern": NAME_PATTERN}},
        },
        "rates": {
            "type": "object",
            "description": "token prices of the metered actions, in credits per million tokens, by "
            "model (\"*\": any other model); operators override them with LEVQOR_MODEL_RATES",
            "additionalProperties": {
                "type": "object",
                "required": ["input", "output"],
                "additionalProperties": False,
                "properties": {
                    "input": {"type": "number", "minimum": 0},
                    "output": {"type": "number", "minimum": 0},
                },
            },
        },
        "triggers": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["title", "kind", "config", "output", "sample"],
                "additionalProperties": False,
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "kind": {"enum": ["polling", "instant"]},
                    "config": {"type": "object", "description": "JSON Schema of the trigger's settings"},
                    "output": {"type": "object", "description": "JSON Schema of one item (what a run sees as trigger)"},
                    "sample": {"type": "object", "description": "one item, as the output schema describes it"},
                    "example": {"type": "object", "description": "a config that validates"},
                    "webhook": {
                        "enum": ["trigger", "connector"],
                        "default": "trigger",
                        "description": "instant only: a webhook URL per registration (Telegram's "
                        "setWebhook), or one URL for the whole connector, items routed by their route "
                        "(Slack's Events API)",
                    },
                },
            },
        },
        "actions": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["title", "payload", "output", "example"],
                "additionalProperties": False,
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "payload": {"type": "object"},
                    "output": {"type": "object"},
                    "example": {"type": "object"},
                    "price": {"type": "integer", "minimum": 0},
                    "minutes_saved": {"type": "number", "minimum": 0},
                    "idempotent": {"type": "boolean"},
                    "writes": {
                        "type": "boolean",
                        "description": "true when the action changes something upstream "
                        "(sends, posts, creates, appends): the builder warns before testing it, "
                        "and an agent asks for approval before calling it (unless told not to); "
                        "unset counts as writing",
                    },
                    "usage": {
                        "enum": ["tokens"],
                        "description": "metered by tokens: the output carries usage "
                        "(levqor_kernel.ai.USAGE_SCHEMA), recorded per step and priced at the "
                        "connector's rates",
                    },
                    "hidden": {
                        "type": "boolean",
                        "description": "not offered as a step of its own (an agent's turn action)",
                    },
                    "options": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "description": "payload fields whose choices the load_options hook lists "
                        "(a model list, an MCP server's tools)",
                    },
                },
            },
        },
    },
}

_CONNECTOR_VALIDATOR = Draft202012Validator(CONNECTOR_SCHEMA)


def _validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass
class ActionInfo:
    """One action of a connector."""

    connector: str
    name: str
    title: str
    description: str
    payload: dict[str, Any]
    output: dict[str, Any]
    example: dict[str, Any]
    price: int = 1
    minutes_saved: float = 0.0
    idempotent: bool | None = None
    writes: bool | None = None
    #: ``"tokens"`` when the output carries token usage (:mod:`levqor_kernel.ai`)
    usage: str | None = None
    hidden: bool = False
    options: list[str] = field(default_factory=list)
    _validator: Draft202012Validator | None = field(default=None, repr=False)

    @property
    def metered(self) -> bool:
        """Whether the action's output carries token usage."""
        return self.usage == "tokens"

    @property
    def validator(self) -> Draft202012Validator:
        """The payload schema's validator, compiled on first use."""
        if self._validator is None:
            self._validator = _validator_for(self.payload)
        return self._validator

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "payload": self.payload,
            "output": self.output,
            "example": self.example,
            "price": self.price,
            "minutes_saved": self.minutes_saved,
            "idempotent": self.idempotent,
            "writes": self.writes,
            "usage": self.usage,
            "hidden": self.hidden,
            "options": list(self.options),
        }


@dataclass
class TriggerInfo:
    """One trigger of a connector."""

    connector: str
    name: str
    title: str
    description: str
    kind: str
    config: dict[str, Any]
    output: dict[str, Any]
    sample: dict[str, Any]
    example: dict[str, Any] = field(default_factory=dict)
    webhook: str = "trigger"
    _validator: Draft202012Validator | None = field(default=None, repr=False)

    @property
    def validator(self) -> Draft202012Validator:
        """The config schema's validator, compiled on first use."""
        if self._validator is None:
            self._validator = _validator_for(self.config)
        return self._validator

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "kind": self.kind,
            "config": self.config,
            "output": self.output,
            "sample": self.sample,
            "example": self.example,
            "webhook": self.webhook if self.kind == "instant" else None,
        }


@dataclass
class ConnectorInfo:
    """One connector, with the plugin and distribution that provide it."""

    name: str
    title: str
    description: str
    icon: str
    categories: list[str]
    credentials: dict[str, Any] | None
    actions: dict[str, ActionInfo]
    plugin_name: str
    plugin: Any = field(repr=False)
    dist: str | None = None
    version: str | None = None
    kernel: str | None = None
    docs_url: str | None = None
    cooperative: bool = False
    credentials_required: bool = True
    endpoint_field: str | None = None
    triggers: dict[str, TriggerInfo] = field(default_factory=dict)
    oauth2: dict[str, Any] | None = None
    #: the action an agent step of this connector calls per model turn (None: no agent)
    agent_action: str | None = None
    #: credits per million tokens by model (``"*"``: any other), before operator overrides
    rates: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "icon": self.icon,
            "categories": list(self.categories),
            "credentials": self.credentials,
            "credentials_required": self.credentials is not None and self.credentials_required,
            "actions": {n: a.to_json() for n, a in self.actions.items()},
            "triggers": {n: t.to_json() for n, t in self.triggers.items()},
            "oauth2": self.oauth2,
            "agent": {"action": self.agent_action} if self.agent_action else None,
            "rates": copy.deepcopy(self.rates),
            "plugin": self.plugin_name,
            "distribution": self.dist,
            "version": self.version,
            "kernel": self.kernel,
            "docs_url": self.docs_url,
            "endpoint_field": self.endpoint_field,
        }


def _check_schema(schema: Any, where: str) -> list[str]:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        return [f"{where} is not a valid JSON Schema (draft 2020-12): {e.message}"]
    return []


class _CheckCache:
    """Content-addressed memory of descriptions already found valid.

    Checking schemas against the draft 2020-12 metaschema costs about a millisecond each, so
    hundreds of plugins would dominate start-up. A description's validity depends only on its
    content and the kernel and jsonschema versions, so the SHA-256 of its canonical JSON is
    remembered in memory and in a file in the folder the plugin manager is given
    (``schema_cache_dir`` of :func:`~levqor_kernel.plugins.make_plugin_manager`; None: memory
    only). Invalid descriptions are never cached.
    """

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self._loaded_from: str | None = None
        self._dirty = False

    @staticmethod
    def _path(base: str | None) -> str | None:
        import os

        if not base:
            return None
        from importlib.metadata import version

        from . import __version__

        ver = version("jsonschema")
        return os.path.join(base, f"schema-checks-{__version__}-{ver}.txt")

    def load(self, base: str | None) -> None:
        path = self._path(base)
        if path is None or path == self._loaded_from:
            return
        self._loaded_from = path
        try:
            with open(path, encoding="ascii") as f:
                self.valid.update(line.strip() for line in f if len(line.strip()) == 64)
        except OSError:
            pass

    def save(self, base: str | None) -> None:
        import os
        import tempfile

        path = self._path(base)
        if path is None or not self._dirty:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write("\n".join(sorted(self.valid)))
            os.replace(tmp, path)
            self._dirty = False
        except OSError:
            pass

    @staticmethod
    def key(desc: Any) -> str | None:
        import hashlib
        import json

        try:
            data = json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(data.encode()).hexdigest()


CHECK_CACHE = _CheckCache()


def check_description(desc: Any) -> list[str]:
    """Every problem with one connector description; an empty list when it is valid."""
    key = CHECK_CACHE.key(desc)
    if key is not None and key in CHECK_CACHE.valid:
        return []
    problems = _check_description(desc)
    if not problems and key is not None:
        CHECK_CACHE.valid.add(key)
        CHECK_CACHE._dirty = True
    return problems


def _check_description(desc: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(desc, Mapping):
        return [f"connector description must be an object, got {type(desc).__name__}"]
    for err in sorted(_CONNECTOR_VALIDATOR.iter_errors(desc), key=lambda e: list(e.absolute_path)):
        ptr = "/" + "/".join(str(p) for p in err.absolute_path)
        problems.append(f"{ptr}: {err.message}")
    if problems:
        return problems
    name = desc["name"]
    if desc.get("credentials") is not None:
        problems += _check_schema(desc["credentials"], f"{name}: credentials schema")
    field_name = desc.get("endpoint_field")
    if field_name is not None:
        creds = desc.get("credentials")
        props = creds.get("properties") if isinstance(creds, Mapping) else None
        if not isinstance(props, Mapping) or field_name not in props:
            problems.append(
                f"{name}: endpoint_field {field_name!r} is not a property of the credentials schema"
            )
    if desc.get("oauth2") is not None and not problems:
        from .oauth import sample_oauth_credentials

        creds = desc.get("credentials")
        if creds is None:
            problems.append(f"{name}: oauth2 is declared but there is no credentials schema")
        else:
            sample = sample_oauth_credentials()
            if not Draft202012Validator(creds).is_valid(sample):
                problems.append(
                    f"{name}: the credentials schema does not accept an OAuth2 credential "
                    "(add levqor_kernel.oauth.OAUTH2_CREDENTIALS as a variant: anyOf)"
                )
    for tname, trig in (desc.get("triggers") or {}).items():
        where = f"{name}.{tname} (trigger)"
        bad = []
        for key in ("config", "output"):
            bad += _check_schema(trig[key], f"{where}: {key} schema")
        if not bad:
            for err in Draft202012Validator(trig["output"]).iter_errors(trig["sample"]):
                bad.append(f"{where}: sample does not match the output schema: {err.message}")
            if "example" in trig:
                v = Draft202012Validator(trig["config"])
                for err in v.iter_errors(trig["example"]):
                    bad.append(f"{where}: example does not match the config schema: {err.message}")
        if trig.get("webhook") and trig["kind"] != "instant":
            bad.append(f"{where}: webhook applies to instant triggers only")
        problems += bad
    agent = desc.get("agent")
    if agent is not None:
        turn = desc["actions"].get(agent["action"])
        if turn is None:
            problems.append(f"{name}: agent action {agent['action']!r} is not one of its actions")
        elif turn.get("usage") != "tokens":
            problems.append(f"{name}: agent action {agent['action']!r} must be metered (usage: tokens)")
    for aname, action in desc["actions"].items():
        where = f"{name}.{aname}"
        props = action["payload"].get("properties")
        for opt in action.get("options", []):
            if not isinstance(props, Mapping) or opt not in props:
                problems.append(f"{where}: options field {opt!r} is not a payload property")
        if action.get("usage") == "tokens":
            oprops = action["output"].get("properties")
            if not isinstance(oprops, Mapping) or "usage" not in oprops:
                problems.append(f"{where}: a metered action's output schema must have usage")
        for key in ("payload", "output"):
            problems += _check_schema(action[key], f"{where}: {key} schema")
        if not problems:
            v = Draft202012Validator(
                action["payload"], format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            for err in v.iter_errors(action["example"]):
                problems.append(
                    f"{where}: example does not match the payload schema: {err.message}"
                )
    return problems


class Catalog:
    """All installed connectors by name."""

    def __init__(self, connectors: Iterable[ConnectorInfo] = ()) -> None:
        self.connectors: dict[str, ConnectorInfo] = {}
        for c in connectors:
            self.connectors[c.name] = c

    def __contains__(self, name: object) -> bool:
        return name in self.connectors

    def __iter__(self):
        return iter(self.connectors.values())

    def __len__(self) -> int:
        return len(self.connectors)

    def get(self, name: str) -> ConnectorInfo | None:
        return self.connectors.get(name)

    def action(self, connector: str, action: str) -> ActionInfo | None:
        c = self.connectors.get(connector)
        return None if c is None else c.actions.get(action)

    def trigger(self, connector: str, trigger: str) -> TriggerInfo | None:
        c = self.connectors.get(connector)
        return None if c is None else c.triggers.get(trigger)

    def validate_payload(
        self,
        connector: str,
        action: str,
        payload: Any,
        *,
        base: str = "/payload",
        step: str | None = None,
        skip: Any = None,
    ) -> list[Problem]:
        """Validate ``payload`` against the action's JSON Schema.

        ``skip(instance)`` returning true ignores errors on that instance (used for values
        that are still templates before rendering).
        """
        a = self.action(connector, action)
        if a is None:
            return [Problem(base, f"unknown action {connector}.{action}", step)]
        out = []
        for err in a.validator.iter_errors(payload):
            if skip is not None and skip(err.instance):
                continue
            ptr = base + "".join(
                "/" + str(p).replace("~", "~0").replace("/", "~1") for p in err.absolute_path
            )
            out.append(Problem(ptr, err.message, step))
        return out

    def to_json(self) -> dict[str, Any]:
        """The catalog as plain JSON (what the API and the planner see)."""
        return {
            "connectors": {
                n: copy.deepcopy(c.to_json()) for n, c in sorted(self.connectors.items())
            }
        }


def connector_from_description(
    desc: Mapping[str, Any], *, plugin_name: str, plugin: Any, dist: str | None, version: str | None
) -> ConnectorInfo:
    actions = {
        n: ActionInfo(
            connector=desc["name"],
            name=n,
            title=a["title"],
            description=a.get("description", ""),
            payload=a["payload"],
            output=a["output"],
            example=a["example"],
            price=a.get("price", 1),
            minutes_saved=a.get("minutes_saved", 0),
            idempotent=a.get("idempotent"),
            writes=a.get("writes"),
            usage=a.get("usage"),
            hidden=bool(a.get("hidden", False)),
            options=list(a.get("options", [])),
        )
        for n, a in desc["actions"].items()
    }
    triggers = {
        n: TriggerInfo(
            connector=desc["name"],
            name=n,
            title=t["title"],
            description=t.get("description", ""),
            kind=t["kind"],
            config=t["config"],
            output=t["output"],
            sample=t["sample"],
            example=t.get("example", {}),
            webhook=t.get("webhook", "trigger"),
        )
        for n, t in (desc.get("triggers") or {}).items()
    }
    return ConnectorInfo(
        name=desc["name"],
        title=desc["title"],
        description=desc["description"],
        icon=desc.get("icon", ""),
        categories=list(desc.get("categories", [])),
        credentials=desc.get("credentials"),
        actions=actions,
        plugin_name=plugin_name,
        plugin=plugin,
        dist=dist,
        version=version,
        kernel=desc.get("kernel"),
        docs_url=desc.get("docs_url"),
        cooperative=bool(desc.get("cooperative", False)),
        credentials_required=bool(desc.get("credentials_required", True)),
        endpoint_field=desc.get("endpoint_field"),
        triggers=triggers,
        oauth2=copy.deepcopy(desc.get("oauth2")),
        agent_action=(desc.get("agent") or {}).get("action"),
        rates=copy.deepcopy(desc.get("rates") or {}),
    )
