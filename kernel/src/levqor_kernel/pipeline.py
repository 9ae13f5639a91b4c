"""The pipeline document (``"levqor": 1``), its JSON Schema and whole-pipeline validation.

A pipeline is validated as a whole before any step runs; every problem names its JSON
pointer and, where it belongs to a step, the step id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from . import ai
from .catalog import Catalog
from .conditions import problems as condition_problems
from .cron import CronError, parse_cron
from .errors import PipelineInvalid, Problem, TemplateError
from .pipeline_schema import (  # noqa: F401 - re-exported: the document's schema and limits
    APP_TRIGGER_SCHEMA,
    DEFAULT_MAX_ITEMS,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    INLINE_WAIT_SECONDS,
    MAX_CONCURRENCY,
    MAX_NESTING,
    MAX_STEPS,
    MAX_TOTAL_STEPS,
    MAX_WAIT_SECONDS,
    PIPELINE_SCHEMA,
    STEP_ID,
    STEP_TYPES,
)
from .templating import is_template, root_names, step_references

_APP_TRIGGER_VALIDATOR = Draft202012Validator(APP_TRIGGER_SCHEMA)

_VALIDATOR = Draft202012Validator(PIPELINE_SCHEMA)


def _never_retrieve(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


#: a user's schema refers within itself only: a ``$ref`` to a URL is never fetched
_LOCAL_REFS = Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


def _ptr(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _step_of(doc: Any, parts: list) -> str | None:
    """The id of the innermost step that the JSON pointer ``parts`` lies in."""
    found: str | None = None
    node, parent_is_list = doc, False
    for p in parts:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return found
        if parent_is_list and isinstance(node, Mapping):
            sid = node.get("id")
            if isinstance(sid, str):
                found = sid
            elif isinstance(p, int) and found is None:
                found = f"#{p}"
        parent_is_list = isinstance(node, list)
    return found


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests, counted up to ``limit`` + 1 (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def step_type(step: Mapping[str, Any]) -> str:
    """A step's kind: ``action`` unless its ``type`` says otherwise."""
    return str(step.get("type") or "action")


def child_blocks(step: Mapping[str, Any]) -> list[tuple[str, list]]:
    """The step lists nested in ``step``, with their path segment relative to it:
    ``paths[1]``, ``default``, ``[]`` (a loop body, one per item), ``notify`` (an approval's)
    and ``on_error``."""
    out: list[tuple[str, list]] = []
    kind = step_type(step)
    if kind in ("branch", "parallel"):
        out += [(f"paths[{i}]", p.get("steps") or []) for i, p in enumerate(step.get("paths") or [])]
        if kind == "branch" and step.get("default"):
            out.append(("default", step["default"]))
    elif kind == "for_each":
        out.append(("[]", step.get("steps") or []))
    elif kind == "wait" and isinstance(step.get("notify"), list):
        out.append(("notify", step["notify"]))
    if isinstance(step.get("on_error"), list):
        out.append(("on_error", step["on_error"]))
    return out


def walk_steps(steps: list, depth: int = 0) -> Any:
    """Every step in ``steps`` and nested in them, in document order (preorder), with its
    nesting depth."""
    for step in steps:
        yield step, depth
        for _seg, block in child_blocks(step):
            yield from walk_steps(block, depth + 1)


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


#: the names every template may read; loop bodies add ``item`` and ``index``, error paths ``error``
BASE_NAMES = ("trigger", "steps", "run")
_NAME_ORDER = ("trigger", "steps", "run", "item", "index", "error", "approval")


def _names_text(names: frozenset[str]) -> str:
    ordered = [n for n in _NAME_ORDER if n in names]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


