"""A test connector with app triggers, and the small upstream API it talks to over real HTTP.

``Feeds`` is no real service: it is the smallest upstream that has what app triggers meet in
the wild, so the host's trigger machinery can be tested end to end without any provider's
quirks. Its wire contract (defined here, nowhere else):

* ``GET /lists/<list>/items?after=<n>`` with ``Authorization: Bearer <key>`` answers
  ``{"items": [{"id": n, "text": ...}, ...], "last": n}``, items with ids above ``after``,
  oldest first (at most 100; ``last`` is the newest id in the list). 401 for another key
  (its error echoes the Authorization header it was sent);
  scripted 429s carry ``Retry-After`` (seconds), like Slack's and Telegram's rate limits.
* ``POST /webhooks`` ``{"url", "secret", "list"}`` subscribes; answers ``{"id": "wh_<n>"}``;
  ``DELETE /webhooks/<id>`` unsubscribes (404 for an unknown id); ``{"list": "refused"}`` is
  answered 422 ``{"error": "..."}`` (a subscription the upstream refuses).
* A delivery (what the fake POSTs to a subscribed URL, or what a test sends as the upstream):
  JSON ``{"delivery": "<id>", "events": [{"id": n, "text": ..., "channel": ...}]}`` with
  header ``X-Feeds-Secret`` (the subscription's secret) for per-registration webhooks, or
  ``X-Feeds-Signature: sha256=HMAC_SHA256(LEVQOR_FEEDS_SIGNING_SECRET, body)`` for the
  connector-wide one; ``{"challenge": "<text>"}`` must be echoed back (as Slack's URL
  verification is).

The connector: ``new_item`` (polling, config ``{"list"}``), ``pushed`` (instant, a webhook per
registration) and ``routed`` (instant, one connector-wide webhook, items routed by
``{"channel"}``). ``LEVQOR_FEEDS_API_BASE`` points it at the fake.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
from typing import Any

from levqor_kernel import DeliveryResult, Poll, SignatureError, TriggerItem, hookimpl
from levqor_kernel.errors import PermanentError, RetryableError
from levqor_kernel.testing import FakeServer, Reply

ITEM = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "text": {"type": "string"}},
}


class Feeds:
    """The ``feeds`` connector (a plugin object: pass it in ``plugins=[Feeds()]``)."""

    @hookimpl
    def describe_schema(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "feeds",
                "title": "Feeds",
                "description": "A test upstream with lists of items",
                "credentials": {
                    "type": "object",
                    "required": ["key"],
                    "additionalProperties": False,
                    "properties": {"key": {"type": "string", "minLength": 1, "writeOnly": True}},
                },
                "triggers": {
                    "new_item": {
                        "title": "New item in a list",
                        "kind": "polling",
                        "config": {
                            "type": "object",
                            "required": ["list"],
                            "additionalProperties": False,
                            "properties": {"list": {"type": "string", "minLength": 1}},
                        },
                        "output": ITEM,
                        "sample": {"id": 1, "text": "first"},
                        "example": {"list": "inbox"},
                    },
                    "pushed": {
                        "title": "Item pushed to a list",
                        "kind": "instant",
                        "config": {
                            "type": "object",
                            "required": ["list"],
                            "properties": {"list": {"type": "string", "minLength": 1}},
                        },
                        "output": ITEM,
                        "sample": {"id": 2, "text": "pushed"},
                    },
                    "routed": {
                        "title": "Item in a channel",
                        "kind": "instant",
                        "webhook": "connector",
                        "config": {
                            "type": "object",
                            "required": ["channel"],
                            "properties": {"channel": {"type": "string", "minLength": 1}},
                        },
                        "output": ITEM,
                        "sample": {"id": 3, "text": "routed"},
                    },
                },
                "actions": {
                    "note": {
                        "title": "Note",
                        "payload": {"type": "object"},
                        "output": {"type": "object"},
                        "example": {},
                    }
                },
            }
        ]

    @staticmethod
    def _base(context) -> str:
        base, _guarded = context.api_base("feeds", "https://feeds.invalid")
        return base

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"noted": payload}

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        after = int((state or {}).get("after", 0))
        resp = context.http.request(
            "GET",
            f"{self._base(context)}/lists/{config['list']}/items",
            params={"after": after},
            headers={"Authorization": f"Bearer {credentials['key']}"},
            secrets=[credentials["key"]],
            service="feeds",
        )
        body = resp.json()
        items = [TriggerItem(id=str(i["id"]), data=i) for i in body["items"]]
        return Poll(items=items, state={"after": max([after, *[i["id"] for i in body["items"]]])})

    @hookimpl
    def register_trigger(self, connector, trigger, config, credentials, webhook_url, secret, context):
        body = {"url": webhook_url, "secret": secret, "list": config.get("list") or config.get("channel")}
        resp = context.http.request(
            "POST", f"{self._base(context)}/webhooks", json=body, service="feeds",
            headers={"Authorization": f"Bearer {credentials['key']}"},
            detail=lambda r: r.json().get("error"), secrets=[credentials["key"], secret],
        )  # fmt: skip
        reg: dict[str, Any] = {"webhook_id": resp.json()["id"]}
        if trigger == "routed":
            reg["route"] = {"channel": config["channel"]}
        return reg

    @hookimpl
    def unregister_trigger(self, connector, trigger, config, credentials, registration, context):
        context.http.request(
            "DELETE", f"{self._base(context)}/webhooks/{registration['webhook_id']}",
            headers={"Authorization": f"Bearer {credentials['key']}"}, service="feeds",
            secrets=[credentials["key"]],
        )  # fmt: skip

    @hookimpl
    def receive_delivery(self, connector, trigger, config, delivery, registration, context):
        if trigger is None:  # the connector-wide webhook: an HMAC of the body
            key = context.env.get("LEVQOR_FEEDS_SIGNING_SECRET", "")
            want = "sha256=" + hmac.new(key.encode(), delivery.body, hashlib.sha256).hexdigest()
            if not key or not hmac.compare_digest(want, delivery.header("X-Feeds-Signature") or ""):
                raise SignatureError()
        elif not delivery.secret or not hmac.compare_digest(
            delivery.secret, delivery.header("X-Feeds-Secret") or ""
        ):
            raise SignatureError()
        body = delivery.json()
        if not isinstance(body, dict):
            raise PermanentError("a delivery is a JSON object", status=400, code="bad_body")
        if "challenge" in body:
            return DeliveryResult(response=(200, {"challenge": str(body["challenge"])}, {}))
        if body.get("busy"):  # reading it needs the upstream, which is briefly unavailable
            raise RetryableError("the feeds upstream is busy", status=503, retry_after=7)
        events = body.get("events")
        if not isinstance(events, list):
            raise PermanentError("a delivery has a list of events", status=400, code="bad_body")
        items = [
            TriggerItem(
                id=str(e["id"]),
                data={"id": e["id"], "text": e.get("text", "")},
                route={"channel": e.get("channel")} if trigger is None else None,
            )
            for e in events
        ]
        return DeliveryResult(items=items, delivery_id=body.get("delivery"))


class FeedsUpstream:
    """The fake upstream of :class:`Feeds` on a :class:`FakeServer` (see the module's wire
    contract). ``add(list, text)`` appends an item; ``webhooks`` holds the live subscriptions."""

    def __init__(self, key: str = "feeds-key") -> None:
        self.key = key
        self.server = FakeServer()
        self.lists: dict[str, list[dict]] = {}
        self.webhooks: dict[str, dict] = {}
        self.unsubscribed: list[str] = []
        self._ids = itertools.count(1)
        self._hooks = itertools.count(1)
        self._lock = threading.Lock()
        s = self.server
        s.route("GET", r"/lists/(?P<name>[^/]+)/items", self._items)
        s.route("POST", "/webhooks", self._subscribe)
        s.route("DELETE", r"/webhooks/(?P<id>[^/]+)", self._unsubscribe)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FeedsUpstream:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FeedsUpstream:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ the upstream's data
    def add(self, name: str, text: str) -> dict:
        with self._lock:
            item = {"id": next(self._ids), "text": text}
            self.lists.setdefault(name, []).append(item)
        return item

    def polls(self, name: str) -> int:
        """How many times list ``name`` was read."""
        return len([r for r in self.server.requests if r.path == f"/lists/{name}/items"])

    def rate_limit(self, name: str, retry_after: int, times: int = 1) -> None:
        """The next ``times`` reads of list ``name`` answer 429 with Retry-After."""
        for _ in range(times):
            self.server.queue(
                "GET", f"/lists/{name}/items",
                Reply(429, {"error": "slow down"}, {"Retry-After": str(retry_after)}),
            )  # fmt: skip

    def fail(self, name: str, times: int, status: int = 500) -> None:
        for _ in range(times):
            self.server.queue("GET", f"/lists/{name}/items", Reply(status, {"error": "broken"}))

    # ------------------------------------------------------------------ handlers
    def _authorized(self, req) -> bool:
        return req.header("Authorization") == f"Bearer {self.key}"

    def _items(self, req):
        if not self._authorized(req):  # echoing what it was sent, as real APIs sometimes do
            return Reply(401, {"error": f"bad key: {req.header('Authorization')}"})
        after = int((req.query.get("after") or ["0"])[0])
        with self._lock:
            items = list(self.lists.get(req.match["name"], []))
        newer = [i for i in items if i["id"] > after][:100]
        return {"items": newer, "last": items[-1]["id"] if items else 0}

    def _subscribe(self, req):
        if not self._authorized(req):
            return Reply(401, {"error": "bad key"})
        body = req.json()
        if body.get("list") == "refused":
            return Reply(422, {"error": "this list takes no webhooks"})
        with self._lock:
            hid = f"wh_{next(self._hooks)}"
            self.webhooks[hid] = body
        return {"id": hid}

    def _unsubscribe(self, req):
        with self._lock:
            found = self.webhooks.pop(req.match["id"], None)
            if found is not None:
                self.unsubscribed.append(req.match["id"])
        return Reply(204, b"") if found is not None else Reply(404, {"error": "no such webhook"})


def signed(body: dict, key: str) -> tuple[bytes, dict[str, str]]:
    """A connector-wide delivery's raw body and its signature header."""
    raw = json.dumps(body).encode()
    sig = "sha256=" + hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"X-Feeds-Signature": sig, "Content-Type": "application/json"}
