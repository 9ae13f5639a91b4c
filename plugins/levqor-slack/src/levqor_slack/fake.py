"""A local fake of a Slack incoming webhook, speaking Slack's documented wire contract.

Contract sources (checked with the docs search before writing this fake):

* https://api.slack.com/messaging/webhooks (quoted in
  https://github.com/nandenjin/gmail-to-slack/issues/14): one POST of a JSON message
  (``text``, ``blocks``, ``thread_ts`` for threads) to
  ``https://hooks.slack.com/services/T.../B.../<secret>``; app webhooks cannot override the
  channel, username or icon (legacy custom-integration webhooks could).
* https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks:
  success is HTTP 200 with the body ``ok``; errors are plain-text bodies:
  400 ``invalid_payload`` / ``user_not_found``, 403 ``action_prohibited``,
  404 ``channel_not_found``, 410 ``channel_is_archived``, 500 ``rollup_error``.
* https://routeforms.com/tools/slack-webhook-error-decoder and
  https://workflowtipster.top/?p=16073 (summaries of docs.slack.dev's error table):
  ``no_service`` (webhook disabled, removed or invalid, 404), ``invalid_token`` (403),
  ``no_text``, ``invalid_blocks``, ``posting_to_general_channel_denied``, ``team_disabled``.
  The statuses of these later codes come from secondary summaries, not the primary page, so
  the connector classifies errors by the body code first and the status second.
* https://api.slack.com/docs/rate-limits: about one message per second; over the limit,
  incoming webhooks answer HTTP 429 with a ``Retry-After`` header (seconds).

Usage::

    with FakeSlack() as slack:
        creds = {"webhook_url": slack.webhook_url}
        ...
        assert slack.messages == [{"text": "hi"}]
        slack.fail_next(410, "channel_is_archived")
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeSlack", "ERROR_STATUS"]

#: The documented plain-text error bodies and the HTTP status Slack sends with each.
ERROR_STATUS: dict[str, int] = {
    "invalid_payload": 400,
    "user_not_found": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "too_many_attachments": 400,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "invalid_token": 403,
    "team_disabled": 403,
    "no_service": 404,
    "channel_not_found": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}

_HOOK = re.compile(r"/services/(?P<team>[^/]+)/(?P<bot>[^/]+)/(?P<secret>[^/]+)")
_TEXT = {"Content-Type": "text/html"}  # Slack labels its plain "ok" as text/html


class FakeSlack:
    """One Slack incoming webhook on 127.0.0.1.

    ``webhook_url`` is the hook to configure; ``messages`` the JSON messages Slack accepted
    (posted to the channel); ``requests`` every raw request that arrived. ``archived = True``
    makes it answer 410 ``channel_is_archived``; ``disabled = True`` 404 ``no_service``.
    """

    def __init__(self, team: str = "T00000000", bot: str = "B00000000") -> None:
        self.team = team
        self.bot = bot
        self.secret = secrets.token_hex(12)
        self.server = FakeServer()
        self.messages: list[dict[str, Any]] = []
        self.archived = False
        self.disabled = False
        self._failures: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.server.route("POST", r"/services/.*", self._handle)

    # ------------------------------------------------------------------ set-up
    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:<port>``)."""
        return self.server.url

    @property
    def hook_path(self) -> str:
        return f"/services/{self.team}/{self.bot}/{self.secret}"

    @property
    def webhook_url(self) -> str:
        """The incoming webhook URL (the credential)."""
        return self.url + self.hook_path

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def start(self) -> FakeSlack:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget received requests and messages, scripted failures and channel state."""
        self.server.reset()
        with self._lock:
            self.messages.clear()
            self._failures.clear()
        self.archived = False
        self.disabled = False

    def fail_next(
        self,
        status: int,
        body: str | bytes | dict | None = None,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Answer the next POST with ``status`` and ``body`` (a Slack error code by default).

        ``fail_next(429, "rate_limited", {"Retry-After": "3"})`` scripts a rate limit;
        ``fail_next(200, "ok", delay=2)`` a slow answer (the message is not recorded).
        """
        if body is None:
            body = next((c for c, s in ERROR_STATUS.items() if s == status), "")
        with self._lock:
            self._failures.append(Reply(status, body, dict(headers or {}), delay))

    # ------------------------------------------------------------------ behaviour
    def _handle(self, req: Recorded) -> Reply:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
        m = _HOOK.fullmatch(req.path)
        if m is None or m["team"] != self.team or m["bot"] != self.bot or self.disabled:
            return Reply(404, "no_service", _TEXT)
        if not secrets.compare_digest(m["secret"], self.secret):
            return Reply(403, "invalid_token", _TEXT)
        msg = self._parse(req)
        if msg is None:
            return Reply(400, "invalid_payload", _TEXT)
        blocks = msg.get("blocks")
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > 50
            or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
        ):
            return Reply(400, "invalid_blocks", _TEXT)
        if not msg.get("text") and not blocks and not msg.get("attachments"):
            return Reply(400, "no_text", _TEXT)
        if self.archived:
            return Reply(410, "channel_is_archived", _TEXT)
        with self._lock:
            self.messages.append(msg)
        return Reply(200, "ok", _TEXT)

    @staticmethod
    def _parse(req: Recorded) -> dict[str, Any] | None:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        try:
            raw = req.body.decode("utf-8")
            if ctype == "application/x-www-form-urlencoded":
                raw = parse_qs(raw).get("payload", [""])[0]
            elif ctype != "application/json":
                return None
            msg = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return None
        return msg if isinstance(msg, dict) else None
