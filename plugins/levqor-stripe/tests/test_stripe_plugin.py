"""levqor-stripe alone, without the host: its hooks over in-memory objects that follow the
kernel's typed face of the host (levqor_kernel.host), and its dashboard page's files. Tests of
the plugin inside the host are in the repository's tests/ (test_stripe_billing.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import levqor_stripe
import pytest
from click.testing import CliRunner
from flask import Flask
from levqor_kernel.host import (
    BillingTransaction,
    DashboardPage,
    HostCommandGroup,
    HostConfig,
    InsufficientCredits,
    Ledger,
    RunGate,
    RunSettlement,
)
from levqor_stripe.commands import credits
from levqor_stripe.dashboard import BILLING_PAGE, bp

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


class MemoryConfig:
    """A HostConfig over a mapping of variables."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env, self.base_url = env, "https://levqor.example"

    def plugin_settings(self, *prefixes: str) -> Mapping[str, str]:
        return {k: v for k, v in self.env.items() if not prefixes or k.startswith(prefixes)}


class MemoryTx:
    """A BillingTransaction over a list of ledger lines (one user table, no accounts)."""

    def __init__(self, env: Mapping[str, str], users: dict[str, dict]) -> None:
        self.config = MemoryConfig(env)
        self.users = users
        self.lines: list[dict] = []
        self.events: list[tuple] = []

    def after_commit(self, fn: Any) -> None:
        fn()

    def lock_user(self, user_id: str) -> dict | None:
        return self.users.get(user_id)

    def set_plan(self, user_id: str, plan: str) -> bool:
        self.users[user_id]["plan"] = plan
        return True

    def balance(self, user_id: str) -> int:
        return sum(line["delta"] for line in self.lines if line["user_id"] == user_id)

    def add_line(self, user_id, delta, reason, *, run_id=None, external_id=None) -> bool:
        if external_id is not None and any(x["external_id"] == external_id for x in self.lines):
            return False
        if delta < 0 and self.balance(user_id) + delta < 0:
            raise InsufficientCredits(-delta, self.balance(user_id))
        self.lines.append(
            {"user_id": user_id, "delta": delta, "reason": reason, "run_id": run_id,
             "external_id": external_id}
        )
        return True

    def claim_event(self, key: str, type: str) -> bool:
        return True

    def account(self, user_id: str) -> dict | None:
        return None

    def user_id_for_customer(self, customer_id: str) -> str | None:
        return None

    def save_account(self, user_id: str, provider: str, **values: Any) -> None:
        pass

    def event(self, type, user_id=None, *, email=None, props=None) -> None:
        self.events.append((type, user_id, props))


class MemoryGate:
    """A RunGate over a MemoryTx."""

    def __init__(self, tx: MemoryTx, user: dict, runs_today: int = 0) -> None:
        self.tx, self.user_id, self.plan = tx, user["id"], user.get("plan") or "free"
        self.charged, self.now, self._runs = 0, NOW, runs_today
        self.config, self.base_url = tx.config, "https://levqor.example"
        self.day_started_at = NOW.replace(hour=0, minute=0)
        self.next_day_at = self.day_started_at + timedelta(days=1)

    def balance(self) -> int:
        return self.tx.balance(self.user_id)

    def runs_today(self) -> int:
        return self._runs

    def charge(self, amount: int, reason: str = "run") -> None:
        self.tx.add_line(self.user_id, -amount, reason, run_id="run_1")
        self.charged += amount


class MemorySettlement:
    """A RunSettlement of run_1 over a MemoryTx."""

    def __init__(self, tx: MemoryTx, user_id: str) -> None:
        self.tx, self.user_id, self.config = tx, user_id, tx.config

    def _sum(self, *reasons: str) -> int:
        return sum(x["delta"] for x in self.tx.lines if x["run_id"] == "run_1" and x["reason"] in reasons)

    @property
    def charged(self) -> int:
        return -self._sum("run")

    @property
    def refunded(self) -> int:
        return self._sum("refund", "unused")

    def refund(self, amount: int | None = None, reason: str = "refund") -> bool:
        left = self.charged - self.refunded
        amount = left if amount is None else min(amount, left)
        return self.tx.add_line(self.user_id, amount, reason, run_id="run_1",
                                external_id=f"{reason}:run_1")

    def charge_extra(self, amount: int) -> int:
        amount = max(0, min(amount, self.tx.balance(self.user_id)))
        if amount and self.tx.add_line(self.user_id, -amount, "run", run_id="run_1",
                                       external_id="extra:run_1"):
            return amount
        return 0


