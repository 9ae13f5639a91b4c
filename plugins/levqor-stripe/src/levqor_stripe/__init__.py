"""levqor-stripe: billing for Levqor (plans, credits, the free-plan gate, Stripe Checkout,
the customer portal and webhooks).

Implements the kernel's billing hooks (``price_task`` is left to the catalog; ``gate_run`` and
``record_run_cost``) over the ledger objects the host passes, and the host hooks
``register_blueprints`` (``/api/v1/billing/*``), ``register_dashboard_pages`` (the dashboard's
``/billing`` page) and ``register_commands`` (``levqor credits``). It never imports the host:
it uses the objects it is given through their types in :mod:`levqor_kernel.host`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from levqor_kernel import hookimpl
from levqor_kernel.host import (
    BillingTransaction,
    DashboardPage,
    Host,
    HostConfig,
    RunGate,
    RunSettlement,
)

from . import config as _config

__version__ = "0.1.0"

_CACHE: dict[tuple, _config.BillingConfig] = {}
_ENV_KEYS = (
    "LEVQOR_BILLING",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "LEVQOR_PLANS",
    "LEVQOR_STRIPE_PRICE_PRO",
    "LEVQOR_STRIPE_PRICE_BUSINESS",
    "LEVQOR_CREDIT_PACKS",
    "LEVQOR_STRIPE_API_BASE",
)


#: the host's variables this plugin reads (docs/billing.md)
SETTINGS_PREFIXES = ("STRIPE_", "LEVQOR_STRIPE_", "LEVQOR_BILLING", "LEVQOR_PLANS", "LEVQOR_CREDIT_PACKS")


def settings(config: HostConfig) -> Mapping[str, str]:
    """This plugin's variables, read through the host's configuration."""
    return config.plugin_settings(*SETTINGS_PREFIXES)


def billing_config(env: Mapping[str, str], base_url: str = "http://127.0.0.1:8000") -> _config.BillingConfig:
    """The (cached) billing configuration of a settings mapping (:func:`settings`)."""
    key = (base_url, *(env.get(k) for k in _ENV_KEYS))
    cfg = _CACHE.get(key)
    if cfg is None:
        cfg = _config.load(env, base_url)
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = cfg
    return cfg


def _refuse(reason: str, retry_at: str | None, **details: Any) -> dict:
    return {
        "allow": False,
        "status": 402,
        "reason": reason,
        "retry_at": retry_at,
        "details": details,
    }


def grant_monthly_credits(
    tx: BillingTransaction, cfg: _config.BillingConfig, user_id: str, plan_name: str | None, now: datetime
) -> bool:
    """Local billing: the plan's monthly credits, once per UTC calendar month, as the same
    ledger line a paid Stripe invoice adds (``reason=subscription``), keyed
    ``local:subscription:<user>:<YYYY-MM>`` so that a second call in the month adds nothing.
    ``tx`` is the host's billing transaction with the user locked. True when credits were added."""
    plan = cfg.plan(plan_name)
    if cfg.mode != "local" or plan.monthly_credits <= 0:
        return False
    period = now.astimezone(UTC).strftime("%Y-%m")
    return tx.add_line(
        user_id,
        plan.monthly_credits,
        "subscription",
        external_id=f"local:subscription:{user_id}:{period}",
    )


def _more_credits(
    cfg: _config.BillingConfig, ledger: RunGate, user: dict, needed: int
) -> tuple[str, dict]:
    """What this deployment's operator or user can do about a balance that is too low."""
    if cfg.mode == "local":
        command = f"levqor credits grant {user.get('email') or 'EMAIL'} {max(needed, 1)}"
        return (
            f"an operator can add credits with `{command}` (billing is local: no purchases)",
            {"billing": "local", "command": command},
        )
    url = f"{ledger.base_url.rstrip('/')}/billing"
    return f"buy credits or upgrade your plan at {url}", {"billing": cfg.mode, "url": url}


