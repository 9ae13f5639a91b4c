"""The pipeline document (``"levqor": 1``), its JSON Schema and whole-pipeline validation.

A pipeline is validated as a whole before any step runs; every problem names its JSON
pointer and, where it belongs to a step, the step id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator

from .catalog import Catalog
from .cron import CronError, parse_cron
from .errors import PipelineInvalid, Problem, TemplateError
from .templating import is_template, root_names, step_references

STEP_ID = r"^[a-z][a-z0-9_]{0,39}$"
DEFAULT_RETRY = {"max_attempts": 5, "initial_delay": 1.0, "max_delay": 300.0}
DEFAULT_TIMEOUT = 30.0
MAX_STEPS = 100

PIPELINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://levqor.dev/schemas/pipeline-1.json",
    "title": "Levqor pipeline",
    "type": "object",
    "required": ["levqor", "trigger", "steps"],
    "additionalProperties": False,
    "properties": {
        "levqor": {"const": 1, "description": "Document format version"},
        "name": {"type": "string", "maxLength": 200},
        "description": {"type": "string", "maxLength": 5000},
        "notify_on_failure": {"type": "boolean", "description": "Email the owner when a run fails"},
        "trigger": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["manual", "webhook", "schedule"]}},
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "manual"}}},
                    "then": {"properties": {"type": True}, "additionalProperties": False},
                },
                {
                    "if": {"properties": {"type": {"const": "webhook"}}},
                    "then": {
                        "additionalProperties": False,
                        "properties": {
                            "type": True,
                            "wait": {
                                "type": "boolean",
                                "description": "Answer the webhook with the finished run",
                            },
                            "wait_seconds": {"type": "number", "minimum": 0, "maximum": 30},
                            "require_signature": {"type": "boolean"},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "schedule"}}},
                    "then": {
                        "required": ["cron"],
                        "additionalProperties": False,
                        "properties": {
                            "type": True,
                            "cron": {
                                "type": "string",
                                "maxLength": 200,
                                "description": "Standard 5-field cron (day-of-week 0 and 7 "
                                "are Sunday, 1-5 Monday to Friday) or an @-macro",
                            },
                            "timezone": {"type": "string", "maxLength": 64, "default": "UTC"},
                            "input": {"type": "object"},
                        },
                    },
                },
            ],
        },
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STEPS,
            "items": {
                "type": "object",
                "required": ["id", "connector", "action", "payload"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": STEP_ID},
                    "name": {"type": "string", "maxLength": 200},
                    "connector": {"type": "string", "maxLength": 40},
                    "action": {"type": "string", "maxLength": 40},
                    "credential": {"type": "string", "minLength": 1, "maxLength": 100},
                    "payload": {"type": "object"},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 900},
                    "retry": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
                            "initial_delay": {"type": "number", "minimum": 0, "maximum": 300},
                            "max_delay": {"type": "number", "minimum": 0, "maximum": 3600},
                        },
                    },
                },
            },
        },
    },
}

_VALIDATOR = Draft202012Validator(PIPELINE_SCHEMA)


def _ptr(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _step_of(doc: Any, parts: list) -> str | None:
    if len(parts) >= 2 and parts[0] == "steps" and isinstance(parts[1], int):
        try:
            sid = doc["steps"][parts[1]].get("id")
            return sid if isinstance(sid, str) else f"#{parts[1]}"
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
    return None


def check_cron(expr: str) -> str | None:
    """A message when ``expr`` is not standard cron (five fields or an @-macro; see ``cron``)."""
    try:
        parse_cron(expr)
    except CronError as e:
        return str(e)
    return None


def retry_policy(step: Mapping[str, Any]) -> dict[str, float]:
    return {**DEFAULT_RETRY, **(step.get("retry") or {})}


def _walk_strings(value: Any, parts: list) -> Any:
    if isinstance(value, str):
        yield parts, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, [*parts, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_strings(v, [*parts, i])


def validate_pipeline(
    doc: Any,
    catalog: Catalog,
    *,
    credentials: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem with ``doc``; an empty list means it can run.

    ``credentials`` maps the owner's credential names to their connector; when given,
    missing or mismatched credentials are problems too.
    """
    if not isinstance(doc, Mapping):
        return [Problem("", "pipeline must be a JSON object")]
    problems: list[Problem] = []
    for err in _VALIDATOR.iter_errors(doc):
        parts = list(err.absolute_path)
        problems.append(Problem(_ptr(parts), err.message, _step_of(doc, parts)))
    if problems:
        return sorted(problems, key=lambda p: p.pointer)

    trig = doc["trigger"]
    if trig["type"] == "schedule":
        msg = check_cron(trig["cron"])
        if msg:
            problems.append(Problem("/trigger/cron", msg))
        tz = trig.get("timezone", "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("/trigger/timezone", f"unknown time zone {tz!r}"))

    seen: set[str] = set()
    for i, step in enumerate(doc["steps"]):
        sid = step["id"]
        base = f"/steps/{i}"
        if sid in seen:
            problems.append(Problem(f"{base}/id", f"duplicate step id {sid!r}", sid))
        info = catalog.get(step["connector"])
        if info is None:
            problems.append(
                Problem(
                    f"{base}/connector",
                    f"unknown connector {step['connector']!r} (not installed)",
                    sid,
                )
            )
        elif step["action"] not in info.actions:
            problems.append(
                Problem(
                    f"{base}/action",
                    f"connector {info.name!r} has no action {step['action']!r} (has: {', '.join(sorted(info.actions))})",
                    sid,
                )
            )
        else:
            if info.credentials is None and step.get("credential"):
                problems.append(
                    Problem(f"{base}/credential", f"connector {info.name!r} takes no credential", sid)
                )
            if info.credentials is not None:
                cname = step.get("credential")
                if not cname and info.credentials_required:
                    problems.append(
                        Problem(
                            f"{base}/credential", f"connector {info.name!r} needs a credential", sid
                        )
                    )
                elif cname and credentials is not None:
                    if cname not in credentials:
                        problems.append(
                            Problem(
                                f"{base}/credential", f"credential {cname!r} does not exist", sid
                            )
                        )
                    elif credentials[cname] != info.name:
                        problems.append(
                            Problem(
                                f"{base}/credential",
                                f"credential {cname!r} is for {credentials[cname]!r}, not {info.name!r}",
                                sid,
                            )
                        )
            # payload: templated strings are checked after rendering, at run time
            problems += catalog.validate_payload(
                info.name,
                step["action"],
                step["payload"],
                base=f"{base}/payload",
                step=sid,
                skip=is_template,
            )
        for parts, s in _walk_strings(step["payload"], ["payload"]):
            if not is_template(s):
                continue
            where = f"{base}{_ptr(parts)}"
            try:
                roots = root_names(s)
                refs = step_references(s)
            except TemplateError as e:
                problems.append(Problem(where, e.message, sid))
                continue
            unknown = roots - {"trigger", "steps", "run"}
            if unknown:
                problems.append(
                    Problem(
                        where,
                        f"unknown name(s) {', '.join(sorted(unknown))}: use trigger, steps or run",
                        sid,
                    )
                )
            for r in sorted(refs):
                if r not in seen:
                    problems.append(
                        Problem(where, f"refers to step {r!r}, which is not an earlier step", sid)
                    )
        seen.add(sid)
    return problems


def assert_valid(
    doc: Any, catalog: Catalog, *, credentials: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`PipelineInvalid` listing every problem."""
    problems = validate_pipeline(doc, catalog, credentials=credentials)
    if problems:
        raise PipelineInvalid(problems)
