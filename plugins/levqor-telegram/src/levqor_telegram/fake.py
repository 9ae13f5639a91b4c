"""A local fake of the Telegram Bot API (``getMe``, ``sendMessage``, ``setWebhook``,
``deleteWebhook``, ``getWebhookInfo``, ``getUpdates``), speaking its wire contract, and the
sender of the Updates Telegram would send a bot.

Contract sources (checked with the docs search before writing this fake):

* https://core.telegram.org/bots/api#making-requests (quoted in the typegram declarations,
  https://app.unpkg.com/typegram@5.2.0/files/api.d.ts): requests go to
  ``https://api.telegram.org/bot<token>/<METHOD_NAME>`` (method names are case-insensitive);
  every answer is a JSON object with a Boolean ``ok``; on success the value is in ``result``;
  on failure ``error_code`` (Integer) and ``description`` (String) explain it, and
  ``parameters`` (ResponseParameters) may help handle it automatically.
* https://docs.aiogram.dev/en/v3.29.0/api/types/response_parameters.html (mirrors
  https://core.telegram.org/bots/api#responseparameters): ``retry_after`` is the number of
  seconds to wait after exceeding flood control; ``migrate_to_chat_id`` the new supergroup id.
* https://docs.aiogram.dev/en/v3.13.1/api/methods/send_message.html and
  https://docs.rs/crate/telers/1.0.0-beta.3/source/src/methods/send_message.rs (mirrors of
  https://core.telegram.org/bots/api#sendmessage): ``chat_id`` Integer or String
  (``@channelusername``), ``text`` 1-4096 characters after entities parsing, ``parse_mode``,
  ``disable_notification``, ``reply_parameters`` (https://core.telegram.org/bots/api#replyparameters,
  ``message_id`` to reply to; it superseded ``reply_to_message_id``). Returns the sent Message.
* https://hackage.haskell.org/package/telegram-bot-api-7.4.1/docs/Telegram-Bot-API-Methods-GetMe.html:
  ``getMe`` tests the token, takes no parameters and returns the bot as a User.
* https://core.telegram.org/bots/api/methods/setwebhook.md (and the mirrors
  https://docs.simbot.forte.love/components/telegram/simbot-component-telegram-api/love.forte.simbot.telegram.api.update/-set-webhook-api/index.html,
  https://search.r-project.org/CRAN/refmans/telegram.bot/html/setWebhook.html): ``setWebhook``
  takes ``url`` (HTTPS; an empty string removes the webhook), ``allowed_updates``,
  ``drop_pending_updates`` and ``secret_token``; with a secret_token every webhook request
  carries the header ``X-Telegram-Bot-Api-Secret-Token`` with it as content; Telegram POSTs
  one JSON-serialized Update per request and repeats requests answered with a non-2xx status;
  ports 443, 80, 88 and 8443 only; returns True. While a webhook is set, getUpdates does not
  work. https://www.skills.sh/hookdeck/webhook-skills/telegram-webhooks: secret_token is 1-256
  characters of A-Z, a-z, 0-9, _ and -; Telegram does not sign the body (the header is the check).
* https://docs.aiogram.dev/en/v3.13.1/api/methods/delete_webhook.html: ``deleteWebhook``
  (``drop_pending_updates``) returns True. https://docs.rs/crate/tgbot/0.47.0/source/src/types/webhook.rs:
  ``getWebhookInfo`` returns WebhookInfo: ``url`` (empty when none), ``has_custom_certificate``,
  ``pending_update_count``, ``allowed_updates``, ``last_error_date``, ``last_error_message``.
* https://docs.rs/telers/latest/telers/methods/get_updates/struct.GetUpdates.html and
  https://search.r-project.org/CRAN/refmans/telegram.bot/html/getUpdates.html (mirrors of
  https://core.telegram.org/bots/api#getupdates): ``offset`` is the first update to return; an
  update is confirmed (forgotten) once getUpdates is called with a higher offset; a negative
  offset keeps the last ``-offset`` updates; ``limit`` 1-100 (default 100); ``timeout`` for long
  polling (0: short polling); ``allowed_updates`` applies to updates created after the call;
  returns an Array of Update (``update_id`` plus one of ``message``, ``edited_message``,
  ``channel_post``, ``edited_channel_post``...). The method does not work while a webhook is set:
  the live API answers 409 ``Conflict: can't use getUpdates method while webhook is active; use
  deleteWebhook to delete the webhook first`` (quoted in
  https://github.com/frk1/steamhourboostv2/issues/62 and
  https://github.com/m1guelpf/chatgpt-telegram/issues/40).
* Error descriptions (``Unauthorized``, ``Not Found``, ``Bad Request: chat not found``,
  ``Forbidden: bot was blocked by the user``, ``Too Many Requests: retry after N``) are the
  strings the live API sends; Telegram documents the shape, not the exact strings.

Usage::

    with FakeTelegram() as tg:
        creds = {"bot_token": tg.token}
        env = {"LEVQOR_TELEGRAM_API_BASE": tg.url}
        ...
        assert tg.messages[0]["text"] == "hi"
        tg.flood_next(5)   # next call: 429 with parameters.retry_after = 5

        tg.push_message(tg.PRIVATE_CHAT, "hello")   # an Update: POSTed to the webhook when
        tg.webhook["url"]                           # one is set (with the secret header),
                                                    # else queued for getUpdates

Deviation: real Telegram accepts only HTTPS webhook URLs; the fake also takes ``http://`` so a
test host on 127.0.0.1 can be registered (``require_https = True`` restores the rule).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeTelegram", "error_body", "TOKEN_PATTERN"]

#: The shape of a bot token issued by @BotFather.
TOKEN_PATTERN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
PARSE_MODES = ("MarkdownV2", "HTML", "Markdown")
# characters MarkdownV2 reserves that are never entity syntax on their own
_MDV2_RESERVED = set(".!-=+#{}|")
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
UPDATE_TYPES = ("message", "edited_message", "channel_post", "edited_channel_post")
WEBHOOK_PORTS = (443, 80, 88, 8443)
GETUPDATES_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)

_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def error_body(status: int, description: str | None = None, **parameters: Any) -> dict[str, Any]:
    """A Bot API error object: ``{"ok": false, "error_code": ..., "description": ...}``."""
    body: dict[str, Any] = {
        "ok": False,
        "error_code": status,
        "description": description or _DESCRIPTIONS.get(status, "Error"),
    }
    if parameters:
        body["parameters"] = parameters
    return body


def _err(status: int, description: str | None = None, **parameters: Any) -> Reply:
    return Reply(status, error_body(status, description, **parameters))


class FakeTelegram:
    """A Telegram Bot API server for one bot, on 127.0.0.1.

    ``url`` is the API base (what ``LEVQOR_TELEGRAM_API_BASE`` or an ``api_base`` credential
    should say), ``token`` the bot's valid token (any other well-formed token gets 401
    ``Unauthorized``, a malformed one 404 ``Not Found``). ``chats`` maps chat ids to Chat
    objects (a private chat ``PRIVATE_CHAT`` and the channel ``@levqor_alerts`` exist);
    ``messages`` lists every Message the bot sent; ``requests`` every raw request.
    """

    PRIVATE_CHAT = 123456789
    CHANNEL_CHAT = -1001234567890

    def __init__(self, *, bot_id: int = 7000000001, bot_username: str = "levqor_test_bot") -> None:
        self.bot = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Levqor Test",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.token = f"{bot_id}:AA{secrets.token_urlsafe(33)[:33]}"
        self.server = FakeServer()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._failures: deque[Reply] = deque()
        #: real Telegram requires an HTTPS webhook on a few ports; tests on 127.0.0.1 cannot
        self.require_https = False
        self.reset()
        for method in ("GET", "POST"):
            self.server.route(method, r"/bot(?P<token>[^/]*)/(?P<method>[A-Za-z]+)", self._handle)

    # ------------------------------------------------------------------ set-up
    @property
    def url(self) -> str:
        """The API base URL (``http://127.0.0.1:<port>``), without the ``/bot<token>`` part."""
        return self.server.url

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def start(self) -> FakeTelegram:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the initial chats, no messages, no requests, no scripted failures."""
        self.server.reset()
        with self._lock:
            self.chats: dict[int, dict[str, Any]] = {}
            self.blocked: set[int] = set()
            self.migrated: dict[int, int] = {}
            self.messages: list[dict[str, Any]] = []
            self._failures.clear()
            self._next_id = 1
            #: the bot's webhook: url ("" when none), secret_token, allowed_updates, last_error_*
            self.webhook: dict[str, Any] = {"url": ""}
            #: Updates not yet confirmed by getUpdates, or not yet accepted by the webhook
            self.pending: deque[dict[str, Any]] = deque()
            #: every webhook request the fake sent: {"update_id", "status", "body"}
            self.deliveries: list[dict[str, Any]] = []
            self.allowed_updates: list[str] = []
            self._next_update = 815000001
            #: where webhook requests really go: {URL prefix: replacement}, the network between
            #: Telegram and a test host (a public URL that reaches one of several hosts)
            self.routes: dict[str, str] = {}
        self.add_chat(self.PRIVATE_CHAT, "private", first_name="Ada", username="ada")
        self.add_chat(self.CHANNEL_CHAT, "channel", title="Levqor alerts", username="levqor_alerts")

    def add_chat(self, chat_id: int, type: str = "private", **fields: Any) -> dict[str, Any]:
        """Make a chat the bot can write to; ``fields`` are Chat fields (title, username...)."""
        chat = {"id": chat_id, "type": type, **fields}
        with self._lock:
            self.chats[chat_id] = chat
        return chat

    def block(self, chat_id: int) -> None:
        """The user of a private chat blocked the bot: sends get 403."""
        self.blocked.add(chat_id)

    def migrate(self, chat_id: int, to_chat_id: int) -> None:
        """A group became a supergroup: sends to ``chat_id`` get 400 with migrate_to_chat_id."""
        self.migrated[chat_id] = to_chat_id
        self.add_chat(to_chat_id, "supergroup", title=self.chats.get(chat_id, {}).get("title"))

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request with ``status`` and ``body`` (a Bot API error by default).

        ``fail_next(200, {...}, delay=2)`` scripts a slow answer.
        """
        if body is None:
            body = error_body(status)
        with self._lock:
            self._failures.append(Reply(status, body, dict(headers or {}), delay))

    def flood_next(self, retry_after: int) -> None:
        """Answer the next request like Telegram's flood control (429, parameters.retry_after)."""
        self.fail_next(
            429,
            error_body(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            ),
        )

    # ------------------------------------------------------------------ behaviour
    def _handle(self, req: Recorded) -> Reply:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
        assert req.match is not None
        token = req.match["token"]
        if not TOKEN_PATTERN.fullmatch(token):
            return _err(404)
        if not secrets.compare_digest(token, self.token):
            return _err(401)
        params = self._params(req)
        if params is None:
            return _err(400, "Bad Request: invalid JSON")
        method = req.match["method"].lower()
        if method == "getme":
            return Reply(200, {"ok": True, "result": self.bot})
        if method == "sendmessage":
            return self._send_message(params)
        if method == "setwebhook":
            return self._set_webhook(params)
        if method == "deletewebhook":
            return self._delete_webhook(params)
        if method == "getwebhookinfo":
            return self._webhook_info()
        if method == "getupdates":
            return self._get_updates(params)
        return _err(404)

    @staticmethod
    def _params(req: Recorded) -> dict[str, Any] | None:
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
            elif ctype == "application/x-www-form-urlencoded":
                params.update({k: v[-1] for k, v in parse_qs(req.body.decode("utf-8")).items()})
        except (UnicodeDecodeError, ValueError):
            return None
        return params

    def _chat(self, chat_id: Any) -> dict[str, Any] | None:
        if isinstance(chat_id, bool):
            return None
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            name = chat_id[1:].lower()
            return next(
                (c for c in self.chats.values() if str(c.get("username", "")).lower() == name),
                None,
            )
        try:
            return self.chats.get(int(chat_id))
        except (TypeError, ValueError):
            return None

    def _send_message(self, p: dict[str, Any]) -> Reply:
        if p.get("chat_id") in (None, ""):
            return _err(400, "Bad Request: chat_id is empty")
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            return _err(400, "Bad Request: message text is empty")
        chat = self._chat(p["chat_id"])
        if chat is None:
            return _err(400, "Bad Request: chat not found")
        if chat["id"] in self.migrated:
            return _err(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat["id"]],
            )
        if chat["id"] in self.blocked:
            return _err(403, "Forbidden: bot was blocked by the user")
        mode = p.get("parse_mode")
        if mode not in (None, "", *PARSE_MODES):
            return _err(400, f"Bad Request: unsupported parse_mode {mode!r}")
        if mode == "MarkdownV2":
            bad = _unescaped_reserved(text)
            if bad is not None:
                return _err(
                    400,
                    f"Bad Request: can't parse entities: Character '{bad}' is reserved and "
                    "must be escaped with the preceding '\\'",
                )
        if len(text) > 4096:
            return _err(400, "Bad Request: message is too long")
        reply_to = p.get("reply_parameters") or {}
        if isinstance(reply_to, str):
            try:
                reply_to = json.loads(reply_to)
            except ValueError:
                return _err(400, "Bad Request: can't parse reply parameters JSON object")
        reply_id = reply_to.get("message_id") if isinstance(reply_to, dict) else None
        if reply_id is None and p.get("reply_to_message_id") is not None:
            reply_id = p["reply_to_message_id"]
        message: dict[str, Any] = {
            "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": dict(chat),
            "date": int(time.time()),
            "text": text,
        }
        with self._lock:
            if reply_id is not None:
                original = next(
                    (
                        m
                        for m in self.messages
                        if m["chat"]["id"] == chat["id"] and str(m["message_id"]) == str(reply_id)
                    ),
                    None,
                )
                if original is None:
                    return _err(400, "Bad Request: message to be replied not found")
                message["reply_to_message"] = original
            message = {"message_id": self._next_id, **message}
            self._next_id += 1
            self.messages.append(message)
        return Reply(200, {"ok": True, "result": message})

    # ------------------------------------------------------------------ updates and webhooks
    @staticmethod
    def _list(value: Any) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value) if value else []
            except ValueError:
                return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        return value

    @staticmethod
    def _flag(value: Any) -> bool:
        return value is True or (isinstance(value, str) and value.lower() == "true")

    def _set_webhook(self, p: dict[str, Any]) -> Reply:
        url = p.get("url")
        if not isinstance(url, str):
            return _err(400, "Bad Request: bad webhook: url is empty")
        allowed = self._list(p.get("allowed_updates"))
        if p.get("allowed_updates") is not None and allowed is None:
            return _err(400, "Bad Request: can't parse allowed updates")
        secret = p.get("secret_token")
        if secret is not None and not SECRET_TOKEN.fullmatch(str(secret)):
            return _err(400, "Bad Request: secret token contains unallowed characters")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                return _err(400, "Bad Request: bad webhook: invalid webhook URL specified")
            if self.require_https:
                if parts.scheme != "https":
                    return _err(
                        400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                    )
                if (parts.port or 443) not in WEBHOOK_PORTS:
                    return _err(
                        400,
                        "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
                    )
        with self._lock:
            if self._flag(p.get("drop_pending_updates")):
                self.pending.clear()
            if allowed is not None:
                self.allowed_updates = allowed
            self.webhook = (
                {"url": url, "secret_token": secret, "allowed_updates": list(self.allowed_updates)}
                if url
                else {"url": ""}
            )
        return Reply(
            200,
            {
                "ok": True,
                "result": True,
                "description": "Webhook was set" if url else "Webhook was deleted",
            },
        )

    def _delete_webhook(self, p: dict[str, Any]) -> Reply:
        with self._lock:
            was = bool(self.webhook.get("url"))
            self.webhook = {"url": ""}
            if self._flag(p.get("drop_pending_updates")):
                self.pending.clear()
        return Reply(
            200,
            {
                "ok": True,
                "result": True,
                "description": "Webhook was deleted" if was else "Webhook is already deleted",
            },
        )

    def _webhook_info(self) -> Reply:
        with self._lock:
            hook = dict(self.webhook)
            info: dict[str, Any] = {
                "url": hook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self.pending),
            }
            if hook.get("url"):
                info["max_connections"] = 40
                if self.allowed_updates:
                    info["allowed_updates"] = list(self.allowed_updates)
                for key in ("last_error_date", "last_error_message"):
                    if key in hook:
                        info[key] = hook[key]
        return Reply(200, {"ok": True, "result": info})

    def _get_updates(self, p: dict[str, Any]) -> Reply:
        try:
            offset = int(p.get("offset") or 0)
            limit = int(p.get("limit") or 100)
            timeout = float(p.get("timeout") or 0)
        except (TypeError, ValueError):
            return _err(400, "Bad Request: wrong parameter value")
        limit = min(max(limit, 1), 100)
        allowed = self._list(p.get("allowed_updates"))
        deadline = time.monotonic() + min(max(timeout, 0.0), 10.0)
        with self._arrived:
            if self.webhook.get("url"):
                return _err(409, GETUPDATES_CONFLICT)
            if allowed is not None:
                self.allowed_updates = allowed
            if offset > 0:
                while self.pending and self.pending[0]["update_id"] < offset:
                    self.pending.popleft()
            elif offset < 0:
                while len(self.pending) > -offset:
                    self.pending.popleft()
            while not self.pending and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
            result = [dict(u) for u in list(self.pending)[:limit]]
        return Reply(200, {"ok": True, "result": result})

    def make_update(
        self,
        chat_id: int,
        text: str,
        *,
        update_type: str = "message",
        sender: dict[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """The Update Telegram makes when someone writes ``text`` in ``chat_id`` (a chat the bot
        is in), with the next update_id; not queued or sent (:meth:`push_message` does that)."""
        if update_type not in UPDATE_TYPES:
            raise ValueError(f"update_type must be one of {UPDATE_TYPES}")
        with self._lock:
            chat = self.chats.get(chat_id)
            if chat is None:
                raise KeyError(f"the bot is not in chat {chat_id}: add_chat() first")
            message: dict[str, Any] = {
                "message_id": self._next_id,
                "date": int(time.time()),
                "chat": dict(chat),
                "text": text,
            }
            self._next_id += 1
            if update_type.startswith("edited"):
                message["edit_date"] = message["date"]
            if update_type.endswith("channel_post"):
                message["sender_chat"] = dict(chat)
            else:
                message["from"] = sender or (
                    {
                        "id": chat["id"],
                        "is_bot": False,
                        "first_name": chat.get("first_name", "Ada"),
                        **({"username": chat["username"]} if chat.get("username") else {}),
                    }
                    if chat["type"] == "private"
                    else {"id": 123456789, "is_bot": False, "first_name": "Ada", "username": "ada"}
                )
            if reply_to is not None:
                message["reply_to_message"] = {
                    "message_id": reply_to,
                    "date": message["date"],
                    "chat": dict(chat),
                }
            update = {"update_id": self._next_update, update_type: message}
            self._next_update += 1
        return update

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        update_type: str = "message",
        sender: dict[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any] | None:
        """Someone writes ``text`` in ``chat_id``: the Update (:meth:`make_update`). With a
        webhook set it is POSTed there at once (the secret header included; a non-2xx answer
        leaves it pending, see :meth:`deliver_pending`); without one it waits for getUpdates.
        An ``update_type`` outside the bot's allowed_updates makes no Update (None)."""
        with self._lock:
            allowed = list(self.allowed_updates)
        if allowed and update_type not in allowed:
            return None
        update = self.make_update(
            chat_id, text, update_type=update_type, sender=sender, reply_to=reply_to
        )
        with self._lock:
            self.pending.append(update)
            self._arrived.notify_all()
            hook = dict(self.webhook)
        if hook.get("url"):
            self._deliver(hook, update)
        return update

    def deliver_pending(self) -> int:
        """Send the webhook every pending Update again, as Telegram retries; returns how many it
        accepted."""
        with self._lock:
            hook = dict(self.webhook)
            todo = list(self.pending)
        if not hook.get("url"):
            return 0
        return sum(1 for u in todo if 200 <= self._deliver(hook, u) < 300)

    def resend(self, update: dict[str, Any]) -> int:
        """Send ``update`` to the webhook once more, as Telegram does when it did not see an
        answer in time (a retry of a delivery the receiver may already have processed); the
        HTTP status (0: no webhook or no answer)."""
        with self._lock:
            hook = dict(self.webhook)
        if not hook.get("url"):
            return 0
        return self._deliver(hook, update)

    def _deliver(self, hook: dict[str, Any], update: dict[str, Any]) -> int:
        url = hook["url"]
        for prefix, target in list(self.routes.items()):
            if url.startswith(prefix):
                url = target + url[len(prefix) :]
                break
        headers = {"Content-Type": "application/json"}
        if hook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook["secret_token"]
        try:
            resp = requests.post(
                url,
                data=json.dumps(update).encode(),
                headers=headers,
                timeout=30,
                allow_redirects=False,
            )
            status, body = resp.status_code, resp.text[:500]
        except requests.RequestException as e:
            status, body = 0, f"{type(e).__name__}: {e}"
        with self._lock:
            self.deliveries.append(
                {"update_id": update["update_id"], "status": status, "body": body}
            )
            if 200 <= status < 300:
                try:
                    self.pending.remove(update)
                except ValueError:
                    pass
                return status
            if self.webhook.get("url") == hook["url"]:
                self.webhook["last_error_date"] = int(time.time())
                self.webhook["last_error_message"] = (
                    f"Wrong response from the webhook: {status}" if status else "Connection refused"
                )
        return status


def _unescaped_reserved(text: str) -> str | None:
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in _MDV2_RESERVED:
            return ch
    return None