@hookimpl
def gate_run(user: dict, pipeline: dict, price: int, ledger: RunGate | None) -> dict | None:
    """Plans and credits: the daily run limit first, then the balance. Reserves the credits
    through ``ledger.charge`` inside the host's run transaction. In local billing the plan's
    monthly credits are granted first (once a month). Without a ledger there is no gate."""
    if ledger is None:
        return None
    cfg = billing_config(settings(ledger.config))
    if not cfg.enforced:
        return None  # unlimited: no gate
    plan = cfg.plan(ledger.plan)
    grant_monthly_credits(ledger.tx, cfg, ledger.user_id, ledger.plan, ledger.now)
    if pipeline.get("kind") == "plan":  # the AI builder: credits only, no daily run allowance
        balance = ledger.balance()
        if balance < price:
            todo, how = _more_credits(cfg, ledger, user, price - balance)
            return _refuse(
                f"planning costs {price} credits and your balance is {balance}: {todo}",
                None,
                plan=plan.name,
                balance=balance,
                **how,
            )
        ledger.charge(price, reason="plan")
        return {"allow": True, "charged": price}
    used = ledger.runs_today()
    next_day = ledger.next_day_at.isoformat()
    if plan.runs_per_day is not None and used >= plan.runs_per_day:
        if cfg.mode == "local":
            todo, how = "ask the operator for a plan with more runs a day", {"billing": "local"}
        else:
            url = f"{ledger.base_url.rstrip('/')}/billing"
            todo, how = f"upgrade your plan at {url}", {"billing": cfg.mode, "url": url}
        return _refuse(
            f"the {plan.title} plan allows {plan.runs_per_day} run(s) a day and today's are "
            f"used: the next run is possible at {next_day} (midnight UTC), or {todo}",
            next_day,
            plan=plan.name,
            runs_today=used,
            runs_per_day=plan.runs_per_day,
            **how,
        )
    if used < plan.included_runs_per_day:
        return {"allow": True, "charged": 0, "included": True}
    balance = ledger.balance()
    if balance < price:
        todo, how = _more_credits(cfg, ledger, user, price - balance)
        reason = f"this run costs {price} credits and your balance is {balance}: {todo}"
        retry = None
        if plan.included_runs_per_day:
            retry = next_day
            reason += f"; your next free run is possible at {next_day} (midnight UTC)"
        return _refuse(reason, retry, plan=plan.name, balance=balance, **how)
    ledger.charge(price)
    return {"allow": True, "charged": price}


@hookimpl
def record_run_cost(user: dict, run: dict, cost: int, ledger: RunSettlement | None) -> None:
    """Refund a platform failure in full (the ledger keeps the charge and the refund), the
    part of the reservation that the steps which really ran did not use, or charge what they
    cost beyond it (a loop's items), as far as the balance goes."""
    if ledger is None:
        return
    charged = int(run.get("charged", ledger.charged) or 0)
    cfg = billing_config(settings(ledger.config))
    if not cfg.enforced and charged == 0:
        return
    if run.get("platform_failure"):
        ledger.refund(None, "refund")
    elif 0 <= cost < charged:
        ledger.refund(charged - cost, "unused")
    elif cost > charged:
        # a loop ran its priced steps more than the one pass the run reserved
        ledger.charge_extra(cost - charged)


@hookimpl
def register_blueprints(app: Any, state: Host) -> None:
    from .dashboard import bp as dashboard_bp
    from .web import bp

    app.extensions["levqor_stripe"] = billing_config(settings(state.config), state.config.base_url)
    app.register_blueprint(bp)
    app.register_blueprint(dashboard_bp)  # the billing page's template and ES module


@hookimpl
def register_dashboard_pages() -> list[DashboardPage]:
    from .dashboard import BILLING_PAGE

    return [BILLING_PAGE]


@hookimpl
def register_commands(cli: Any) -> None:
    from .commands import credits

    cli.add_command(credits)
