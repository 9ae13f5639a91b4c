"""The credit ledger: balances, the atomic run gate, refunds, usage and referral rewards.

Credits live only as ledger lines (``credit_ledger``): a balance is the sum of a user's lines,
never a mutable number. Every change that must be atomic happens in one write transaction of
the store (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the user's row is locked with
``SELECT ... FOR UPDATE`` first, so that two requests of one user take turns):

- starting a run: the billing gate (the ``gate_run`` hook, given a :class:`RunGate`), the
  credit reservation and the run row commit together or not at all;
- finishing a run: the ``record_run_cost`` hook (given a :class:`RunSettlement`: refunds),
  ``usage_daily``, analytics events and referral rewards;
- external billing events (a plugin's webhook): the event id is stored in ``processed_events``
  in the same transaction as its effect (:class:`BillingTx`), so a replay changes nothing.

- the low-credit warning: when a user's balance falls from at least
  ``LEVQOR_LOW_CREDIT_THRESHOLD`` to below it, see :class:`LowCredit`.

The host never imports a billing plugin: plugins receive these objects through hooks, or
``state.ledger`` in their routes and commands.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from levqor_kernel.host import InsufficientCredits
from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from levqor_host.errors import ApiError
from levqor_host.store.tables import (
    billing_accounts,
    credit_ledger,
    meta,
    processed_events,
    runs,
    usage_daily,
    users,
)

if TYPE_CHECKING:
    from levqor_host.services import Services
    from levqor_host.store import Store

log = logging.getLogger("levqor.ledger")

# Error types the kernel's runner reports for failures of the user's data or of an upstream
# service. Anything else (an unexpected exception inside a connector, a crash of the executor,
# a connector that is not installed) is the platform's fault and refunded.
USER_ERROR_TYPES = frozenset(
    {
        "ConnectorError",
        "RetryableError",
        "PermanentError",
        "CredentialError",
        "PayloadError",
        "TemplateError",
        "BlockedURLError",
        "Cancelled",
    }
)
PLATFORM_ERROR_CODES = frozenset({"unknown_connector"})


def _now() -> datetime:
    return datetime.now(UTC)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day (daily limits reset then)."""
    now = now or _now()
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def is_platform_failure(error: dict | None) -> bool:
    """Whether a failed run failed because of the platform rather than the user's data."""
    if not error:
        return False
    if error.get("platform"):
        return True
    if error.get("code") in PLATFORM_ERROR_CODES:
        return True
    return error.get("type") not in USER_ERROR_TYPES


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
        #: users whose balance changed in this transaction (a run's reservation excepted: it is
        #: looked at when the run is settled), for the low-credit warning
        self.balance_changed: set[str] = set()
        self._after_commit: list[Callable[[], Any]] = []

    def after_commit(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once the transaction has committed (never when it rolls back)."""
        self._after_commit.append(fn)

    @property
    def env(self):
        return self.ledger.config.env

    # users
    def lock_user(self, user_id: str) -> dict | None:
        """The user row, locked until the transaction ends (PostgreSQL; SQLite's whole
        database is already locked by ``BEGIN IMMEDIATE``)."""
        pg = self.ledger.store.dialect == "postgresql"
        row = self.conn.execute(_USER_FOR_UPDATE if pg else _USER, {"user_id": user_id}).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "email": row.email,
            "name": row.name,
            "plan": row.plan,
            "is_admin": bool(row.is_admin),
            "referral_code": row.referral_code,
            "created_at": row.created_at.isoformat(),
        }

    def set_plan(self, user_id: str, plan: str) -> bool:
        res = self.conn.execute(update(users).where(users.c.id == user_id).values(plan=plan))
        return res.rowcount == 1

    # ledger lines
    def balance(self, user_id: str) -> int:
        return int(
            self.conn.execute(
                select(func.coalesce(func.sum(credit_ledger.c.delta), 0)).where(
                    credit_ledger.c.user_id == user_id
                )
            ).scalar_one()
        )

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
        if external_id is not None:
            seen = self.conn.execute(
                select(credit_ledger.c.id).where(credit_ledger.c.external_id == external_id)
            ).first()
            if seen is not None:
                return False
        if delta < 0:
            bal = self.balance(user_id)
            if bal + delta < 0:
                raise InsufficientCredits(-delta, bal)
        self.conn.execute(
            credit_ledger.insert().values(
                id=_id("led"),
                user_id=user_id,
                delta=delta,
                reason=reason,
                run_id=run_id,
                external_id=external_id,
                created_at=_now(),
            )
        )
        if not (reason == "run" and run_id is not None):
            self.balance_changed.add(user_id)
        return True

    # external events
    def claim_event(self, key: str, type: str) -> bool:
        """Store an external event id; False when it was processed before (do nothing then)."""
        ins = self.ledger.store._insert(processed_events).values(
            key=key, type=type, created_at=_now()
        )
        ins = ins.on_conflict_do_nothing(index_elements=[processed_events.c.key]).returning(
            processed_events.c.key
        )
        return self.conn.execute(ins).first() is not None

    # billing accounts
    def account(self, user_id: str) -> dict | None:
        row = self.conn.execute(
            select(billing_accounts).where(billing_accounts.c.user_id == user_id)
        ).first()
        return dict(row._mapping) if row else None

    def user_id_for_customer(self, customer_id: str) -> str | None:
        return self.conn.execute(
            select(billing_accounts.c.user_id).where(billing_accounts.c.customer_id == customer_id)
        ).scalar_one_or_none()

    def save_account(self, user_id: str, provider: str, **values: Any) -> None:
        """Insert or update the user's billing account (customer_id, subscription_id, status,
        plan_event_at, plan_event_rank)."""
        allowed = {"customer_id", "subscription_id", "status", "plan_event_at", "plan_event_rank"}
        bad = set(values) - allowed
        if bad:
            raise TypeError(f"unknown billing account fields: {sorted(bad)}")
        values = {k: v for k, v in values.items() if v is not None}
        if self.account(user_id) is None:
            self.conn.execute(
                billing_accounts.insert().values(
                    user_id=user_id,
                    provider=provider,
                    plan_event_at=values.pop("plan_event_at", 0),
                    plan_event_rank=values.pop("plan_event_rank", 0),
                    updated_at=_now(),
                    **values,
                )
            )
        else:
            self.conn.execute(
                update(billing_accounts)
                .where(billing_accounts.c.user_id == user_id)
                .values(provider=provider, updated_at=_now(), **values)
            )

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


class RunGate:
    """What ``gate_run`` receives as ``ledger``: the user's credits inside the transaction that
    will create the run (the user is locked). ``charge()`` reserves credits for the run."""

    def __init__(self, tx: BillingTx, user: dict, run_id: str, price: int) -> None:
        self.tx = tx
        self.user = user
        self.user_id = user["id"]
        self.plan = user.get("plan") or "free"
        self.run_id = run_id
        self.price = price
        self.charged = 0
        self.now = _now()

    @property
    def env(self):
        return self.tx.env

    @property
    def base_url(self) -> str:
        """The deployment's public address (``LEVQOR_BASE_URL``), for links in refusals."""
        return self.tx.ledger.config.base_url

    @property
    def day_started_at(self) -> datetime:
        return day_start(self.now)

    @property
    def next_day_at(self) -> datetime:
        return self.day_started_at + timedelta(days=1)

    def balance(self) -> int:
        return self.tx.balance(self.user_id)

    def runs_today(self) -> int:
        """The user's runs created since midnight UTC, except refunded ones."""
        refunded = exists().where(
            and_(credit_ledger.c.run_id == runs.c.id, credit_ledger.c.reason == "refund")
        )
        return int(
            self.tx.conn.execute(
                select(func.count())
                .select_from(runs)
                .where(
                    runs.c.user_id == self.user_id,
                    runs.c.created_at >= self.day_started_at,
                    ~refunded,
                )
            ).scalar_one()
        )

    def charge(self, amount: int, reason: str = "run") -> None:
        """Reserve ``amount`` credits for this run (raises :class:`InsufficientCredits`)."""
        amount = int(amount)
        if amount < 0:
            raise ValueError("a charge cannot be negative")
        if amount == 0:
            return
        self.tx.add_line(self.user_id, -amount, reason, run_id=self.run_id)
        self.charged += amount


