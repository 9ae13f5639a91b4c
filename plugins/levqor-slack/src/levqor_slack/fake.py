"""A local fake of Slack: an incoming webhook, the Web API methods a bot token uses
(``chat.postMessage``, ``auth.test``), and the Events API sender that signs and POSTs
``url_verification`` and ``event_callback`` requests to an app's Request URL, each speaking
Slack's documented wire contract.

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

Web API (a connected app's bot token):

* https://docs.slack.dev/reference/methods/chat.postMessage (and
  https://api.slack.com/methods/chat.postMessage): POST ``https://slack.com/api/chat.postMessage``,
  JSON or form bodies, the token as ``Authorization: Bearer`` (or a ``token`` argument);
  ``channel`` an encoded ID or a name; ``text`` and/or ``blocks`` (text is then the
  notification fallback); ``thread_ts`` makes a reply. Scopes: ``chat:write`` (and
  ``chat:write.public`` to post in public channels the app is not in). The answer
  (https://docs.slack.dev/tools/node-slack-sdk/reference/web-api/type-aliases/ChatPostMessageResponse):
  ``ok``, ``channel``, ``ts``, ``message``; errors are HTTP 200 ``{"ok": false, "error": code}``
  (``not_in_channel``, ``channel_not_found``, ``is_archived``, ``msg_too_long``, ``no_text``,
  ``invalid_blocks``, ``invalid_auth``, ``not_authed``, ``token_revoked``,
  ``missing_scope`` with ``needed``/``provided``).
* https://docs.slack.dev/apis/web-api/rate-limits: over a method's limit Slack answers HTTP 429
  with ``Retry-After`` (seconds) and ``{"ok": false, "error": "ratelimited"}``.
* https://docs.slack.dev/reference/methods/auth.test and
  https://docs.rs/slack-morphism/latest/src/slack_morphism/api/auth.rs.html: ``auth.test``
  needs no scope and answers ``url``, ``team``, ``user``, ``team_id``, ``user_id`` and, for a
  bot token, ``bot_id``.
* https://apidog.com/apidoc/docs-site/347399/api-3545308 and
  https://app.unpkg.com/@slack/web-api@6.8.1/files/dist/response/OauthV2AccessResponse.d.ts:
  ``oauth.v2.access`` answers ``ok``, ``access_token`` (``xoxb-``), ``token_type`` "bot",
  ``scope`` (comma separated), ``bot_user_id``, ``app_id``, ``team`` {id, name},
  ``enterprise``, ``authed_user``; with token rotation also ``refresh_token`` and
  ``expires_in`` (https://docs.slack.dev/authentication/using-token-rotation: access tokens
  then expire after 12 hours). :meth:`FakeSlack.token_response` builds that answer.

Events API (what Slack sends the app):

* https://api.slack.com/docs/verifying-requests-from-slack and
  https://slack.dev/python-slack-sdk/api-docs/slack_sdk/signature/index.html: each request
  carries ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex HMAC-SHA256 of
  "v0:<timestamp>:<raw body>" under the app's signing secret>``; receivers refuse timestamps
  more than five minutes from now.
* https://api.slack.com/events/url_verification: when the Request URL is set, Slack POSTs
  ``{"token", "challenge", "type": "url_verification"}`` (no inner event) and expects the
  challenge back (plain text, form or JSON ``{"challenge": ...}``) with HTTP 200.
* https://docs.slack.dev/tools/bolt-js/reference/interfaces/EnvelopedEvent and
  https://docs.slack.dev/reference/events/message.md: an ``event_callback`` envelope holds
  ``token``, ``team_id``, ``api_app_id``, ``event``, ``type``, ``event_id``, ``event_time``,
  ``authorizations``; a ``message`` event holds ``type``, ``channel``, ``user``, ``text``,
  ``ts``, ``channel_type`` (scopes ``channels:history``, ``groups:history``), and, for replies,
  ``thread_ts``. Bot messages carry ``bot_id`` (and ``subtype: bot_message`` for legacy
  integrations: https://docs.slack.dev/tools/node-slack-sdk/reference/types/interfaces/BotMessageEvent);
  edits come as ``subtype: message_changed``. Slack retries a delivery not answered with 2xx,
  adding ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason``
  (https://docs.agno.com/api-reference/slack/slack-events).

Usage::

    with FakeSlack() as slack:
        creds = {"webhook_url": slack.webhook_url}
        ...
        assert slack.messages == [{"text": "hi"}]
        slack.fail_next(410, "channel_is_archived")

        app = {"auth": "oauth2", "access_token": slack.bot_token, "team_id": slack.team}
        env = {"LEVQOR_SLACK_API_BASE": slack.url, "LEVQOR_SLACK_SIGNING_SECRET":
               slack.signing_secret}
        slack.posted            # what chat.postMessage posted
        slack.set_request_url(host + "/hooks/apps/slack")   # url_verification first
        slack.post_user_message(slack.GENERAL, "deploy?")    # an event_callback, signed
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

import requests
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

    #: the channels of the workspace (IDs): the app is a member of GENERAL and PRIVATE
    GENERAL = "C0GENERAL01"
    RANDOM = "C0RANDOM001"
    PRIVATE = "G0PRIVATE01"
    ARCHIVED = "C0ARCHIVED1"
    USER = "U0ADA000001"

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
        # the Slack app installed in the workspace
        self.team_name = "Levqor Test"
        self.app_id = "A0LEVQOR001"
        self.bot_user_id = "U0LEVQORBOT"
        self.bot_id = "B0LEVQORBOT"
        self.bot_token = f"xoxb-{secrets.randbelow(10**11)}-{secrets.token_hex(12)}"
        self.signing_secret = secrets.token_hex(16)
        self.verification_token = secrets.token_hex(12)
        self.server.route("POST", r"/services/.*", self._handle)
        for method in ("GET", "POST"):
            self.server.route(method, r"/api/(?P<method>[A-Za-z0-9.]+)", self._api)
        self.reset_app()

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
        self.reset_app()

    def reset_app(self) -> None:
        """The app's side back to its start: channels, scopes, posts, no Request URL."""
        with self._lock:
            self.channels: dict[str, dict[str, Any]] = {
                self.GENERAL: {
                    "id": self.GENERAL,
                    "name": "general",
                    "is_private": False,
                    "member": True,
                },
                self.RANDOM: {
                    "id": self.RANDOM,
                    "name": "random",
                    "is_private": False,
                    "member": False,
                },
                self.PRIVATE: {
                    "id": self.PRIVATE,
                    "name": "secret-ops",
                    "is_private": True,
                    "member": True,
                },
                self.ARCHIVED: {
                    "id": self.ARCHIVED,
                    "name": "old",
                    "is_private": False,
                    "member": True,
                    "is_archived": True,
                },
            }
            self.scopes: set[str] = {
                "chat:write",
                "chat:write.public",
                "channels:history",
                "groups:history",
            }
            self.revoked = False
            #: every message chat.postMessage posted: {"channel", "ts", "text", "blocks", ...}
            self.posted: list[dict[str, Any]] = []
            #: the app's Events API Request URL ("" until set_request_url succeeded)
            self.request_url = ""
            #: every Events API request sent: {"body", "headers", "status", "response"}
            self.event_deliveries: list[dict[str, Any]] = []
            self._api_failures: deque[Reply] = deque()
            self._ts = 0

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

    def fail_api_next(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next Web API call with ``status``/``body``; ``ratelimit_next`` for 429."""
        with self._lock:
            self._api_failures.append(Reply(status, body, dict(headers or {})))

    def ratelimit_next(self, retry_after: int) -> None:
        """The next Web API call is over its rate limit: 429, Retry-After, ``ratelimited``."""
        self.fail_api_next(
            429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        )

    def token_response(self, *, rotation: bool = False) -> dict[str, Any]:
        """What ``oauth.v2.access`` answers for this app's installation (with token rotation:
        an expiring token, a refresh token and ``expires_in``)."""
        out: dict[str, Any] = {
            "ok": True,
            "access_token": self.bot_token,
            "token_type": "bot",
            "scope": ",".join(sorted(self.scopes)),
            "bot_user_id": self.bot_user_id,
            "app_id": self.app_id,
            "team": {"id": self.team, "name": self.team_name},
            "enterprise": None,
            "authed_user": {"id": self.USER},
            "is_enterprise_install": False,
        }
        if rotation:
            out["refresh_token"] = f"xoxe-1-{secrets.token_hex(16)}"
            out["expires_in"] = 43200
        return out

    # ------------------------------------------------------------------ Web API
    def _api(self, req: Recorded) -> Reply:
        with self._lock:
            if self._api_failures:
                return self._api_failures.popleft()
        method = req.match["method"] if req.match else ""
        params = self._api_params(req)
        if params is None:
            return Reply(200, {"ok": False, "error": "invalid_json"})
        auth = req.header("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else params.get("token")
        if not token:
            return Reply(200, {"ok": False, "error": "not_authed"})
        if not isinstance(token, str) or not secrets.compare_digest(token, self.bot_token):
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        if self.revoked:
            return Reply(200, {"ok": False, "error": "token_revoked"})
        if method == "auth.test":
            return Reply(
                200,
                {
                    "ok": True,
                    "url": "https://levqor-test.slack.com/",
                    "team": self.team_name,
                    "user": "levqor",
                    "team_id": self.team,
                    "user_id": self.bot_user_id,
                    "bot_id": self.bot_id,
                    "is_enterprise_install": False,
                },
            )
        if method == "chat.postMessage":
            return self._post_message(params)
        return Reply(200, {"ok": False, "error": "unknown_method"})

    @staticmethod
    def _api_params(req: Recorded) -> dict[str, Any] | None:
        params: dict[str, Any] = {k: v[-1] for k, v in req.query.items()}
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if not req.body:
            return params
        try:
            if ctype == "application/json":
                data = json.loads(req.body.decode("utf-8"))
                if not isinstance(data, dict):
                    return None
                params.update(data)
            else:
                params.update({k: v[-1] for k, v in parse_qs(req.body.decode("utf-8")).items()})
                if isinstance(params.get("blocks"), str):
                    params["blocks"] = json.loads(params["blocks"])
        except (UnicodeDecodeError, ValueError):
            return None
        return params

    def _channel(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, str) or not ref:
            return None
        if ref in self.channels:
            return self.channels[ref]
        name = ref[1:] if ref.startswith("#") else ref
        return next((c for c in self.channels.values() if c["name"] == name), None)

    def _post_message(self, p: dict[str, Any]) -> Reply:
        if "chat:write" not in self.scopes:
            return Reply(
                200,
                {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": "chat:write",
                    "provided": ",".join(sorted(self.scopes)),
                },
            )
        if not p.get("channel"):
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        text, blocks = p.get("text"), p.get("blocks")
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > 50
            or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
        ):
            return Reply(200, {"ok": False, "error": "invalid_blocks"})
        if not text and not blocks and not p.get("attachments"):
            return Reply(200, {"ok": False, "error": "no_text"})
        if isinstance(text, str) and len(text) > 40000:
            return Reply(200, {"ok": False, "error": "msg_too_long"})
        with self._lock:
            channel = self._channel(p["channel"])
            if channel is None or (channel["is_private"] and not channel["member"]):
                return Reply(200, {"ok": False, "error": "channel_not_found"})
            if channel.get("is_archived"):
                return Reply(200, {"ok": False, "error": "is_archived"})
            if not channel["member"] and "chat:write.public" not in self.scopes:
                return Reply(200, {"ok": False, "error": "not_in_channel"})
            ts = self._next_ts()
            message: dict[str, Any] = {
                "type": "message",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.app_id,
                "team": self.team,
                "text": text or "",
                "ts": ts,
            }
            if blocks:
                message["blocks"] = blocks
            if p.get("thread_ts"):
                message["thread_ts"] = str(p["thread_ts"])
            self.posted.append({"channel": channel["id"], **message})
        # the app's own post is an event too (Slack sends it to apps subscribed to the channel)
        if self.request_url and channel["member"]:
            event = {
                **message,
                "channel": channel["id"],
                "channel_type": "group" if channel["is_private"] else "channel",
                "event_ts": ts,
            }
            self.send_event(event)
        return Reply(200, {"ok": True, "channel": channel["id"], "ts": ts, "message": message})

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{int(time.time())}.{self._ts:06d}"

    # ------------------------------------------------------------------ Events API
    def sign(
        self, body: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """The headers Slack signs a request with (v0 HMAC-SHA256 of ``v0:<ts>:<body>``)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        key = (self.signing_secret if secret is None else secret).encode()
        mac = hmac.new(key, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        return {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={mac}",
        }

    def _send(
        self, url: str, payload: dict[str, Any], extra: dict[str, str] | None = None, **sign: Any
    ) -> requests.Response | None:
        body = json.dumps(payload).encode()
        headers = {
            **self.sign(body, **sign),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **(extra or {}),
        }
        try:
            resp = requests.post(url, data=body, headers=headers, timeout=30, allow_redirects=False)
        except requests.RequestException:
            resp = None
        with self._lock:
            self.event_deliveries.append(
                {
                    "body": payload,
                    "headers": headers,
                    "status": resp.status_code if resp is not None else 0,
                    "response": resp.text[:500] if resp is not None else "",
                }
            )
        return resp

    def set_request_url(self, url: str) -> bool:
        """Set the app's Events Request URL as Slack does: a signed ``url_verification`` first;
        the URL is kept only when it answers 200 with the challenge (JSON, form or plain)."""
        challenge = secrets.token_urlsafe(36)
        resp = self._send(
            url,
            {"token": self.verification_token, "challenge": challenge, "type": "url_verification"},
        )
        ok = False
        if resp is not None and resp.status_code == 200:
            text = resp.text.strip()
            try:
                data = resp.json()
            except ValueError:
                data = None
            ok = (
                (isinstance(data, dict) and data.get("challenge") == challenge)
                or text == challenge
                or parse_qs(text).get("challenge") == [challenge]
            )
        if ok:
            self.request_url = url
        return ok

    def envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """The ``event_callback`` Slack wraps ``event`` in."""
        return {
            "token": self.verification_token,
            "team_id": self.team,
            "context_team_id": self.team,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def send_event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> tuple[dict[str, Any], int]:
        """POST ``event`` in its envelope to the Request URL, signed; returns the envelope and
        the HTTP status (0: no Request URL or no answer). ``retry_num`` sends it as Slack's
        retry of an earlier delivery (``X-Slack-Retry-Num``; reuse that ``event_id``)."""
        env = self.envelope(event, event_id=event_id)
        if not self.request_url:
            return env, 0
        extra = {}
        if retry_num:
            extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        resp = self._send(self.request_url, env, extra)
        return env, resp.status_code if resp is not None else 0

    def post_user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        thread_ts: str | None = None,
        subtype: str | None = None,
    ) -> dict[str, Any]:
        """A person posts ``text`` in ``channel``: the message event, sent to the Request URL
        when the app is in the channel (Slack sends only those). Returns the envelope (its
        ``status`` is the Request URL's answer, 0 when nothing was sent)."""
        with self._lock:
            chan = self.channels[channel]
            ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user or self.USER,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "group" if chan["is_private"] else "channel",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if subtype:
            event["subtype"] = subtype
        if not chan["member"]:
            return {**self.envelope(event), "status": 0}
        env, status = self.send_event(event)
        return {**env, "status": status}

    # ------------------------------------------------------------------ incoming webhook
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