class _Checker:
    """Walks a schema-valid document and collects what the schema cannot say: unknown
    connectors and actions, credentials, payloads, templates that read unknown names or steps
    that do not run before them, duplicate ids, and limits."""

    def __init__(self, catalog: Catalog, credentials: Mapping[str, str] | None) -> None:
        self.catalog = catalog
        self.credentials = credentials
        self.problems: list[Problem] = []
        self.seen: set[str] = set()

    def add(self, pointer: str, message: str, step: str | None = None) -> None:
        self.problems.append(Problem(pointer, message, step))

    def block(self, steps: list, base: str, visible: set[str], names: frozenset[str]) -> set[str]:
        """Check a list of steps; returns what the steps after it can refer to."""
        vis = set(visible)
        for i, step in enumerate(steps):
            self.step(step, f"{base}/{i}", vis, names)
            vis |= exported(step)
        return vis

    def step(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        if sid in self.seen:
            self.add(f"{base}/id", f"duplicate step id {sid!r}", sid)
        self.seen.add(sid)
        if "if" in step:
            self.condition(step["if"], f"{base}/if", vis, names, sid)
        kind = step_type(step)
        if kind == "action":
            self.action(step, base, vis, names)
        elif kind in ("branch", "parallel"):
            for j, path in enumerate(step["paths"]):
                if kind == "branch":
                    self.condition(path["if"], f"{base}/paths/{j}/if", vis, names, sid)
                self.block(path["steps"], f"{base}/paths/{j}/steps", vis, names)
            if step.get("default"):
                self.block(step["default"], f"{base}/default", vis, names)
        elif kind == "for_each":
            items = step["items"]
            if isinstance(items, str) and not is_template(items):
                self.add(f"{base}/items", "items must be an array or a template such as {{ trigger.rows }}", sid)
            self.templates(items, f"{base}/items", vis, names, sid)
            self.block(step["steps"], f"{base}/steps", vis, names | {"item", "index"})
        elif kind == "wait":
            self.wait(step, base, vis, names)
        elif kind == "agent":
            self.agent(step, base, vis, names)
        else:  # pipeline, stop: templated fields
            for key in ("input", "output", "message"):
                if key in step:
                    self.templates(step[key], f"{base}/{key}", vis, names, sid)
        if isinstance(step.get("on_error"), list):
            self.block(step["on_error"], f"{base}/on_error", vis, names | {"error"})

    def wait(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        kinds = [k for k in ("seconds", "until", "approval") if k in step]
        if len(kinds) != 1:
            self.add(base, "a wait step needs exactly one of seconds, until or approval", sid)
        seconds = step.get("seconds")
        if isinstance(seconds, str) and not is_template(seconds):
            self.add(f"{base}/seconds", "seconds must be a number or a template", sid)
        for key in ("seconds", "until", "approval"):
            if key in step:
                self.templates(step[key], f"{base}/{key}", vis, names, sid)
        if "notify" in step:
            if "approval" not in step:
                self.add(f"{base}/notify", "notify steps belong to an approval", sid)
            self.block(step["notify"], f"{base}/notify", vis, names | {"approval"})

    def agent(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        info = self.catalog.get(step["connector"])
        if info is None:
            self.add(f"{base}/connector", f"unknown connector {step['connector']!r} (not installed)", sid)
        elif not info.agent_action:
            self.add(f"{base}/connector", f"connector {info.name!r} cannot drive an agent", sid)
        else:
            self.credential(step, base, info)
        for key in ("system", "goal"):
            if key in step:
                self.templates(step[key], f"{base}/{key}", vis, names, sid)
        seen: set[str] = set()
        for j, tool in enumerate(step.get("tools", [])):
            where = f"{base}/tools/{j}"
            name = tool.get("name") or ai.tool_name(tool["connector"], tool["action"])
            if name in seen:
                self.add(f"{where}/name", f"two tools are named {name!r}", sid)
            seen.add(name)
            if not ai.is_tool_name(name):
                self.add(f"{where}/name", f"{name!r} is not a valid tool name (give one: a-z A-Z 0-9 _ -)", sid)
            tinfo = self.catalog.get(tool["connector"])
            action = tinfo.actions.get(tool["action"]) if tinfo is not None else None
            if tinfo is None:
                self.add(f"{where}/connector", f"unknown connector {tool['connector']!r} (not installed)", sid)
            elif action is None or action.hidden:
                self.add(f"{where}/action", f"connector {tinfo.name!r} has no action {tool['action']!r}", sid)
            else:
                self.credential({**tool, "id": sid}, where, tinfo)
                fixed = tool.get("payload") or {}
                props = action.payload.get("properties") or {}
                for key, value in fixed.items():
                    if key not in props:
                        if action.payload.get("additionalProperties") is False:
                            self.add(f"{where}/payload/{key}", f"{tool['action']!r} takes no field {key!r}", sid)
                        continue
                    if is_template(value) if isinstance(value, str) else False:
                        continue
                    for err in Draft202012Validator(props[key]).iter_errors(value):
                        self.add(f"{where}/payload/{key}", err.message, sid)
            self.templates(tool.get("payload") or {}, f"{where}/payload", vis, names, sid)

    def condition(self, cond: Any, base: str, vis: set[str], names: frozenset[str], sid: str) -> None:
        for where, message in condition_problems(cond):
            self.add(f"{base}{where}", message, sid)
        self.templates(cond, base, vis, names, sid)

    def action(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        info = self.catalog.get(step["connector"])
        if info is None:
            self.add(f"{base}/connector", f"unknown connector {step['connector']!r} (not installed)", sid)
        elif step["action"] not in info.actions:
            self.add(
                f"{base}/action",
                f"connector {info.name!r} has no action {step['action']!r} (has: {', '.join(sorted(info.actions))})",
                sid,
            )
        else:
            self.credential(step, base, info)
            # payload: templated strings are checked after rendering, at run time
            self.problems += self.catalog.validate_payload(
                info.name, step["action"], step["payload"], base=f"{base}/payload", step=sid, skip=is_template
            )
        self.templates(step["payload"], f"{base}/payload", vis, names, sid)

    def credential(self, step: Mapping[str, Any], base: str, info: Any) -> None:
        sid, cname = step["id"], step.get("credential")
        where = f"{base}/credential"
        if info.credentials is None:
            if cname:
                self.add(where, f"connector {info.name!r} takes no credential", sid)
        elif not cname:
            if info.credentials_required:
                self.add(where, f"connector {info.name!r} needs a credential", sid)
        elif self.credentials is not None:
            if cname not in self.credentials:
                self.add(where, f"credential {cname!r} does not exist", sid)
            elif self.credentials[cname] != info.name:
                self.add(
                    where, f"credential {cname!r} is for {self.credentials[cname]!r}, not {info.name!r}", sid
                )

    def templates(self, value: Any, base: str, vis: set[str], names: frozenset[str], sid: str) -> None:
        for parts, s in _walk_strings(value, []):
            if not is_template(s):
                continue
            where = f"{base}{_ptr(parts)}"
            try:
                roots = root_names(s)
                refs = step_references(s)
            except TemplateError as e:
                self.add(where, e.message, sid)
                continue
            unknown = roots - names
            if unknown:
                self.add(
                    where, f"unknown name(s) {', '.join(sorted(unknown))}: use {_names_text(names)}", sid
                )
            for r in sorted(refs):
                if r not in vis:
                    self.add(where, f"refers to step {r!r}, which is not an earlier step", sid)


def validate_app_trigger(
    trig: Any, catalog: Catalog, *, credentials: Mapping[str, str] | None = None
) -> list[Problem]:
    """Every problem with an ``app`` trigger on its own (pointers under ``/trigger``), as
    :func:`validate_pipeline` finds them in a whole document: for testing a trigger before
    the pipeline around it is saved."""
    problems = [
        Problem(_ptr(["trigger", *err.absolute_path]), err.message)
        for err in _APP_TRIGGER_VALIDATOR.iter_errors(trig)
    ]
    if problems:
        return sorted(problems, key=lambda p: p.pointer)
    return app_trigger_problems(trig, catalog, credentials)


def app_trigger_problems(
    trig: Mapping[str, Any], catalog: Catalog, credentials: Mapping[str, str] | None = None
) -> list[Problem]:
    """What is wrong with a schema-valid ``app`` trigger: an unknown connector or trigger, a
    config its schema refuses, a missing or mismatched credential (when ``credentials``, name ->
    connector, is given) and an interval on an instant trigger."""
    out: list[Problem] = []
    info = catalog.get(trig["connector"])
    if info is None:
        return [Problem("/trigger/connector", f"unknown connector {trig['connector']!r} (not installed)")]
    t = info.triggers.get(trig["trigger"])
    if t is None:
        has = ", ".join(sorted(info.triggers)) or "none"
        return [
            Problem(
                "/trigger/trigger",
                f"connector {info.name!r} has no trigger {trig['trigger']!r} (has: {has})",
            )
        ]
    for err in t.validator.iter_errors(trig.get("config", {})):
        out.append(Problem(_ptr(["trigger", "config", *err.absolute_path]), err.message))
    cname, where = trig.get("credential"), "/trigger/credential"
    if info.credentials is None:
        if cname:
            out.append(Problem(where, f"connector {info.name!r} takes no credential"))
    elif not cname:
        if info.credentials_required:
            out.append(Problem(where, f"connector {info.name!r} needs a credential"))
    elif credentials is not None:
        if cname not in credentials:
            out.append(Problem(where, f"credential {cname!r} does not exist"))
        elif credentials[cname] != info.name:
            out.append(
                Problem(where, f"credential {cname!r} is for {credentials[cname]!r}, not {info.name!r}")
            )
    if "interval" in trig and t.kind != "polling":
        out.append(Problem("/trigger/interval", "interval applies to polling triggers only"))
    return out


def exported(step: Mapping[str, Any]) -> set[str]:
    """The step ids the steps after ``step`` can read: its own, and those nested in its
    paths and error steps (a loop body's are per item, so only the loop's own; an approval's
    notify steps are its own business)."""
    out = {step["id"]}
    for seg, block in child_blocks(step):
        if seg not in ("[]", "notify"):
            for s in block:
                out |= exported(s)
    return out


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
    if _depth(doc, 4 * MAX_NESTING + 40) > 4 * MAX_NESTING + 40:
        return [Problem("", "pipeline nests too deeply")]
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

    if trig["type"] == "app":
        problems += app_trigger_problems(trig, catalog, credentials)

    counted = list(walk_steps([*doc["steps"], *doc.get("on_failure", [])]))
    too_many = len(counted) > MAX_TOTAL_STEPS
    if too_many:
        problems.append(Problem("/steps", f"a pipeline has at most {MAX_TOTAL_STEPS} steps, nested ones included"))
    if any(d >= MAX_NESTING for _s, d in counted):
        too_many = True
        problems.append(Problem("/steps", f"steps nest at most {MAX_NESTING} deep"))
    if too_many:
        return problems
    check = _Checker(catalog, credentials)
    names = frozenset(BASE_NAMES)
    after = check.block(doc["steps"], "/steps", set(), names)
    if doc.get("on_failure"):
        check.block(doc["on_failure"], "/on_failure", after, names | {"error"})
    if "input" in doc:
        try:
            Draft202012Validator.check_schema(doc["input"])
        except SchemaError as e:
            problems.append(Problem("/input", f"not a valid JSON Schema (draft 2020-12): {e.message}"))
        else:
            problems += _remote_ref_problems(doc["input"], "/input")
            problems += _schedule_input_problems(doc)
    for sid in doc.get("pinned", {}):
        if sid not in check.seen:
            check.add(f"/pinned/{sid}", f"pinned data for step {sid!r}, which is not in the pipeline")
    return problems + check.problems


def _remote_ref_problems(schema: Any, pointer: str) -> list[Problem]:
    """A ``$ref`` (or ``$dynamicRef``) in a user's schema must point within it (``#...``)."""
    if isinstance(schema, Mapping):
        found = [
            Problem(f"{pointer}/{key}", f"{key} must refer within the schema (start with #), not to {ref!r}")
            for key in ("$ref", "$dynamicRef")
            if isinstance(ref := schema.get(key), str) and not ref.startswith("#")
        ]
        for k, v in schema.items():
            found += _remote_ref_problems(v, pointer + _ptr([k]))
        return found
    if isinstance(schema, list):
        return [p for i, v in enumerate(schema) for p in _remote_ref_problems(v, f"{pointer}/{i}")]
    return []


def _schedule_input_problems(doc: Mapping[str, Any]) -> list[Problem]:
    """A schedule's runs start with its ``input`` and ``scheduled_at``: checked against the
    ``input`` schema when the document is saved (no person sees a scheduled run refused)."""
    if doc["trigger"]["type"] != "schedule":
        return []
    data = {**(doc["trigger"].get("input") or {}), "scheduled_at": "2026-01-01T09:00:00+00:00"}
    why = "a scheduled run's input (the trigger's input and scheduled_at) must fit the input schema"
    return [Problem("/trigger" + p.pointer, f"{why}: {p.message}") for p in validate_input(doc, data)]


def validate_input(doc: Mapping[str, Any], data: Any) -> list[Problem]:
    """What is wrong with ``data`` as the input of a run of ``doc`` (the document's ``input``
    schema; pointers under ``/input``): none when the document declares no schema."""
    schema = doc.get("input") if isinstance(doc, Mapping) else None
    if not isinstance(schema, Mapping):
        return []
    v = Draft202012Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER, registry=_LOCAL_REFS
    )
    try:
        errors = sorted(v.iter_errors(data), key=lambda e: list(e.absolute_path))
    except Unresolvable as e:  # a $ref to a URL (never fetched) or to nothing
        return [Problem("/input", f"the input schema's $ref {e.ref!r} cannot be resolved")]
    except RecursionError:  # a $ref that refers to itself
        return [Problem("/input", "the input schema's $ref refers to itself without end")]
    return [Problem(_ptr(["input", *err.absolute_path]), err.message) for err in errors][:50]


def assert_valid(
    doc: Any, catalog: Catalog, *, credentials: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`PipelineInvalid` listing every problem."""
    problems = validate_pipeline(doc, catalog, credentials=credentials)
    if problems:
        raise PipelineInvalid(problems)
