"""The credit ledger: balances, the atomic run gate, refunds, usage and referral rewards.

Credits live only as ledger lines (``credit_ledger``): a balance is the sum of a user's lines,
never a mutable number. The ledger holds the billing rules; its SQL is the store's
(``store.ledger``, :class:`~levqor_host.store.ledger.LedgerRepository`). Every change that must
be atomic happens in one write transaction (:meth:`Ledger.transaction`, ``BEGIN IMMEDIATE`` on
SQLite; on PostgreSQL the user's row is locked with ``SELECT ... FOR UPDATE`` first, so that two
requests of one user take turns), which the caller opens and hands to the rules:

- starting a run: :meth:`Ledger.gate` (the ``gate_run`` hook, given a :class:`RunGate`) in the
  transaction that creates the run row, so the reservation and the row commit together;
- finishing a run: :meth:`Ledger.settle` (the ``record_run_cost`` hook, given a
  :class:`RunSettlement`: refunds), ``usage_daily``, analytics events and referral rewards;
- external billing events (a plugin's webhook): the event id is stored in ``processed_events``
  in the same transaction as its effect (:class:`BillingTx`), so a replay changes nothing;
- the low-credit warning: when a user's balance falls from at least
  ``LEVQOR_LOW_CREDIT_THRESHOLD`` to below it, see :class:`LowCredit`.

The host never imports a billing plugin: plugins receive these objects through hooks, or
``state.ledger`` in their routes and commands.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from levqor_kernel.ai import price_tokens
from levqor_kernel.host import InsufficientCredits
from levqor_kernel.pipeline import step_type, walk_steps
from levqor_kernel.runner import RunResult
from sqlalchemy import Connection

from levqor_host.billing.gate import RunGate, day_start, gate_run
from levqor_host.billing.low_credit import LowCredit
from levqor_host.billing.settlement import (
    RunCost,
    RunSettlement,
    add_usage,
    is_platform_failure,
    record_run_cost,
    run_cost,
)

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.config import Config
    from levqor_host.store import Store
    from levqor_host.store.ledger import LedgerRepository

log = logging.getLogger("levqor.ledger")

#: the date a provider appends to a model's name for one snapshot of it (-2024-07-18, -0613)
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
#: ``reward(tx, user_id)``: the referral reward of a user's succeeded run, or None
ReferralReward = Callable[["BillingTx", str], "dict | None"]


def parse_price_overrides(raw: str | None) -> dict[tuple[str, str], int]:
    """``LEVQOR_PRICES``: ``connector.action=credits`` pairs, comma separated."""
    out: dict[tuple[str, str], int] = {}
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        connector, dot, action = name.strip().partition(".")
        if not sep or not dot or not connector or not action:
            raise ValueError(f"LEVQOR_PRICES: expected connector.action=credits, got {part!r}")
        try:
            credits = int(value)
        except ValueError:
            raise ValueError(f"LEVQOR_PRICES: {name} must be a whole number of credits") from None
        if credits < 0:
            raise ValueError(f"LEVQOR_PRICES: {name} must not be negative")
        out[(connector, action)] = credits
    return out


# --------------------------------------------------------------------------- transaction API


class BillingTx:
    """One write transaction over the billing tables (from :meth:`Ledger.transaction`)."""

    def __init__(self, ledger: Ledger, conn: Connection) -> None:
        self.ledger = ledger
        self.conn = conn
        self.repo: LedgerRepository = ledger.store.ledger
        #: users whose balance changed in this transaction (a run's reservation excepted: it is
        #: looked at when the run is settled), for the low-credit warning
        self.balance_changed: set[str] = set()
        self._after_commit: list[Callable[[], Any]] = []

    def after_commit(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once the transaction has committed (never when it rolls back)."""
        self._after_commit.append(fn)

    @property
    def config(self) -> Config:
        return self.ledger.config

    # users
    def lock_user(self, user_id: str) -> dict | None:
        """The user row, locked until the transaction ends (PostgreSQL; SQLite's whole
        database is already locked by ``BEGIN IMMEDIATE``)."""
        return self.repo.user(self.conn, user_id, lock=True)

    def set_plan(self, user_id: str, plan: str) -> bool:
        return self.repo.set_plan(self.conn, user_id, plan)

    # ledger lines
    def balance(self, user_id: str) -> int:
        return self.repo.balance(self.conn, user_id)

    def add_line(
        self,
        user_id: str,
        delta: int,
        reason: str,
        *,
        run_id: str | None = None,
        external_id: str | None = None,
    ) -> bool:
        """Append a ledger line. A negative ``delta`` never takes the balance below zero
        (raises :class:`InsufficientCredits`); an ``external_id`` seen before adds nothing and
        returns False."""
        delta = int(delta)
        if external_id is not None and self.repo.has_external_id(self.conn, external_id):
            return False
        if delta < 0:
            bal = self.balance(user_id)
            if bal + delta < 0:
                raise InsufficientCredits(-delta, bal)
        self.repo.add_line(
            self.conn, user_id, delta, reason, run_id=run_id, external_id=external_id
        )
        if not (reason == "run" and run_id is not None):
            self.balance_changed.add(user_id)
        return True

    # external events
    def claim_event(self, key: str, type: str) -> bool:
        """Store an external event id; False when it was processed before (do nothing then)."""
        return self.repo.claim_event(self.conn, key, type)

    # billing accounts
    def account(self, user_id: str) -> dict | None:
        return self.repo.account(self.conn, user_id)

    def user_id_for_customer(self, customer_id: str) -> str | None:
        return self.repo.user_id_for_customer(self.conn, customer_id)

    def save_account(self, user_id: str, provider: str, **values: Any) -> None:
        """Insert or update the user's billing account (customer_id, subscription_id, status,
        plan_event_at, plan_event_rank)."""
        self.repo.save_account(self.conn, user_id, provider, **values)

    # analytics
    def event(
        self,
        type: str,
        user_id: str | None = None,
        *,
        email: str | None = None,
        props: dict | None = None,
    ) -> None:
        """Record an analytics event (the email only as a keyed hash)."""
        email_hash = self.ledger.hasher(email) if email else None
        self.ledger.store.events.add(self.conn, type, user_id, email_hash=email_hash, props=props)


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The host's credit ledger of one app (``state.ledger``).

    Handed what it works with: the store (its transactions and ``store.ledger``), the
    configuration (``prices``, ``base_url``, ``referral_bonus``), the plugin manager (prices,
    ``gate_run``, ``record_run_cost``), the email hasher of analytics events and, optionally,
    the referral reward of a succeeded run and the low-credit warning."""

    def __init__(
        self,
        store: Store,
        config: Config,
        pm: LevqorPluginManager,
        hasher: Callable[[str], str],
        *,
        reward_referral: ReferralReward | None = None,
        low_credit: LowCredit | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.pm = pm
        self.hasher = hasher
        self.reward_referral = reward_referral
        self.price_overrides = parse_price_overrides(config.billing.prices)
        #: LEVQOR_MODEL_RATES: the operator's token rates, over every connector's own
        self.model_rates = dict(config.billing.model_rates)
        #: users known to have a finished (succeeded or failed) run: no "first_run" any more
        self._finished_users: set[str] = set()
        #: the low-credit warning (when email is configured)
        self.low_credit = low_credit

    def _remember_finished(self, user_id: str) -> None:
        if len(self._finished_users) >= 100_000:  # bounded: forgetting only costs a query
            self._finished_users.clear()
        self._finished_users.add(user_id)

    @contextmanager
    def transaction(self) -> Iterator[BillingTx]:
        """One write transaction; commits when the block ends without an exception."""
        with self.store.write() as conn:
            tx = BillingTx(self, conn)
            yield tx
            self._check_low_credit(tx)
        for fn in tx._after_commit:
            try:
                fn()
            except Exception:  # noqa: BLE001 - what follows a commit never undoes it
                log.exception("after-commit action failed")

    def _check_low_credit(self, tx: BillingTx) -> None:
        if self.low_credit is None or not tx.balance_changed:
            return
        for user_id in sorted(tx.balance_changed):
            try:
                with tx.conn.begin_nested():
                    self.low_credit.check(tx, user_id)
            except Exception:  # noqa: BLE001 - a warning must not undo the billing it follows
                log.exception("low-credit check failed for user %s", user_id)

    # reads
    def balance(self, user_id: str) -> int:
        with self.store.read() as conn:
            return self.store.ledger.balance(conn, user_id)

    def runs_today(self, user_id: str) -> int:
        """The user's runs created since midnight UTC, except refunded ones."""
        with self.store.read() as conn:
            return self.store.ledger.runs_since(conn, user_id, day_start())

    def account(self, user_id: str) -> dict | None:
        with self.store.read() as conn:
            return self.store.ledger.account(conn, user_id)

    def lines(self, user_id: str, limit: int = 100) -> list[dict]:
        """The user's newest ledger lines first."""
        with self.store.read() as conn:
            return self.store.ledger.lines(conn, user_id, limit)

    def grant(
        self, user_id: str, amount: int, reason: str = "grant", external_id: str | None = None
    ) -> bool:
        """Add (or with a negative amount, take away, never below zero) credits."""
        with self.transaction() as tx:
            if tx.lock_user(user_id) is None:
                raise LookupError(f"no user {user_id!r}")
            return tx.add_line(user_id, amount, reason, external_id=external_id)

    # pricing
    def step_price(self, step: dict) -> int:
        """A step's price: the catalog's, ``LEVQOR_PRICES`` overrides, the ``price_task`` hook."""
        connector, action = step.get("connector"), step.get("action")
        a = self.pm.catalog.action(connector, action)
        base = self.price_overrides.get((connector, action), a.price if a else 0)
        p = self.pm.hook.price_task(
            connector=connector, action=action, payload=step.get("payload", {}), price=base
        )
        return int(base if p is None else p)

    def rates(self, connector: str) -> dict[str, Any]:
        """The token rates of ``connector``'s metered actions: its description's ``rates``,
        overridden model by model by ``LEVQOR_MODEL_RATES``."""
        info = self.pm.catalog.get(connector)
        return {**(info.rates if info is not None else {}), **self.model_rates}

    def token_price(self, step: dict) -> int:
        """What a metered step's tokens cost (``step["usage"]``, at :meth:`rates`); 0 for a
        step without usage. A dated snapshot of a model (``gpt-4o-mini-2024-07-18``, what a
        server answers for ``gpt-4o-mini``) takes its model's rate when it has none of its own."""
        usage = step.get("usage")
        if not usage:
            return 0
        rates = self.rates(step.get("connector") or "")
        model = str(usage.get("model"))
        if model not in rates:
            base = _SNAPSHOT.sub("", model)
            if base in rates:
                usage = {**usage, "model": base}
        return price_tokens(usage, rates)

    def price(self, doc: dict) -> int:
        """What a run of ``doc`` reserves: every action step once (a loop body counts once, an
        untaken branch too; the settlement charges the steps that ran), an agent step as one
        model turn (its tool calls and tokens are charged when the run settles)."""
        steps = walk_steps([*doc.get("steps", []), *doc.get("on_failure", [])])
        total = 0
        for s, _depth in steps:
            kind = step_type(s)
            if kind == "action":
                total += self.step_price(s)
            elif kind == "agent":
                info = self.pm.catalog.get(s.get("connector"))
                turn = info.agent_action if info is not None else None
                if turn:
                    total += self.step_price({"connector": info.name, "action": turn})
        return total

    # runs
    def gate(self, tx: BillingTx, user: dict, pipeline: dict, run_id: str, price: int) -> RunGate:
        """The billing gate of a new run, in ``tx`` (the transaction that creates the run):
        locks the user, asks ``gate_run`` and reserves what it charges. Raises ApiError
        (402) when the run is refused."""
        locked = tx.lock_user(user["id"]) or user
        return gate_run(tx, self.pm, locked, pipeline, run_id, price)

    def cost(
        self, run: dict, result: RunResult, doc: dict | None = None, *, pending: Iterable[dict] = ()
    ) -> RunCost:
        """What a final run cost (read before its settlement's transaction). ``doc``: the
        pipeline document when ``result.records`` cover every step of the run; ``pending``:
        its step rows not written yet (a resumed run's last steps)."""
        return run_cost(
            self.store, self.pm, self.step_price, run, result, doc, self.token_price, pending
        )

    def settle(self, tx: BillingTx, run: dict, result: RunResult, cost: RunCost) -> dict:
        """The settlement of a final run inside ``tx``, whose caller has claimed the run's
        ``settled_at``: ``record_run_cost`` (refunds), ``usage_daily``, events and the referral
        reward. Returns what was recorded."""
        uid, rid = run["user_id"], run["id"]
        platform = result.status == "failed" and is_platform_failure(result.error or {})
        out: dict[str, Any] = {"cost": cost.cost, "platform_failure": platform, "settled": True}
        settle = record_run_cost(tx, self.pm, run, result, cost.cost)
        spent = settle.charged - settle.refunded
        out["credits"] = spent
        if spent or settle.charged:
            tx.balance_changed.add(uid)  # the run's final cost is known: low-credit check
        add_usage(tx, uid, cost, spent)
        # a user seen with a finished run keeps having one: ask the database once per process
        first = uid not in self._finished_users and not tx.repo.has_other_finished_run(
            tx.conn, uid, rid
        )
        if not first or result.status in ("succeeded", "failed"):
            tx.after_commit(lambda: self._remember_finished(uid))
        props = {"run_id": rid, "pipeline_id": run["pipeline_id"], "steps": cost.steps}
        if first:
            tx.event("first_run", uid, props={**props, "status": result.status})
        if result.status in ("succeeded", "failed"):
            tx.event(f"run_{result.status}", uid, props=props)
        if result.status == "succeeded" and self.reward_referral is not None:
            out["referral"] = self.reward_referral(tx, uid)
        return out


__all__ = [
    "BillingTx",
    "InsufficientCredits",
    "Ledger",
    "LowCredit",
    "RunCost",
    "RunGate",
    "RunSettlement",
    "day_start",
    "is_platform_failure",
    "parse_price_overrides",
]
