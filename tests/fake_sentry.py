"""A local fake of Sentry's envelope ingest endpoint, over real HTTP on 127.0.0.1.

Wire contract (https://develop.sentry.dev/sdk/envelopes/ and
https://develop.sentry.dev/sdk/overview/#authentication):

* ``POST /api/<project_id>/envelope/``; the DSN ``http://<public_key>@host:port/<project_id>``
  says where. Authentication by the ``X-Sentry-Auth: Sentry sentry_key=<public_key>,
  sentry_version=7, ...`` header (or ``sentry_key`` in the query string, or the ``dsn`` in the
  envelope header).
* The body (optionally ``Content-Encoding: gzip``, ``deflate`` or ``br``) is an envelope: a JSON
  header line (``event_id``, ``dsn``, ``sent_at``...), then items, each a JSON item header line
  (``type``: event, transaction, session, client_report...; optional ``length``) followed by its
  payload (``length`` bytes, else up to the next newline).
* Answers ``200 {"id": <event_id>}``; a bad key 401, an unknown project 404 (Relay's contract).

``events`` holds the payloads of the ``event`` items that arrived.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from levqor_kernel.testing import FakeServer, Recorded, Reply


def parse_envelope(body: bytes) -> tuple[dict, list[tuple[dict, bytes]]]:
    pos = body.find(b"\n")
    header = json.loads(body[: pos if pos >= 0 else len(body)] or b"{}")
    items: list[tuple[dict, bytes]] = []
    pos = pos + 1 if pos >= 0 else len(body)
    while pos < len(body):
        end = body.find(b"\n", pos)
        if end < 0:
            end = len(body)
        line = body[pos:end]
        pos = end + 1
        if not line.strip():
            continue
        item_header = json.loads(line)
        length = item_header.get("length")
        if length is not None:
            payload = body[pos : pos + length]
            pos += length + 1
        else:
            end = body.find(b"\n", pos)
            if end < 0:
                end = len(body)
            payload = body[pos:end]
            pos = end + 1
        items.append((item_header, payload))
    return header, items


class FakeSentry:
    def __init__(self, public_key: str = "fakepublickey0123", project_id: str = "4242") -> None:
        self.public_key = public_key
        self.project_id = project_id
        self.server = FakeServer()
        self.events: list[dict[str, Any]] = []
        self.envelopes: list[dict[str, Any]] = []
        self.server.route("POST", r"/api/(\d+)/envelope/", self._envelope)

    def __enter__(self) -> FakeSentry:
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@127.0.0.1:{self.server.port}/{self.project_id}"

    def _envelope(self, req: Recorded) -> Reply:
        if req.match.group(1) != self.project_id:  # type: ignore[union-attr]
            return Reply(404, {"detail": "unknown project"})
        auth = req.header("X-Sentry-Auth") or ""
        keys = [
            p.split("=", 1)[1]
            for p in auth.replace("Sentry ", "").replace(" ", "").split(",")
            if p.startswith("sentry_key=")
        ]
        keys += req.query.get("sentry_key", [])
        body = req.body
        enc = (req.header("Content-Encoding") or "").lower()
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        elif enc == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        header, items = parse_envelope(body)
        if not keys and header.get("dsn"):
            keys = [header["dsn"].split("//", 1)[1].split("@", 1)[0].split(":")[0]]
        if keys != [self.public_key]:
            return Reply(401, {"detail": "bad envelope authentication header"})
        self.envelopes.append({"header": header, "types": [h.get("type") for h, _ in items]})
        for item_header, payload in items:
            if item_header.get("type") == "event":
                self.events.append(json.loads(payload))
        return Reply(200, {"id": header.get("event_id")})