def test_the_gate_and_the_settlement_use_only_the_kernels_types():
    env = {"LEVQOR_BILLING": "local"}
    user = {"id": "usr_1", "email": "a@example.com", "plan": "pro"}
    tx = MemoryTx(env, {"usr_1": user})
    gate = MemoryGate(tx, user)
    assert isinstance(tx, BillingTransaction) and isinstance(gate, RunGate)
    assert isinstance(tx.config, HostConfig)
    # local billing: the pro plan's monthly credits, once a month, then the run's charge
    assert levqor_stripe.gate_run(user, {"kind": "run"}, 30, gate) == {"allow": True, "charged": 30}
    assert levqor_stripe.gate_run(user, {"kind": "run"}, 30, gate) == {"allow": True, "charged": 30}
    assert [x["reason"] for x in tx.lines] == ["subscription", "run", "run"]
    assert tx.balance("usr_1") == 5000 - 60
    # a settlement gives back what the steps did not use, and a platform failure in full
    settle = MemorySettlement(tx, "usr_1")
    assert isinstance(settle, RunSettlement)
    levqor_stripe.record_run_cost(user, {"charged": 60}, 45, settle)
    assert tx.balance("usr_1") == 5000 - 45
    levqor_stripe.record_run_cost(user, {"charged": 60, "platform_failure": True}, 45, settle)
    assert tx.balance("usr_1") == 5000
    # steps that ran more than once (a loop's items) are charged beyond the reservation
    settle = MemorySettlement(tx, "usr_1")
    tx.lines = [x for x in tx.lines if x["run_id"] != "run_1"]
    tx.add_line("usr_1", -10, "run", run_id="run_1")
    levqor_stripe.record_run_cost(user, {"charged": 10}, 25, settle)
    assert settle.charged == 25
    # no ledger: no gate
    assert levqor_stripe.gate_run(user, {}, 30, None) is None


def test_the_free_plans_daily_run_is_refused_with_the_next_day():
    user = {"id": "usr_2", "plan": "free"}
    tx = MemoryTx({"LEVQOR_BILLING": "local"}, {"usr_2": user})
    decision = levqor_stripe.gate_run(user, {"kind": "run"}, 10, MemoryGate(tx, user, 1))
    assert decision["allow"] is False and decision["status"] == 402
    assert decision["retry_at"] == "2026-03-15T00:00:00+00:00"


class MemoryLedger:
    """A Ledger whose grant follows the host's: never below zero."""

    def __init__(self, tx: MemoryTx) -> None:
        self.tx, self.config = tx, tx.config

    @contextmanager
    def transaction(self) -> Iterator[MemoryTx]:
        yield self.tx

    def balance(self, user_id: str) -> int:
        return self.tx.balance(user_id)

    def runs_today(self, user_id: str) -> int:
        return 0

    def account(self, user_id: str) -> dict | None:
        return None

    def lines(self, user_id: str, limit: int = 100) -> list[dict]:
        return self.tx.lines[-limit:]

    def grant(self, user_id, amount, reason="grant", external_id=None) -> bool:
        return self.tx.add_line(user_id, amount, reason, external_id=external_id)


class MemoryUsers:
    def __init__(self, users: dict[str, dict]) -> None:
        self.by_id = users

    def get_by_email(self, email: str) -> dict | None:
        return next((u for u in self.by_id.values() if u["email"] == email), None)


class MemoryHost:
    def __init__(self, ledger: MemoryLedger, users: dict[str, dict]) -> None:
        self.ledger, self.users = ledger, MemoryUsers(users)
        self.store = self


class Group(click.Group):
    """A command group that hands commands the host, like the ``levqor`` group."""

    def __init__(self, host: MemoryHost) -> None:
        super().__init__("levqor")
        self.host = host

    def levqor_state(self) -> MemoryHost:
        return self.host


def test_credits_cli_catches_insufficient_credits_by_class():
    user = {"id": "usr_3", "email": "c@example.com", "plan": "free"}
    tx = MemoryTx({}, {"usr_3": user})
    ledger = MemoryLedger(tx)
    assert isinstance(ledger, Ledger)
    group = Group(MemoryHost(ledger, {"usr_3": user}))
    assert isinstance(group, HostCommandGroup)
    group.add_command(credits)
    r = CliRunner().invoke(group, ["credits", "grant", "c@example.com", "5"])
    assert r.exit_code == 0 and "+5 credits, balance 5" in r.output, r.output
    r = CliRunner().invoke(group, ["credits", "grant", "c@example.com", "--", "-9"])
    assert r.exit_code == 1 and "cannot take 9: the balance would go below zero" in r.output
    assert tx.balance("usr_3") == 5
    # a group that cannot hand over the host says so
    other = click.Group("other")
    other.add_command(credits)
    r = CliRunner().invoke(other, ["credits", "balance", "c@example.com"])
    assert r.exit_code == 1 and "offers no levqor_state()" in r.output


def test_the_billing_page_is_declared_and_its_files_are_served():
    assert levqor_stripe.register_dashboard_pages() == [BILLING_PAGE]
    assert isinstance(BILLING_PAGE, DashboardPage)
    assert (BILLING_PAGE.path, BILLING_PAGE.nav_label) == ("/billing", "Billing")
    app = Flask("t")
    app.register_blueprint(bp)
    c = app.test_client()
    js = c.get(BILLING_PAGE.script)
    assert js.status_code == 200 and "javascript" in js.content_type
    # the module imports the dashboard's modules from the same origin, by absolute path
    text = js.get_data(as_text=True)
    imports = [line.split(" from ")[1] for line in text.splitlines() if line.startswith("import ")]
    assert imports and all(i.strip('";').startswith("/dashboard/static/js/") for i in imports)
    template = Path(bp.root_path, bp.template_folder, BILLING_PAGE.template).read_text()
    assert '{% extends "base.html" %}' in template and "<script" not in template
    assert " style=" not in template and not re.search(r"\son[a-z]+\s*=", template)


@pytest.mark.parametrize("module", ["levqor_stripe", "levqor_stripe.web", "levqor_stripe.commands"])
def test_the_plugin_never_imports_the_host(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('levqor_host')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
