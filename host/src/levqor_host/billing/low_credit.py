"""The low-credit warning: once per crossing of ``LEVQOR_LOW_CREDIT_THRESHOLD``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from levqor_host.billing.ledger import BillingTx


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
        repo = tx.repo
        armed = repo.mark(tx.conn, key)
        if balance >= self.threshold:
            if armed is None:
                repo.set_mark(tx.conn, key, uuid.uuid4().hex)
        elif armed is not None:
            repo.clear_mark(tx.conn, key)
            tx.after_commit(lambda: self.notify(user, balance, armed))