class RunSettlement:
    """What ``record_run_cost`` receives as ``ledger`` when a run is final."""

    def __init__(self, tx: BillingTx, user_id: str, run_id: str) -> None:
        self.tx = tx
        self.user_id = user_id
        self.run_id = run_id
        self._cached: list[int] | None = None

    @property
    def env(self):
        return self.tx.env

    def _sums(self) -> list[int]:
        """[charged, refunded] of the run, read once per settlement (refund() keeps it up to
        date: the settlement holds the run's ``settled_at`` claim, nothing else writes them)."""
        if self._cached is None:
            charged, refunded = self.tx.conn.execute(_RUN_SUMS, {"run_id": self.run_id}).one()
            self._cached = [-int(charged), int(refunded)]
        return self._cached

    @property
    def charged(self) -> int:
        """Credits reserved for the run (positive)."""
        return self._sums()[0]

    @property
    def refunded(self) -> int:
        return self._sums()[1]

    def refund(self, amount: int | None = None, reason: str = "refund") -> bool:
        """Give back ``amount`` (default: all) of what the run was charged, once per reason.
        A ``refund`` line (even of 0 credits) also stops the run counting towards daily
        limits. Returns False when this refund was made before."""
        if reason not in ("refund", "unused"):
            raise ValueError("reason must be 'refund' or 'unused'")
        left = max(0, self.charged - self.refunded)
        amount = left if amount is None else max(0, min(int(amount), left))
        added = self.tx.add_line(
            self.user_id,
            amount,
            reason,
            run_id=self.run_id,
            external_id=f"{reason}:{self.run_id}",
        )
        if added:
            self._sums()[1] += amount
        return added


