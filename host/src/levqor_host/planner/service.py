"""The AI builder on the host side: plain words -> a validated, stored pipeline.

Shared by ``POST /api/v1/plan`` (web/api/plan.py) and ``levqor plan`` (cli/plan.py), which hand
it the service object and the user. The host never imports a planner: it calls the kernel hook
``plan_pipeline`` (firstresult) on whatever plugin provides it (``levqor-openai``). The hook's answer contract (docs/ai-builder.md):

* ``{"pipeline": {...}, "explanation": str, "warnings": [str, ...]?, "planner": {...}?}``
* ``{"error": {"status": int, "code": str, "message": str, "details": {...}?}}`` for an expected
  failure (503 ``not_configured``, 422 ``invalid_plan``, 502/503/504 upstream problems), which
  the host answers with that status;
* ``None`` when no plugin plans (the host answers 503: install levqor-openai).

Whatever the planner says, the host validates the pipeline again with the installed catalog and
the user's credentials before storing it: an invalid pipeline is never stored.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from levqor_kernel.host import HttpError
from levqor_kernel.pipeline import walk_steps

from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_host.services import Services

log = logging.getLogger("levqor.planner")

MAX_PROMPT_CHARS = 4000
PLANNER_CONNECTOR = "planner"
PLANNER_ACTION = "plan"


def has_planner(state: Services) -> bool:
    return bool(state.pm.hook.plan_pipeline.get_hookimpls())


def _no_planner() -> ApiError:
    return ApiError(
        503,
        "planner_not_installed",
        "no AI planner is installed: pip install levqor-openai (and set OPENAI_API_KEY)",
    )


def check_prompt(prompt: Any, name: Any = None) -> tuple[str, str | None]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "invalid_request", "prompt must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(
            400, "invalid_request", f"prompt must be at most {MAX_PROMPT_CHARS} characters"
        )
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
        raise ApiError(400, "invalid_request", "name must be 1-200 characters")
    return prompt.strip(), name


def gate_planning(state: Services, user: dict) -> tuple[int, int]:
    """Price a plan through the billing hooks and ask the gate (402 when refused)."""
    base = state.config.planner.price_credits
    p = state.pm.hook.price_task(
        connector=PLANNER_CONNECTOR, action=PLANNER_ACTION, payload={}, price=base
    )
    price = base if p is None else int(p)
    synthetic = {
        "id": None,
        "name": "AI builder",
        "kind": "plan",
        "doc": {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "plan",
                    "connector": PLANNER_CONNECTOR,
                    "action": PLANNER_ACTION,
                    "payload": {},
                }
            ],
        },
    }
    from levqor_host.billing.ledger import RunGate

    # the gate and the charge in one transaction with the user row locked, like a run's
    with state.ledger.transaction() as tx:
        locked = tx.lock_user(user["id"]) or user
        gate = RunGate(tx, locked, None, price)
        decision = state.pm.hook.gate_run(user=locked, pipeline=synthetic, price=price, ledger=gate)
        if decision is not None and not decision.get("allow", False):
            raise ApiError(
                int(decision.get("status", 402)),
                "payment_required",
                decision.get("reason", "planning is not allowed by your plan"),
                {"retry_at": decision.get("retry_at"), "price": price},
            )
    return price, gate.charged


def refund_planning(state: Services, user: dict, charged: int) -> None:
    """A plan that failed costs nothing: give back what the gate charged (the ledger keeps both lines)."""
    if charged:
        try:
            state.ledger.grant(user["id"], charged, reason="plan_refund")
        except Exception:  # noqa: BLE001 - the failure answer matters more than the refund line
            log.exception("refunding a failed plan failed")


def _warnings(state: Services, problems: list[dict], doc: dict) -> list[dict]:
    """Missing credentials as warnings the user can act on."""
    out = []
    every = [*(doc.get("steps") or []), *(doc.get("on_failure") or [])]
    steps = {s.get("id"): s for s, _depth in walk_steps(every) if isinstance(s, dict)}
    trigger = doc.get("trigger") if isinstance(doc.get("trigger"), dict) else {}
    for p in problems:
        # a step's credential, or an app trigger's (/trigger/credential)
        step = (
            trigger if p.get("pointer") == "/trigger/credential" else steps.get(p.get("step")) or {}
        )
        tool = re.search(r"/tools/(\d+)/credential$", p.get("pointer") or "")
        if tool and step.get("type") == "agent":  # an agent's tool: its own connector
            tools = step.get("tools") or []
            j = int(tool.group(1))
            step = tools[j] if j < len(tools) and isinstance(tools[j], dict) else {}
        cname = step.get("credential")
        connector = step.get("connector")
        out.append(
            {
                **p,
                "credential": cname,
                "connector": connector,
                "message": f"add a {connector} credential named {cname!r} before running "
                f"(POST /api/v1/credentials)",
            }
        )
    return out


def plan(
    state: Services, user: dict, prompt: str, *, name: str | None = None, dry_run: bool = False
) -> dict:
    """Plan, validate and (unless ``dry_run``) store. Raises ApiError with the right status."""
    prompt, name = check_prompt(prompt, name)
    if not has_planner(state):
        raise _no_planner()
    price, charged = gate_planning(state, user)
    try:
        return _plan_charged(state, user, prompt, name, dry_run, price)
    except ApiError:
        refund_planning(state, user, charged)
        raise


def _ask_planner(state: Services, user: dict, prompt: str, name: str | None) -> dict:
    """The ``plan_pipeline`` hook's answer, or the ApiError its failure becomes."""
    creds = [
        {"name": c["name"], "connector": c["connector"]}
        for c in state.store.credentials.list(user["id"])
    ]
    options = {
        "name": name,
        "repair_rounds": state.config.planner.repair_rounds,
        "env": state.config.plugin_settings(),
    }
    try:
        result = state.pm.hook.plan_pipeline(
            prompt=prompt, catalog=state.pm.catalog.to_json(), credentials=creds, options=options
        )
    except HttpError as e:  # the planner's own answer (levqor_kernel.host.HttpError)
        log.warning("plan_pipeline answered %s %s", e.status, e.code)
        raise ApiError(
            e.status if 400 <= e.status < 600 else 502,
            e.code or "planner_failed",
            f"the planner failed: {e.message}",
            e.details,
            headers=e.headers,
        ) from None
    except Exception as e:  # noqa: BLE001 - a broken planner is a bad gateway, not a 500
        log.exception("plan_pipeline raised")
        raise ApiError(502, "planner_failed", f"the planner failed: {type(e).__name__}") from None
    if result is None:
        raise _no_planner()
    if not isinstance(result, dict):
        raise ApiError(502, "planner_failed", "the planner answered something that is not a plan")
    if "error" in result:
        raise _planner_error(result["error"])
    return result


