"""Levqor's model steps and AI workflow builder, on OpenAI or any OpenAI-compatible server.

The ``openai`` connector (model actions ``chat``, ``extract``, ``classify`` and the agent's
``agent_turn``) lives in :mod:`levqor_openai.connector`; its hooks are imported here, since this
module is the plugin object.

The planner implements the kernel hook ``plan_pipeline`` with the official ``openai`` package
(Chat Completions), so OpenAI and any OpenAI-compatible server (a local model server, a proxy)
work.

Configuration (read from the host's environment, ``options["env"]``):

``OPENAI_API_KEY``            required; without it the hook answers ``not_configured`` (503)
``OPENAI_BASE_URL``           default ``https://api.openai.com/v1``
``LEVQOR_PLANNER_MODEL``      default ``gpt-4o-mini``
``LEVQOR_PLANNER_MODE``       ``auto`` (strict structured outputs when the schema fits, else JSON
                              mode) or ``json`` (always JSON mode, for servers without
                              ``json_schema`` support)
``LEVQOR_PLANNER_TIMEOUT``    seconds per request, default 60
``LEVQOR_PLANNER_MAX_RETRIES`` the client's own retries on 429/5xx/timeouts, default 2
``LEVQOR_PLANNER_REPAIR_ROUNDS`` default 2 (the host passes ``options["repair_rounds"]``)

The contract with the host (documented in docs/ai-builder.md and docs/connectors.md): the hook
never raises for an expected failure. It returns either
``{"pipeline": {...}, "explanation": "...", "warnings": [...], "planner": {...}}`` or
``{"error": {"status": <HTTP status>, "code": "...", "message": "...", "details": {...}}}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from levqor_kernel import hookimpl
from levqor_kernel.catalog import Catalog, connector_from_description
from levqor_kernel.http import redact
from levqor_kernel.pipeline import validate_pipeline

from .connector import (
    check_credentials,
    describe_schema,
    load_options,
    run_task,
    validate_payload,
)
from .schema import (
    NotStrictable,
    expand_input,
    plan_schema,
    strict_problems,
    strictify,
    strip_plan_nulls,
)

__version__ = "0.1.0"
__all__ = [
    "PlannerSettings",
    "check_credentials",
    "describe_schema",
    "load_options",
    "plan",
    "plan_pipeline",
    "planner_settings",
    "run_task",
    "validate_payload",
]

log = logging.getLogger("levqor.planner")

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
SCHEMA_NAME = "levqor_plan"


class PlannerSettings:
    """What the planner reads from the environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.api_key = (env.get("OPENAI_API_KEY") or "").strip()
        self.base_url = (env.get("OPENAI_BASE_URL") or "").strip() or DEFAULT_BASE_URL
        self.model = (env.get("LEVQOR_PLANNER_MODEL") or "").strip() or DEFAULT_MODEL
        self.mode = (env.get("LEVQOR_PLANNER_MODE") or "auto").strip().lower()
        self.timeout = _num(env, "LEVQOR_PLANNER_TIMEOUT", 60.0, float)
        self.max_retries = _num(env, "LEVQOR_PLANNER_MAX_RETRIES", 2, int)
        self.repair_rounds = _num(env, "LEVQOR_PLANNER_REPAIR_ROUNDS", 2, int)


def _num(env: Mapping[str, str], key: str, default: Any, kind: type) -> Any:
    raw = env.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        return default


def planner_settings(options: Mapping[str, Any] | None = None) -> PlannerSettings:
    env = (options or {}).get("env")
    return PlannerSettings(os.environ if env is None else env)


def _error(status: int, code: str, message: str, **details: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "code": code, "message": message}
    details = {k: v for k, v in details.items() if v is not None}
    if details:
        err["details"] = details
    return {"error": err}


