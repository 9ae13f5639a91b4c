"""A connector with app triggers for the host's trigger routes, API and builder tests, and its fake.

"Tally" is a fictional app (so its wire contract is the one written here, not a provider's):
boards of numbered entries. ``GET /boards/<board>/entries?after=<id>`` lists the entries after
an id (``X-Tally-Key`` authenticates); ``POST /hooks`` subscribes a URL (``{"url", "secret"}``
-> ``{"id"}``) and ``DELETE /hooks/<id>`` removes it; a subscribed URL receives
``POST {"entries": [...]}`` with ``X-Tally-Secret: <secret>``, and first a
``GET ?challenge=<text>`` it must echo. The connector offers a polling trigger (``new_entry``),
an instant one (``pushed``) and a connector-wide one (``anywhere``, routed by board).

It is installed in a test's own plugin manager (``Tally()``) or, for a ``levqor serve``
subprocess, as a distribution on ``PYTHONPATH`` (:func:`install_dist`).
"""

from __future__ import annotations

import itertools
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import requests
from levqor_kernel import hookimpl
from levqor_kernel.testing.fakeserver import FakeServer, Recorded, Reply

ENTRY = {
    "type": "object",
    "required": ["id", "text", "board"],
    "properties": {
        "id": {"type": "integer", "title": "Entry number"},
        "text": {"type": "string"},
        "board": {"type": "string"},
    },
}
BOARD_CONFIG = {
    "type": "object",
    "required": ["board"],
    "properties": {
        "board": {
            "type": "string",
            "title": "Board",
            "minLength": 1,
            "description": "which board to watch",
        }
    },
}


