"""The run gate: what the ``gate_run`` hook receives, and the decision it gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from levqor_kernel.host import InsufficientCredits

from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.billing.ledger import BillingTx


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day (daily limits reset then)."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class RunGate:
    """What ``gate_run`` receives as ``ledger``: the user's credits inside the transaction that
    will create the run (the user is locked). ``charge()`` reserves credits for the run."""

    def __init__(self, tx: BillingTx, user: dict, run_id: str | None, price: int) -> None:
        self.tx = tx
        self.user = user
        self.user_id = user["id"]
        self.plan = user.get("plan") or "free"
        self.run_id = run_id
        self.price = price
        self.charged = 0
        self.now = datetime.now(UTC)

    @property
    def config(self) -> Any:
        return self.tx.config

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
        return self.tx.repo.runs_since(self.tx.conn, self.user_id, self.day_started_at)

    def charge(self, amount: int, reason: str = "run") -> None:
        """Reserve ``amount`` credits for this run (raises :class:`InsufficientCredits`)."""
        amount = int(amount)
        if amount < 0:
            raise ValueError("a charge cannot be negative")
        if amount == 0:
            return
        self.tx.add_line(self.user_id, -amount, reason, run_id=self.run_id)
        self.charged += amount


def gate_run(
    tx: BillingTx,
    pm: LevqorPluginManager,
    user: dict,
    pipeline: dict,
    run_id: str,
    price: int,
) -> RunGate:
    """Ask the ``gate_run`` hook whether ``user`` (locked in ``tx``) may start a run of
    ``pipeline`` costing ``price``; what it charges is reserved in ``tx``. Raises ApiError
    (402 unless the hook says otherwise) when the run is refused."""
    gate = RunGate(tx, user, run_id, price)
    try:
        decision = pm.hook.gate_run(user=user, pipeline=pipeline, price=price, ledger=gate)
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
    return gate
