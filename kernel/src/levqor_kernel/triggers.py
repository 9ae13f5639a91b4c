"""What trigger hooks hand back: new items, the state to keep, and answers to deliveries.

A polling trigger's ``poll_trigger`` returns a :class:`Poll`: the items it sees now, each
with an id that stays the same every time the item is seen, and the state the host stores
and passes back next time (a cursor, a history id, the newest timestamp). The host, never the
connector, decides which items are new: it keeps a bounded set of the ids it has seen, starts
one run per unseen id (the id is the run's idempotency key), and on the very first poll
(``state`` is ``None``) records every id as seen and starts nothing.

An instant trigger's ``receive_delivery`` is handed a :class:`Delivery` (one HTTP request to
the host's webhook route) and returns a :class:`DeliveryResult`: the items it carries and,
when the sender expects a particular answer (a URL challenge), the response to send. A
delivery whose signature does not verify raises :class:`~levqor_kernel.errors.SignatureError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PermanentError

__all__ = [
    "MAX_ITEM_ID",
    "Delivery",
    "DeliveryResult",
    "Poll",
    "TriggerItem",
    "as_delivery_result",
    "as_poll",
]

#: The longest item id a trigger may return (ids longer than this fail the poll).
MAX_ITEM_ID = 200


@dataclass(frozen=True)
class TriggerItem:
    """One event upstream: ``id`` is stable across polls (a row number, a message id, a page id
    plus its last edit time for "new or updated"); ``data`` is what the run sees as ``trigger``;
    ``route`` (connector-wide webhooks only) says which registrations it belongs to."""

    id: str
    data: dict[str, Any]
    route: dict[str, Any] | None = None


@dataclass
class Poll:
    """What one poll saw: ``items`` oldest first, and the ``state`` for the next poll."""

    items: list[TriggerItem] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One HTTP request that arrived at the host's webhook route for a trigger.

    ``headers`` keys are lower case. ``body`` is the raw bytes (signatures are computed over
    them); :meth:`json` parses it. ``secret`` is the per-registration secret the host generated
    and passed to ``register_trigger`` (None for connector-wide webhooks)."""

    method: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    secret: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON; a :class:`PermanentError` (the host answers 400) when it is not."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise PermanentError("the delivery's body is not JSON", status=400, code="bad_body") from None


@dataclass
class DeliveryResult:
    """What a delivery carries: ``items`` (none for a handshake), and ``response``, the
    ``(status, body, headers)`` to answer with when the sender expects something particular
    (a challenge echoed back); otherwise the host answers 200 ``{"ok": true}``. ``delivery_id``
    names the delivery when the sender does (retries of one delivery share it)."""

    items: list[TriggerItem] = field(default_factory=list)
    response: tuple[int, Any, dict[str, str]] | None = None
    delivery_id: str | None = None


def _item(value: Any, where: str) -> TriggerItem:
    if isinstance(value, Mapping):
        value = TriggerItem(
            id=value.get("id"), data=value.get("data"), route=value.get("route")  # type: ignore[arg-type]
        )
    if not isinstance(value, TriggerItem):
        raise PermanentError(f"{where}: an item must be a TriggerItem, got {type(value).__name__}")
    if isinstance(value.id, int) and not isinstance(value.id, bool):
        value = TriggerItem(id=str(value.id), data=value.data, route=value.route)
    if not isinstance(value.id, str) or not value.id or len(value.id) > MAX_ITEM_ID:
        raise PermanentError(f"{where}: an item's id must be a non-empty string of at most {MAX_ITEM_ID} characters")
    if not isinstance(value.data, dict):
        raise PermanentError(f"{where}: item {value.id!r} has no data object")
    if value.route is not None and not isinstance(value.route, dict):
        raise PermanentError(f"{where}: item {value.id!r} has a route that is not an object")
    return value


def as_poll(value: Any) -> Poll:
    """A hook's answer as a :class:`Poll` (a dict ``{"items": [...], "state": {...}}`` is accepted);
    a malformed answer raises :class:`PermanentError` (fail closed)."""
    if isinstance(value, Mapping):
        value = Poll(items=list(value.get("items") or []), state=value.get("state"))  # type: ignore[arg-type]
    if not isinstance(value, Poll):
        raise PermanentError(f"poll_trigger must return a Poll, got {type(value).__name__}")
    if not isinstance(value.state, dict):
        raise PermanentError("poll_trigger's state must be a JSON object")
    items = [_item(i, "poll_trigger") for i in value.items]
    return Poll(items=items, state=value.state)


def as_delivery_result(value: Any) -> DeliveryResult:
    """A hook's answer as a :class:`DeliveryResult` (a dict with the same keys is accepted)."""
    if isinstance(value, Mapping):
        value = DeliveryResult(
            items=list(value.get("items") or []),
            response=value.get("response"),
            delivery_id=value.get("delivery_id"),
        )
    if not isinstance(value, DeliveryResult):
        raise PermanentError(
            f"receive_delivery must return a DeliveryResult, got {type(value).__name__}"
        )
    items = [_item(i, "receive_delivery") for i in value.items]
    resp = value.response
    if resp is not None:
        if not (isinstance(resp, tuple | list) and len(resp) == 3 and isinstance(resp[0], int)):
            raise PermanentError("receive_delivery's response must be (status, body, headers)")
        resp = (int(resp[0]), resp[1], dict(resp[2] or {}))
    did = value.delivery_id
    if did is not None and (not isinstance(did, str) or not did or len(did) > MAX_ITEM_ID):
        raise PermanentError("receive_delivery's delivery_id must be a short string")
    return DeliveryResult(items=items, response=resp, delivery_id=did)