class Tally:
    """The ``tally`` connector."""

    @hookimpl
    def describe_schema(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "tally",
                "title": "Tally",
                "description": "Boards of numbered entries (a test app).",
                "credentials": {
                    "type": "object",
                    "required": ["api_base", "key"],
                    "properties": {
                        "api_base": {"type": "string", "title": "API base URL"},
                        "key": {"type": "string", "title": "API key", "writeOnly": True},
                    },
                },
                "triggers": {
                    "new_entry": {
                        "title": "New entry",
                        "description": "An entry added to a board",
                        "kind": "polling",
                        "config": BOARD_CONFIG,
                        "output": ENTRY,
                        "sample": {"id": 7, "text": "seven", "board": "main"},
                        "example": {"board": "main"},
                    },
                    "pushed": {
                        "title": "Entry pushed",
                        "description": "Tally calls the host when an entry is added",
                        "kind": "instant",
                        "config": BOARD_CONFIG,
                        "output": ENTRY,
                        "sample": {"id": 8, "text": "eight", "board": "main"},
                        "example": {"board": "main"},
                    },
                    "anywhere": {
                        "title": "Entry anywhere",
                        "kind": "instant",
                        "webhook": "connector",
                        "config": BOARD_CONFIG,
                        "output": ENTRY,
                        "sample": {"id": 9, "text": "nine", "board": "main"},
                        "example": {"board": "main"},
                    },
                },
                "actions": {
                    "note": {
                        "title": "Note a text",
                        "payload": {
                            "type": "object",
                            "required": ["text"],
                            "properties": {"text": {"type": "string"}},
                        },
                        "output": {"type": "object", "properties": {"noted": {"type": "string"}}},
                        "example": {"text": "hello"},
                        "price": 1,
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"noted": str(payload.get("text"))}

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        from levqor_kernel import CredentialError, Poll, RetryableError, TriggerItem

        after = int((state or {}).get("after", 0))
        r = requests.get(
            f"{credentials['api_base']}/boards/{config['board']}/entries",
            params={"after": after},
            headers={"X-Tally-Key": credentials["key"]},
            timeout=10,
        )
        if r.status_code == 401:
            raise CredentialError("Tally refused the API key", status=401, code="unauthorized")
        if r.status_code != 200:
            raise RetryableError(f"Tally answered {r.status_code}", status=r.status_code)
        entries = r.json()["entries"]
        items = [TriggerItem(id=str(e["id"]), data=e) for e in entries]
        return Poll(items=items, state={"after": max([after, *(e["id"] for e in entries)])})

    @hookimpl
    def register_trigger(
        self, connector, trigger, config, credentials, webhook_url, secret, context
    ):
        r = requests.post(
            f"{credentials['api_base']}/hooks",
            json={"url": webhook_url, "secret": secret, "board": config["board"]},
            headers={"X-Tally-Key": credentials["key"]},
            timeout=10,
        )
        r.raise_for_status()
        out: dict[str, Any] = {"hook_id": r.json()["id"]}
        if trigger == "anywhere":
            out["route"] = {"board": config["board"]}
        return out

    @hookimpl
    def unregister_trigger(self, connector, trigger, config, credentials, registration, context):
        requests.delete(
            f"{credentials['api_base']}/hooks/{registration['hook_id']}",
            headers={"X-Tally-Key": credentials["key"]},
            timeout=10,
        )

    @hookimpl
    def receive_delivery(self, connector, trigger, config, delivery, registration, context):
        from levqor_kernel import DeliveryResult, SignatureError, TriggerItem

        if delivery.method == "GET":
            challenge = delivery.query.get("challenge")
            if not challenge:
                raise SignatureError("a GET must carry a challenge")
            return DeliveryResult(response=(200, challenge, {"Content-Type": "text/plain"}))
        wanted = delivery.secret if trigger is not None else CONNECTOR_SECRET
        if not wanted or delivery.header("X-Tally-Secret") != wanted:
            raise SignatureError()
        body = delivery.json()
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            from levqor_kernel import PermanentError

            raise PermanentError("no entries in the delivery", status=400, code="bad_body")
        return DeliveryResult(
            items=[
                TriggerItem(id=str(e["id"]), data=e, route={"board": e.get("board")})
                for e in entries
                if isinstance(e, dict) and "id" in e
            ],
            delivery_id=body.get("delivery"),
        )


#: the connector-wide webhook's signing secret (an app-level secret, as Slack's signing secret)
CONNECTOR_SECRET = "tally-connector-secret"


class FakeTally:
    """The Tally API on a local :class:`FakeServer`: boards, entries and webhook subscriptions."""

    def __init__(self, key: str = "tally-key-1") -> None:
        self.key = key
        self.server = FakeServer()
        self.boards: dict[str, list[dict[str, Any]]] = {}
        self.hooks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server.route("GET", r"/boards/(?P<board>[^/]+)/entries", self._entries)
        self.server.route("POST", "/hooks", self._subscribe)
        self.server.route("DELETE", r"/hooks/(?P<hook>[^/]+)", self._unsubscribe)

    def __enter__(self) -> FakeTally:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def credentials(self) -> dict[str, str]:
        return {"api_base": self.url, "key": self.key}

    def add(self, board: str, text: str) -> dict[str, Any]:
        with self._lock:
            entry = {"id": next(self._ids), "text": text, "board": board}
            self.boards.setdefault(board, []).append(entry)
        return entry

    def _authorized(self, req: Recorded) -> bool:
        return req.header("X-Tally-Key") == self.key

    def _entries(self, req: Recorded) -> Reply:
        if not self._authorized(req):
            return Reply(401, {"error": "bad key"})
        after = int((req.query.get("after") or ["0"])[0])
        board = req.match.group("board") if req.match else ""
        with self._lock:
            entries = [e for e in self.boards.get(board, []) if e["id"] > after]
        return Reply(200, {"entries": entries})

    def _subscribe(self, req: Recorded) -> Reply:
        if not self._authorized(req):
            return Reply(401, {"error": "bad key"})
        body = req.json()
        hook_id = f"h{next(self._ids)}"
        self.hooks[hook_id] = body
        return Reply(201, {"id": hook_id})

    def _unsubscribe(self, req: Recorded) -> Reply:
        hook = req.match.group("hook") if req.match else ""
        return Reply(204, None) if self.hooks.pop(hook, None) is not None else Reply(404, {})


def signed(secret: str, entries: list[dict[str, Any]], delivery: str | None = None) -> dict:
    """The keyword arguments of a Tally delivery for ``requests.post``."""
    body: dict[str, Any] = {"entries": entries}
    if delivery:
        body["delivery"] = delivery
    return {
        "data": json.dumps(body).encode(),
        "headers": {"Content-Type": "application/json", "X-Tally-Secret": secret},
    }


def install_dist(root: Path) -> Path:
    """Lay out ``levqor-tally`` (this module as ``lvq_tally``) in ``root`` as pip would, for a
    ``levqor serve`` subprocess with ``root`` on its ``PYTHONPATH``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lvq_tally.py").write_text(Path(__file__).read_text())
    info = root / "levqor_tally-1.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        textwrap.dedent(
            """\
            Metadata-Version: 2.1
            Name: levqor-tally
            Version: 1.0.0
            Summary: Tally boards (a test app)
            """
        )
    )
    (info / "entry_points.txt").write_text("[levqor]\ntally = lvq_tally:plugin\n")
    (info / "RECORD").write_text("")
    return root


#: what the entry point loads
plugin = Tally()
