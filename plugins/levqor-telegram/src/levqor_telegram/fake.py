"""A local fake of the Telegram Bot API (``getMe`` and ``sendMessage``), speaking its wire contract.

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
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeTelegram", "error_body", "TOKEN_PATTERN"]

#: The shape of a bot token issued by @BotFather.
TOKEN_PATTERN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
PARSE_MODES = ("MarkdownV2", "HTML", "Markdown")
# characters MarkdownV2 reserves that are never entity syntax on their own
_MDV2_RESERVED = set(".!-=+#{}|")

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
        self._failures: deque[Reply] = deque()
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