class LowCredit:
    """The low-credit warning, once per crossing of the threshold.

    A user is *armed* (a ``meta`` row ``low_credit.<user id>``) whenever their balance is seen
    at or above the threshold; when it is seen below, the row is deleted and, if there was one,
    this is a crossing: ``notify(user, balance, crossing_id)`` is called after the commit. The
    check runs inside the billing transaction that changed the balance, with the user's row
    locked, so two workers settling at once see one crossing between them; the state is in
    the database, so it holds across processes and restarts. A run's reservation is looked at
    when the run is settled, so a reservation that is refunded does not warn.
    """

    def __init__(self, threshold: int, notify: Callable[[dict, int, str], Any]) -> None:
        self.threshold = threshold
        self.notify = notify

    def check(self, tx: BillingTx, user_id: str) -> None:
        user = tx.lock_user(user_id)
        if user is None:
            return
        key = f"low_credit.{user_id}"
        balance = tx.balance(user_id)
        armed = tx.conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
        if balance >= self.threshold:
            if armed is None:
                tx.conn.execute(
                    meta.insert().values(key=key, value=uuid.uuid4().hex, updated_at=_now())
                )
        elif armed is not None:
            tx.conn.execute(delete(meta).where(meta.c.key == key))
            crossing = armed.value
            tx.after_commit(lambda: self.notify(user, balance, crossing))


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The host's credit ledger of one app (``state.ledger``)."""

    def __init__(self, store: Store, config: Any, hasher: Any) -> None:
        self.store = store
        self.config = config
        self.hasher = hasher  # analytics.EmailHasher
        self.price_overrides = parse_price_overrides(getattr(config, "prices", None))
        #: users known to have a finished (succeeded or failed) run: no "first_run" any more
        self._finished_users: set[str] = set()
        #: the low-credit warning (set by the app when email is configured)
        self.low_credit: LowCredit | None = None

    def _remember_finished(self, user_id: str) -> None:
        if len(self._finished_users) >= 100_000:  # bounded: forgetting only costs a query
            self._finished_users.clear()
        self._finished_users.add(user_id)

    @property
    def env(self):
        return self.config.env

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
            return BillingTx(self, conn).balance(user_id)

    def runs_today(self, user_id: str) -> int:
        with self.store.read() as conn:
            tx = BillingTx(self, conn)
            return RunGate(tx, {"id": user_id}, "", 0).runs_today()

    def account(self, user_id: str) -> dict | None:
        with self.store.read() as conn:
            return BillingTx(self, conn).account(user_id)

    def lines(self, user_id: str, limit: int = 100) -> list[dict]:
        """The user's newest ledger lines first."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(credit_ledger)
                .where(credit_ledger.c.user_id == user_id)
                .order_by(credit_ledger.c.created_at.desc(), credit_ledger.c.id)
                .limit(limit)
            ).all()
        return [
            {
                "id": r.id,
                "delta": r.delta,
                "reason": r.reason,
                "run_id": r.run_id,
                "external_id": r.external_id,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]

    def grant(
        self, user_id: str, amount: int, reason: str = "grant", external_id: str | None = None
    ) -> bool:
        """Add (or with a negative amount, take away, never below zero) credits."""
        with self.transaction() as tx:
            if tx.lock_user(user_id) is None:
                raise LookupError(f"no user {user_id!r}")
            return tx.add_line(user_id, amount, reason, external_id=external_id)

    # pricing
    def step_price(self, pm: Any, step: dict) -> int:
        connector, action = step.get("connector"), step.get("action")
        a = pm.catalog.action(connector, action)
        base = self.price_overrides.get((connector, action), a.price if a else 0)
        p = pm.hook.price_task(
            connector=connector, action=action, payload=step.get("payload", {}), price=base
        )
        return int(base if p is None else p)

    def price(self, pm: Any, doc: dict) -> int:
        return sum(self.step_price(pm, s) for s in doc.get("steps", []))

    # runs
    def start_run(
        self,
        state: Services,
        user: dict,
        pipeline: dict,
        version: int,
        input: Any,
        *,
        price: int,
        trigger: str,
        idempotency_key: str | None,
        retry_of: str | None,
        copy_steps_from: str | None,
    ) -> tuple[dict, bool]:
        """Gate, reserve and create the run in one transaction; ApiError 402 when refused."""
        run_id = _id("run")
        with self.transaction() as tx:
            locked = tx.lock_user(user["id"]) or user
            if idempotency_key is not None:
                row = tx.conn.execute(
                    select(runs.c.id).where(
                        runs.c.user_id == user["id"], runs.c.idempotency_key == idempotency_key
                    )
                ).first()
                if row is not None:
                    return state.store.create_run_in(
                        tx.conn,
                        user["id"],
                        pipeline["id"],
                        version,
                        input,
                        idempotency_key=idempotency_key,
                    )
            gate = RunGate(tx, locked, run_id, price)
            try:
                decision = state.pm.hook.gate_run(
                    user=locked, pipeline=pipeline, price=price, ledger=gate
                )
            except InsufficientCredits as e:
                decision = {
                    "allow": False,
                    "reason": f"this run costs {e.needed} credits and your balance is {e.balance}",
                }
            if decision is not None and not decision.get("allow", False):
                raise ApiError(
                    int(decision.get("status", 402)),
                    decision.get("code", "payment_required"),
                    decision.get("reason", "this run is not allowed by your plan"),
                    {
                        "retry_at": decision.get("retry_at"),
                        "price": price,
                        **(decision.get("details") or {}),
                    },
                )
            return state.store.create_run_in(
                tx.conn,
                user["id"],
                pipeline["id"],
                version,
                input,
                run_id=run_id,
                trigger=trigger,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                copy_steps_from=copy_steps_from,
            )

    def settle_run(self, state: Services, run: dict, result: Any) -> dict:
        """After a run is final: ``record_run_cost`` (refunds), ``usage_daily``, events and the
        referral reward, in one transaction that first claims the run's ``settled_at`` (so a
        run is settled once). Returns what was recorded (``settled`` False: settled already)."""
        prepared = self._prepare_settlement(state, run, result)
        with self.transaction() as tx:
            claimed = tx.conn.execute(
                update(runs)
                .where(runs.c.id == run["id"], runs.c.settled_at.is_(None))
                .values(settled_at=_now())
            )
            if claimed.rowcount != 1:  # settled already (a repair sweep raced a worker)
                return {"settled": False}
            out = self._settle_in(tx, state, run, result, prepared)
        if out.pop("user_has_finished_run"):
            self._remember_finished(run["user_id"])
        return out

    def finish_and_settle(
        self,
        state: Services,
        run: dict,
        result: Any,
        worker_id: str,
        steps: list[dict],
    ) -> dict | None:
        """The end of a run in one write transaction: the step rows not yet written, the final
        status (only while ``worker_id`` still holds the lease) and the settlement. None when the
        lease was lost (the step rows are written all the same; the settlement is not)."""
        prepared = self._prepare_settlement(state, run, result)
        with self.transaction() as tx:
            state.store.record_steps_in(tx.conn, steps)
            if not state.store.finish_run_in(
                tx.conn, run["id"], worker_id, result.status, result.error, settled=True
            ):
                return None
            out = self._settle_in(tx, state, run, result, prepared)
        if out.pop("user_has_finished_run"):
            self._remember_finished(run["user_id"])
        return out

    def _prepare_settlement(self, state: Services, run: dict, result: Any) -> dict:
        """What the settlement needs that is read outside its transaction: the steps that ran
        in this run (not those copied from a retried one), their cost and minutes saved."""
        uid, rid = run["user_id"], run["id"]
        rows = getattr(result, "levqor_rows", None)
        doc = getattr(result, "levqor_doc", None)
        if rows is None or doc is None or not run.get("created_at"):
            full = state.store.get_run(None, rid) or {"steps": []}
            version = state.store.get_version(uid, run["pipeline_id"], run["version"])
            doc = (version or {}).get("doc", {})
        else:  # the executor passed what it recorded (a run that was not resumed)
            full = {"steps": rows, "created_at": run.get("created_at")}
        created = _as_dt(run.get("created_at") or full.get("created_at"))
        doc_steps: dict[str, dict] = {}
        for s in doc.get("steps", []):
            doc_steps[s.get("id")] = s
        executed = [
            s
            for s in full["steps"]
            if s["status"] in ("succeeded", "failed")
            and s.get("attempts", 0) > 0
            and (created is None or (_as_dt(s.get("started_at")) or created) >= created)
        ]
        cost = sum(self.step_price(state.pm, doc_steps.get(s["step_id"], s)) for s in executed)
        minutes = 0.0
        for s in executed:
            if s["status"] == "succeeded":
                a = state.pm.catalog.action(s["connector"], s["action"])
                minutes += float(getattr(a, "minutes_saved", 0) or 0)
        return {"cost": cost, "minutes": minutes, "steps": len(executed)}

    def _settle_in(
        self, tx: BillingTx, state: Services, run: dict, result: Any, prepared: dict
    ) -> dict:
        """The settlement inside ``tx``, whose caller has claimed the run's ``settled_at``."""
        from levqor_host.growth.analytics import reward_referral

        uid, rid = run["user_id"], run["id"]
        error = result.error or {}
        platform = result.status == "failed" and is_platform_failure(error)
        cost, n_steps = prepared["cost"], prepared["steps"]
        out: dict[str, Any] = {"cost": cost, "platform_failure": platform, "settled": True}
        settle = RunSettlement(tx, uid, rid)
        if state.pm.hook.record_run_cost.get_hookimpls():
            user = tx.lock_user(uid) or {"id": uid}
            try:
                with tx.conn.begin_nested():
                    state.pm.hook.record_run_cost(
                        user=user,
                        run={
                            "id": rid,
                            "status": result.status,
                            "pipeline_id": run["pipeline_id"],
                            "platform_failure": platform,
                            "error": error or None,
                            "charged": settle.charged,
                        },
                        cost=cost,
                        ledger=settle,
                    )
            except Exception:  # noqa: BLE001 - billing plugins must not break run completion
                log.exception("record_run_cost failed for run %s", rid)
                settle._cached = None  # what the hook refunded was rolled back
        spent = settle.charged - settle.refunded
        out["credits"] = spent
        if spent or settle.charged:
            tx.balance_changed.add(uid)  # the run's final cost is known: low-credit check
        _add_usage(
            tx,
            uid,
            day_start().date(),
            jobs=1,
            steps=n_steps,
            credits=spent,
            minutes=prepared["minutes"],
        )
        # a user seen with a finished run keeps having one: ask the database once per process
        first = (
            uid not in self._finished_users
            and not tx.conn.execute(
                select(runs.c.id)
                .where(
                    runs.c.user_id == uid,
                    runs.c.id != rid,
                    runs.c.status.in_(("succeeded", "failed")),
                    runs.c.finished_at.is_not(None),
                )
                .limit(1)
            ).first()
        )
        # remembered once the transaction has committed (by the callers)
        out["user_has_finished_run"] = not first or result.status in ("succeeded", "failed")
        props = {"run_id": rid, "pipeline_id": run["pipeline_id"], "steps": n_steps}
        if first:
            tx.event("first_run", uid, props={**props, "status": result.status})
        if result.status in ("succeeded", "failed"):
            tx.event(f"run_{result.status}", uid, props=props)
        if result.status == "succeeded":
            out["referral"] = reward_referral(tx, uid, self.config.referral_bonus)
        return out


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _usage_upsert(insert_fn: Any) -> Any:
    ins = insert_fn(usage_daily)
    ex = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[usage_daily.c.user_id, usage_daily.c.day],
        set_={
            "jobs": usage_daily.c.jobs + ex.jobs,
            "steps": usage_daily.c.steps + ex.steps,
            "credits": usage_daily.c.credits + ex.credits,
            "cost_saving_minutes": usage_daily.c.cost_saving_minutes + ex.cost_saving_minutes,
        },
    )