# ------------------------------------------------------------------------ prompt
SYSTEM = """You are the workflow planner of Levqor, an automation platform like Zapier.
Turn the user's description into one Levqor pipeline document and answer with JSON only:
{"explanation": "...", "pipeline": {"levqor": 1, "name": "...", "trigger": {...}, "steps": [...]}}.

Rules:
- Use only the connectors and actions listed below; each step's payload must follow its action's
  payload schema.
- Trigger "app" when the pipeline starts from an event in a connected app (a new row, message,
  email or database item): name the connector and its trigger from the list below, the
  trigger's "config" and a "credential" as for steps; each new item is trigger.* (shaped like
  the trigger's sample). Trigger "webhook" when something arrives from outside (its JSON body
  is trigger.*), "schedule" with a standard 5-field cron for recurring work (day-of-week 0 and
  7 are Sunday, 1-5 Monday to Friday), "manual" otherwise.
- Payload strings may be Jinja templates: {{ trigger.<field> }} for trigger data and
  {{ steps.<earlier step id>.output.<field> }} for an earlier step's output. Use no other names
  and never refer to a later step.
- Steps whose connector needs a credential name one in "credential": one of the user's
  credentials for that connector when listed, otherwise the name the user should give the
  credential they still have to add (the connector's name, for example "slack").
- Never invent secret values (tokens, keys, webhook URLs); credentials hold them.
- Where the user gave no concrete value (a spreadsheet id, a channel), use a clear placeholder
  such as "YOUR_SPREADSHEET_ID" and say so in the explanation.
- Besides action steps, a step may be a construct with a "type": "for_each" runs its "steps"
  once per element of "items" (a template such as "{{ trigger.orders }}"; inside, "{{ item }}"
  is the element and "{{ index }}" its position), "branch" runs the "steps" of the first of its
  "paths" whose "if" holds and otherwise its "default" steps, "parallel", "wait", "pipeline"
  and "stop". Any step may have an "if" (skipped when false) and an "on_error" ("continue", or
  fallback steps). A condition is a template such as "{{ item.total > 100 }}" or a comparison
  {"left": "{{ item.total }}", "op": "gt", "right": 100}. Step ids are unique in the whole
  pipeline, nested steps included.
- Model actions (connectors marked "model": true below) ask a language model: "chat" answers in
  text (output.text), "extract" fills a JSON Schema you write in its "schema" field from a text
  (output.data.<field>; give each field a type and a description), "classify" picks exactly one
  of its "labels" (output.label). To act on a category, classify first and branch on the label:
  {"type": "branch", "paths": [{"if": {"left": "{{ steps.<id>.output.label }}", "op": "eq",
  "right": "<label>"}, "steps": [...]}], "default": [...]}. Prefer extract over chat when later
  steps need fields. Set "model" to the model the user names, else MODEL_HINT.
- An "agent" step (only with a connector marked "agent": true) lets a model work toward a
  "goal" by calling "tools": pick each tool from the actions listed below (connector and action,
  never one marked hidden) with the credential the tool needs, and fix in its "payload" the
  values the user gave (a spreadsheet id, a channel) so the agent does not guess them. Use an
  agent only when the steps cannot be known in advance (look something up, then decide what to
  do); otherwise plan plain steps. Calls of actions that write upstream wait for a person's
  approval by default ("approval": "writes"); set "approval": "none" only when the user says
  the agent may act without asking, and "all" to approve reads too. An "mcp" "call_tool" tool
  offers one tool of an MCP server: fix its name in the tool's payload ({"tool": "..."}). Its
  output.answer is the final text.
- A manual or webhook pipeline meant to be called with known fields (a tool for an AI client
  over MCP, an API with a documented body) declares them in "input" (name, type, description,
  required); steps read them as trigger.<name>. Give such a pipeline a "description" saying
  what it does. Leave "input" out otherwise.
"""