def _planner_error(error: Any) -> ApiError:
    """The ApiError for a planner's ``{"error": {...}}`` answer (a bad status becomes 502)."""
    err = error if isinstance(error, dict) else {}
    status = err.get("status")
    status = status if isinstance(status, int) and 400 <= status < 600 else 502
    details = err.get("details") if isinstance(err.get("details"), dict) else None
    headers = {}
    if details and details.get("retry_after"):
        headers["Retry-After"] = str(int(float(details["retry_after"]) + 0.999))
    return ApiError(
        status,
        str(err.get("code") or "planner_failed"),
        str(err.get("message") or "the planner failed"),
        details,
        headers=headers,
    )


def _plan_charged(
    state: Services, user: dict, prompt: str, name: str | None, dry_run: bool, price: int
) -> dict:
    result = _ask_planner(state, user, prompt, name)
    doc = result.get("pipeline")
    if not isinstance(doc, dict):
        raise ApiError(502, "planner_failed", "the planner answered without a pipeline")
    problems = state.runs.validate(user["id"], doc)
    missing = [
        p
        for p in problems
        if p["pointer"].endswith("/credential") and "does not exist" in p["message"]
    ]
    blocking = [p for p in problems if p not in missing]
    if blocking:
        raise ApiError(
            422,
            "invalid_plan",
            "the planned pipeline is not valid for this installation",
            {"problems": blocking},
        )
    warnings = _warnings(state, missing, doc) + [
        {"message": str(w)} for w in (result.get("warnings") or []) if w
    ]
    explanation = str(result.get("explanation") or "")
    final_name = (name or doc.get("name") or prompt[:60]).strip()[:200] or "AI pipeline"
    out: dict[str, Any] = {
        "dry_run": bool(dry_run),
        "name": final_name,
        "explanation": explanation,
        "warnings": warnings,
        "price": price,
        "planner": result.get("planner") or {},
    }
    if dry_run:
        out["pipeline"] = doc
        return out
    p = state.triggers.save(
        user["id"], doc, lambda: state.store.pipelines.create(user["id"], final_name, doc)
    )
    assert p is not None  # create returns the new pipeline or raises
    state.export_pipeline(p)
    out["stored"] = p
    log.info(
        "plan stored: pipeline=%s steps=%d warnings=%d",
        p["id"],
        len(doc.get("steps", [])),
        len(warnings),
    )
    return out