# Statements of the settlement, built once (building one per call costs more CPU than running it)
_USAGE_UPSERT = {"postgresql": _usage_upsert(pg_insert), "sqlite": _usage_upsert(sqlite_insert)}
_USER = select(users).where(users.c.id == bindparam("user_id"))
_USER_FOR_UPDATE = _USER.with_for_update()
_RUN_SUMS = select(
    func.coalesce(func.sum(case((credit_ledger.c.reason == "run", credit_ledger.c.delta))), 0),
    func.coalesce(
        func.sum(case((credit_ledger.c.reason.in_(("refund", "unused")), credit_ledger.c.delta))),
        0,
    ),
).where(credit_ledger.c.run_id == bindparam("run_id"))


def _add_usage(
    tx: BillingTx, user_id: str, day: date, *, jobs: int, steps: int, credits: int, minutes: float
) -> None:
    tx.conn.execute(
        _USAGE_UPSERT[tx.ledger.store.dialect],
        {
            "user_id": user_id,
            "day": day,
            "jobs": jobs,
            "steps": steps,
            "credits": credits,
            "cost_saving_minutes": int(round(minutes)),
        },
    )


__all__ = [
    "BillingTx",
    "InsufficientCredits",
    "Ledger",
    "LowCredit",
    "RunGate",
    "RunSettlement",
    "day_start",
    "is_platform_failure",
    "parse_price_overrides",
]