def _catalog_for_prompt(catalog: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, c in sorted((catalog.get("connectors") or {}).items()):
        actions = {a: act for a, act in (c.get("actions") or {}).items() if not act.get("hidden")}
        needs: bool | str = c.get("credentials") is not None
        if needs and c.get("credentials_required") is False:
            needs = "optional"
        out.append(
            {
                "connector": name,
                "title": c.get("title"),
                "description": c.get("description"),
                "needs_credential": needs,
                "actions": {
                    a: {
                        "title": act.get("title"),
                        "description": act.get("description", ""),
                        "example_payload": act.get("example"),
                        "writes": act.get("writes") is not False,
                    }
                    for a, act in sorted(actions.items())
                },
            }
        )
        if any(act.get("usage") == "tokens" for act in actions.values()):
            out[-1]["model"] = True
        if c.get("agent"):
            out[-1]["agent"] = True
        triggers = c.get("triggers") or {}
        if triggers:
            out[-1]["triggers"] = {
                t: {
                    "title": trig.get("title"),
                    "description": trig.get("description", ""),
                    "kind": trig.get("kind"),
                    "example_config": trig.get("example") or {},
                    "sample_item": trig.get("sample"),
                }
                for t, trig in sorted(triggers.items())
            }
    return out


def _system_message(
    catalog: Mapping[str, Any],
    credentials: list[Mapping[str, Any]],
    schema: dict[str, Any],
    json_mode: bool,
    model: str = DEFAULT_MODEL,
) -> str:
    creds = [{"name": c.get("name"), "connector": c.get("connector")} for c in credentials]
    parts = [
        SYSTEM.replace("MODEL_HINT", json.dumps(model)),
        "Installed connectors:\n" + json.dumps(_catalog_for_prompt(catalog), separators=(",", ":")),
        "The user's credentials (names only): "
        + (json.dumps(creds, separators=(",", ":")) if creds else "none yet"),
    ]
    if json_mode:
        parts.append(
            "Answer with one JSON object that validates against this JSON Schema:\n"
            + json.dumps(schema, separators=(",", ":"))
        )
    return "\n\n".join(parts)


def _repair_message(problems: list[dict[str, Any]]) -> str:
    lines = "\n".join(
        f"- {p.get('pointer') or '/'}"
        + (f" (step {p['step']})" if p.get("step") else "")
        + f": {p.get('message')}"
        for p in problems[:30]
    )
    return (
        "That pipeline is not valid. Fix every problem below and answer again with the whole "
        "corrected JSON object (pointers are relative to pipeline):\n" + lines
    )


# ------------------------------------------------------------------------ validation
def catalog_from_json(catalog: Mapping[str, Any]) -> Catalog:
    """A kernel Catalog from the JSON form the hook receives (no plugin objects needed)."""
    infos = []
    for name, c in (catalog.get("connectors") or {}).items():
        desc = {
            "name": name,
            "title": c.get("title") or name,
            "description": c.get("description") or name,
            "credentials": c.get("credentials"),
            "credentials_required": c.get("credentials_required") is not False,
            "actions": {
                a: {
                    "title": act.get("title") or a,
                    "payload": act.get("payload") or {"type": "object"},
                    "output": act.get("output") or {"type": "object"},
                    "example": act.get("example") or {},
                    **({"price": act["price"]} if act.get("price") is not None else {}),
                    # what the agent construct's checks read (writes, hidden, metered)
                    **{k: act[k] for k in ("writes", "hidden", "usage") if act.get(k) is not None},
                }
                for a, act in (c.get("actions") or {}).items()
            },
            **({"agent": c["agent"]} if c.get("agent") else {}),
            "triggers": {
                t: {
                    "title": trig.get("title") or t,
                    "kind": trig.get("kind") or "polling",
                    "config": trig.get("config") or {"type": "object"},
                    "output": trig.get("output") or {"type": "object"},
                    "sample": trig.get("sample") or {},
                    **({"webhook": trig["webhook"]} if trig.get("webhook") else {}),
                }
                for t, trig in (c.get("triggers") or {}).items()
            },
        }
        infos.append(
            connector_from_description(
                desc,
                plugin_name=c.get("plugin") or name,
                plugin=None,
                dist=c.get("distribution"),
                version=c.get("version"),
            )
        )
    return Catalog(infos)


def check_answer(answer: Any, catalog: Catalog) -> list[dict[str, Any]]:
    """Problems with a parsed answer, pipeline pointers as the kernel reports them."""
    if not isinstance(answer, dict):
        return [{"pointer": "", "message": "the answer must be a JSON object"}]
    problems: list[dict[str, Any]] = []
    if not isinstance(answer.get("explanation"), str):
        problems.append({"pointer": "/explanation", "message": "explanation must be a string"})
    doc = answer.get("pipeline")
    # credentials=None: a credential the user has not added yet is not a planning problem
    problems += [p.to_dict() for p in validate_pipeline(doc, catalog)]
    if not problems:
        problems = own_rule_problems(doc)
    return problems


#: this plugin's actions whose payload rules (validate_payload) the runner checks only when the
#: step starts, and the payload field each rule reads
_OWN_RULES = {"extract": "schema", "classify": "labels"}


def own_rule_problems(doc: Any) -> list[dict[str, Any]]:
    """Problems the ``openai`` connector's own rules find in a plan's model steps (an ``extract``
    schema that is not a JSON Schema, a label listed twice): the kernel's check of the document
    does not run them (the runner does, when the step starts), so the planner does, and the
    repair round fixes them. A field that is still a template is left to the run."""
    from .connector import NAME, validate_payload

    out: list[dict[str, Any]] = []
    for pointer, step in _action_steps(doc):
        field = _OWN_RULES.get(step.get("action")) if step.get("connector") == NAME else None
        payload = step.get("payload")
        if field is None or not isinstance(payload, dict) or isinstance(payload.get(field), str):
            continue
        for message in validate_payload(NAME, step["action"], payload) or ():
            out.append({"pointer": f"{pointer}/payload/{field}", "step": step.get("id"),
                        "message": str(message)})  # fmt: skip
    return out


def _action_steps(doc: Any) -> Any:
    """``(pointer, step)`` of every action step of ``doc``, nested ones included."""
    if not isinstance(doc, dict):
        return
    todo = [(f"/{key}", doc.get(key)) for key in ("steps", "on_failure")]
    while todo:
        base, steps = todo.pop()
        for i, step in enumerate(steps if isinstance(steps, list) else ()):
            if not isinstance(step, dict):
                continue
            where = f"{base}/{i}"
            if step.get("type") in (None, "action"):
                yield where, step
            for j, path in enumerate(step.get("paths") or []):
                if isinstance(path, dict):
                    todo.append((f"{where}/paths/{j}/steps", path.get("steps")))
            for key in ("steps", "default", "notify", "on_error"):
                todo.append((f"{where}/{key}", step.get(key)))


def _steps_summary(answer: Any) -> str:
    try:
        return ",".join(
            str(s["type"]) if s.get("type") else f"{s.get('connector')}.{s.get('action')}"
            for s in answer["pipeline"]["steps"]
        )
    except (KeyError, TypeError, AttributeError):
        return "-"


# ------------------------------------------------------------------------ the OpenAI call
def _client(settings: PlannerSettings) -> Any:
    from openai import OpenAI

    return OpenAI(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


def _map_openai_error(e: Exception, settings: PlannerSettings) -> dict[str, Any]:
    """An OpenAI client exception as the hook's error answer (status the host should send)."""
    import openai

    secrets = [settings.api_key]
    where = settings.base_url
    if isinstance(e, openai.APITimeoutError):
        return _error(
            504,
            "planner_timeout",
            f"the model server at {where} did not answer within {settings.timeout:g} s "
            "(LEVQOR_PLANNER_TIMEOUT)",
        )
    if isinstance(e, openai.APIConnectionError):
        return _error(
            502,
            "planner_unreachable",
            f"cannot reach the model server at {where} (check OPENAI_BASE_URL)",
        )
    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        body = e.body if isinstance(e.body, Mapping) else {}
        err = body.get("error") if isinstance(body.get("error"), Mapping) else body
        upstream = redact(str((err or {}).get("message") or e.message or ""), secrets)[:500]
        code = (err or {}).get("code") or (err or {}).get("type")
        retry_after = None
        try:
            ra = e.response.headers.get("retry-after")
            retry_after = float(ra) if ra else None
        except (TypeError, ValueError, AttributeError):
            retry_after = None
        common = {"upstream_status": status, "upstream_code": code, "upstream_message": upstream}
        if status == 401:
            return _error(
                502,
                "planner_unauthorized",
                "the model server refused OPENAI_API_KEY (401): set a valid key",
                **common,
            )
        if status == 403:
            return _error(
                502,
                "planner_forbidden",
                "the model server refused the request (403): the key may lack access to "
                f"{settings.model} (LEVQOR_PLANNER_MODEL)",
                **common,
            )
        if status == 404:
            return _error(
                502,
                "planner_model_not_found",
                f"the model server does not know model {settings.model!r} or the endpoint "
                "(check LEVQOR_PLANNER_MODEL and OPENAI_BASE_URL)",
                **common,
            )
        if status == 429:
            quota = code == "insufficient_quota"
            return _error(
                503,
                "planner_quota_exceeded" if quota else "planner_rate_limited",
                "the OpenAI account is out of quota; check its plan and billing"
                if quota
                else f"the model server is rate limiting us (still 429 after "
                f"{settings.max_retries} retries); try again later",
                retry_after=retry_after,
                **common,
            )
        if status >= 500:
            return _error(
                502,
                "planner_upstream_error",
                f"the model server failed ({status}) after {settings.max_retries} retries; "
                "try again later",
                **common,
            )
        return _error(
            502,
            "planner_bad_request",
            f"the model server rejected the planning request ({status}): {upstream}",
            **common,
        )
    return _error(502, "planner_failed", f"the planner failed: {type(e).__name__}")


def plan(
    prompt: str,
    catalog: Mapping[str, Any],
    credentials: list[Mapping[str, Any]],
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan a pipeline (the body of the ``plan_pipeline`` hook)."""
    options = options or {}
    settings = planner_settings(options)
    if not settings.api_key:
        return _error(
            503,
            "not_configured",
            "the AI builder is not configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server)",
            missing="OPENAI_API_KEY",
        )
    rounds = options.get("repair_rounds")
    rounds = settings.repair_rounds if rounds is None else int(rounds)
    rounds = max(0, min(rounds, 10))
    credentials = [
        {"name": c.get("name"), "connector": c.get("connector")} for c in credentials or ()
    ]
    kcat = catalog_from_json(catalog)

    schema = plan_schema(catalog, credentials)
    strict_schema: dict[str, Any] | None = None
    why_not: list[str] = []
    if settings.mode != "json":
        try:
            candidate = strictify(schema)
            why_not = strict_problems(candidate)
            if not why_not:
                strict_schema = candidate
        except NotStrictable as e:
            why_not = [str(e)]
    json_mode = strict_schema is None
    if json_mode:
        response_format: dict[str, Any] = {"type": "json_object"}
    else:
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": strict_schema},
        }
    messages: list[dict[str, str]] = [
        {
            "role": "system",
            "content": _system_message(catalog, credentials, schema, json_mode, settings.model),
        },
        {"role": "user", "content": prompt},
    ]
    log.info(
        "plan request: prompt_sha256=%s prompt_chars=%d model=%s mode=%s connectors=%d "
        "credentials=%d repair_rounds=%d",
        hashlib.sha256(prompt.encode()).hexdigest()[:12],
        len(prompt),
        settings.model,
        "json" if json_mode else "strict",
        len(catalog.get("connectors") or {}),
        len(credentials),
        rounds,
    )
    if json_mode and why_not:
        log.info("plan: JSON mode because the schema is not strict: %s", why_not[0])

    client = _client(settings)
    problems: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for attempt in range(1, rounds + 2):
            try:
                completion = client.chat.completions.create(
                    model=settings.model,
                    messages=messages,
                    response_format=response_format,
                    temperature=0,
                )
            except Exception as e:  # noqa: BLE001 - mapped to a clear answer below
                out = _map_openai_error(e, settings)
                log.warning(
                    "plan attempt %d failed: %s (%s)",
                    attempt,
                    out["error"]["code"],
                    out["error"].get("details", {}).get("upstream_status", "-"),
                )
                return out
            choice = completion.choices[0] if completion.choices else None
            message = choice.message if choice is not None else None
            refusal = getattr(message, "refusal", None) if message is not None else None
            if refusal:
                log.info("plan attempt %d: the model refused (%d chars)", attempt, len(refusal))
                return _error(
                    422,
                    "planner_refused",
                    "the model declined to plan this: " + redact(str(refusal))[:500],
                )
            content = (message.content if message is not None else None) or ""
            finish = getattr(choice, "finish_reason", None)
            try:
                answer = json.loads(content)
            except ValueError:
                answer = None
                problems = [
                    {
                        "pointer": "",
                        "message": "the answer was not valid JSON"
                        + (" (cut off: too long)" if finish == "length" else ""),
                    }
                ]
            else:
                if not json_mode:
                    answer = strip_plan_nulls(answer, catalog)
                problems = expand_input(answer) + check_answer(answer, kcat)
            log.info(
                "plan attempt %d: steps=%s problems=%d finish=%s",
                attempt,
                _steps_summary(answer),
                len(problems),
                finish,
            )
            if not problems:
                assert isinstance(answer, dict)
                doc = answer["pipeline"]
                return {
                    "pipeline": doc,
                    "explanation": answer["explanation"],
                    "warnings": [],
                    "planner": {
                        "plugin": "levqor-openai",
                        "model": settings.model,
                        "mode": "json" if json_mode else "strict",
                        "attempts": attempt,
                        "seconds": round(time.monotonic() - started, 3),
                    },
                }
            if attempt <= rounds:
                messages.append({"role": "assistant", "content": content})
                messages.append({"role": "user", "content": _repair_message(problems)})
    finally:
        client.close()
    return _error(
        422,
        "invalid_plan",
        f"the planner could not produce a valid pipeline after {rounds} repair round(s)",
        problems=problems[:50],
        attempts=rounds + 1,
    )


@hookimpl
def plan_pipeline(
    prompt: str, catalog: dict[str, Any], credentials: list[dict[str, Any]], options: dict[str, Any]
) -> dict[str, Any] | None:
    """Plan with OpenAI (or an OpenAI-compatible server). See the module docstring."""
    return plan(prompt, catalog, credentials, options)
