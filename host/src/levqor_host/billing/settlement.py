"""A final run's settlement: what it cost, refunds through ``record_run_cost``, daily usage,
events and the referral reward, inside the transaction that claims the run's ``settled_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from levqor_kernel.ai import add_usage as add_tokens
from levqor_kernel.pipeline import walk_steps
from levqor_kernel.runner import RunResult

from levqor_host.billing.gate import day_start
from levqor_host.store.steps import row_usage

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.billing.ledger import BillingTx
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


def is_platform_failure(error: dict | None) -> bool:
    """Whether a failed run failed because of the platform rather than the user's data."""
    if not error:
        return False
    if error.get("platform"):
        return True
    if error.get("code") in PLATFORM_ERROR_CODES:
        return True
    return error.get("type") not in USER_ERROR_TYPES


class RunSettlement:
    """What ``record_run_cost`` receives as ``ledger`` when a run is final."""

    def __init__(self, tx: BillingTx, user_id: str, run_id: str) -> None:
        self.tx = tx
        self.user_id = user_id
        self.run_id = run_id
        self._cached: list[int] | None = None

    @property
    def config(self) -> Any:
        return self.tx.config

    def _sums(self) -> list[int]:
        """[charged, refunded] of the run, read once per settlement (refund() keeps it up to
        date: the settlement holds the run's ``settled_at`` claim, nothing else writes them)."""
        if self._cached is None:
            self._cached = list(self.tx.repo.run_sums(self.tx.conn, self.run_id))
        return self._cached

    def forget(self) -> None:
        """Read the sums again next time (what a failed hook refunded was rolled back)."""
        self._cached = None

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

    def charge_extra(self, amount: int) -> int:
        """Charge what the steps that ran cost beyond the run's reservation (a loop's items,
        each charged), once per run, as far as the balance goes (never below zero). Returns
        the credits charged."""
        amount = max(0, min(int(amount), self.tx.balance(self.user_id)))
        if amount and self.tx.add_line(
            self.user_id, -amount, "run", run_id=self.run_id, external_id=f"extra:{self.run_id}"
        ):
            self._sums()[0] += amount
            self.tx.balance_changed.add(self.user_id)
            return amount
        return 0


@dataclass(frozen=True)
class RunCost:
    """What a settlement needs that is read outside its transaction: the steps that ran in
    the run (not those copied from a retried one), their cost (a metered step's tokens
    included), the minutes they saved and the tokens they used."""

    cost: int
    minutes: float
    steps: int
    input_tokens: int = 0
    output_tokens: int = 0


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _executed_steps(
    store: Store, run: dict, result: RunResult, doc: dict | None, pending: Iterable[dict] = ()
) -> tuple:
    """(steps that ran in this run, the pipeline document). With ``doc``, ``result.records``
    hold every step of the run (it was not resumed); otherwise both are read back, with the
    ``pending`` step rows (not written yet) over the stored ones."""
    if doc is not None and run.get("created_at"):
        ran = [
            {"step_id": r.step_id, "connector": r.connector, "action": r.action,
             "status": r.status, "attempts": r.attempts, "usage": r.usage}
            for r in result.records
        ]
        return [s for s in ran if s["status"] in ("succeeded", "failed") and s["attempts"] > 0], doc
    full = store.runs.get(None, run["id"]) or {"steps": []}
    version = store.pipelines.get_version(run["user_id"], run["pipeline_id"], run["version"])
    created = _as_dt(run.get("created_at") or full.get("created_at"))
    rows = {s["step_id"]: s for s in full["steps"]}
    rows.update((p["step_id"], {**p, "usage": row_usage(p)}) for p in pending)
    executed = [
        s
        for s in rows.values()
        if s["status"] in ("succeeded", "failed")
        and s.get("attempts", 0) > 0
        and (created is None or (_as_dt(s.get("started_at")) or created) >= created)
    ]
    return executed, (version or {}).get("doc", {})


def run_cost(
    store: Store,
    pm: LevqorPluginManager,
    step_price: Callable[[dict], int],
    run: dict,
    result: RunResult,
    doc: dict | None = None,
    token_price: Callable[[dict], int] | None = None,
    pending: Iterable[dict] = (),
) -> RunCost:
    """The :class:`RunCost` of a final run. ``doc``: the pipeline document, when
    ``result.records`` cover every step the run ran (saves reading the run back).
    ``token_price``: what a metered step's ``usage`` costs, added to its price. ``pending``:
    step rows not written yet (read back, a resumed run's last steps would be missed)."""
    executed, doc = _executed_steps(store, run, result, doc, pending)
    doc_steps = {s.get("id"): s for s, _d in walk_steps([*doc.get("steps", []), *doc.get("on_failure", [])])}
    # a step's row is named by its path (each[3].send): the document's step is the last part;
    # an agent's turns and tool calls (agent.turns[0].calls[1]) are priced by their own row
    cost = 0
    for s in executed:
        if s["connector"] == "flow":
            continue
        cost += step_price(doc_steps.get(s["step_id"].rsplit(".", 1)[-1], s))
        if token_price is not None and s.get("usage"):
            cost += token_price(s)
    tokens = add_tokens(s.get("usage") for s in executed)
    minutes = 0.0
    for s in executed:
        if s["status"] == "succeeded":
            a = pm.catalog.action(s["connector"], s["action"])
            minutes += float(getattr(a, "minutes_saved", 0) or 0)
    return RunCost(cost, minutes, len(executed), tokens["input_tokens"], tokens["output_tokens"])


def record_run_cost(
    tx: BillingTx, pm: LevqorPluginManager, run: dict, result: RunResult, cost: int
) -> RunSettlement:
    """The ``record_run_cost`` hook in a savepoint of ``tx`` (a failing plugin's refunds are
    rolled back, and the run is settled all the same)."""
    uid, rid = run["user_id"], run["id"]
    error = result.error or {}
    settle = RunSettlement(tx, uid, rid)
    if not pm.hook.record_run_cost.get_hookimpls():
        return settle
    user = tx.lock_user(uid) or {"id": uid}
    try:
        with tx.conn.begin_nested():
            pm.hook.record_run_cost(
                user=user,
                run={
                    "id": rid,
                    "status": result.status,
                    "pipeline_id": run["pipeline_id"],
                    "platform_failure": result.status == "failed" and is_platform_failure(error),
                    "error": error or None,
                    "charged": settle.charged,
                },
                cost=cost,
                ledger=settle,
            )
    except Exception:  # noqa: BLE001 - billing plugins must not break run completion
        log.exception("record_run_cost failed for run %s", rid)
        settle.forget()
    return settle


def add_usage(tx: BillingTx, user_id: str, cost: RunCost, credits: int) -> None:
    """The run in today's ``usage_daily`` row of its user."""
    tx.repo.add_usage(
        tx.conn,
        user_id,
        day_start().date(),
        jobs=1,
        steps=cost.steps,
        credits=credits,
        minutes=cost.minutes,
        input_tokens=cost.input_tokens,
        output_tokens=cost.output_tokens,
    )
