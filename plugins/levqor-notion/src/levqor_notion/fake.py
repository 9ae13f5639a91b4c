"""A local fake of the Notion API (the parts levqor-notion uses), over real HTTP on 127.0.0.1.

Wire contract followed (checked against Notion's documentation, API version 2022-06-28):

* https://developers.notion.com/reference/post-page : ``POST /v1/pages`` with ``parent``
  (``database_id`` or ``page_id``), ``properties`` (for a page parent only ``title``) and optional
  ``children`` blocks; answers the page object (``object: "page"``, ``id``, ``created_time``,
  ``url``, ``parent``, ``properties``).
* https://developers.notion.com/reference/post-database-query : ``POST
  /v1/databases/{database_id}/query`` with an optional ``filter`` (a property filter, a
  ``timestamp`` filter on ``created_time`` / ``last_edited_time``, or compound ``and`` / ``or``
  nested at most two levels), ``sorts`` (``{"property"|"timestamp", "direction"}``, earlier sorts
  win), ``start_cursor`` and ``page_size`` (at most 100); answers ``{"object": "list", "results":
  [pages], "next_cursor", "has_more", "type": "page_or_database"}``. Archived pages are left out.
  https://developers.notion.com/reference/post-database-query-filter : the filter conditions
  per property type (``equals``, ``contains``, ``on_or_after`` ...).
  https://developers.notion.com/changelog/filter-databases-by-timestamp-even-if-they-dont-have-a-timestamp-property :
  ``{"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": ...}}``.
* https://developers.notion.com/reference/intro#pagination : ``start_cursor`` / ``page_size``
  in, ``has_more`` / ``next_cursor`` out; a cursor is opaque (here: the id of the next page).
* https://developers.notion.com/changelog/last-edited-time-is-now-rounded-to-the-nearest-minute :
  ``created_time`` and ``last_edited_time`` are rounded down to the minute (the fake does so too,
  which is why a poller has to overlap its windows).
* https://developers.notion.com/reference/patch-page : ``PATCH /v1/pages/{page_id}`` with
  ``properties`` (only those to change, keyed by name) and ``archived``; answers the page object.
* https://developers.notion.com/reference/page and
  https://developers.notion.com/reference/page-property-values : the page object (``id``,
  ``created_time``, ``last_edited_time``, ``archived``, ``parent``, ``url``, ``properties`` each
  with ``id``, ``type`` and the value under the type's key: ``title`` / ``rich_text`` arrays of
  rich text with ``plain_text``, ``number``, ``select`` / ``status`` ``{"name"}``,
  ``multi_select``, ``date`` ``{"start", "end", "time_zone"}``, ``checkbox``, ``url``,
  ``email``, ``phone_number``, ``people`` (user objects with ``name``)).
* https://developers.notion.com/reference/status-codes : error bodies
  ``{"object": "error", "status": N, "code": ..., "message": ...}`` with the codes
  invalid_json, invalid_request_url, validation_error, missing_version (400), unauthorized (401),
  restricted_resource (403), object_not_found (404), conflict_error (409), rate_limited (429, with
  a ``Retry-After`` header in seconds), internal_server_error (500), service_unavailable /
  database_connection_unavailable (503), gateway_timeout (504).
* https://developers.notion.com/reference/request-limits : at most 100 blocks in ``children``,
  at most 2000 characters in one rich-text ``text.content``.
* https://developers.notion.com/changelog/retrieve-information-about-your-token :
  ``GET /v1/users/me`` answers the token's bot user (``object: "user"``, ``type: "bot"``).
* OAuth of a public integration, https://developers.notion.com/docs/authorization and
  https://developers.notion.com/reference/create-a-token ,
  https://developers.notion.com/reference/refresh-a-token : the user is sent to
  ``/v1/oauth/authorize?client_id&redirect_uri&response_type=code&owner=user&state``, which
  redirects back with ``code`` and ``state``; ``POST /v1/oauth/token`` authenticates the client
  with HTTP Basic (``client_id:client_secret``) and takes a JSON body ``{"grant_type":
  "authorization_code", "code", "redirect_uri"}`` (or ``{"grant_type": "refresh_token",
  "refresh_token"}``); it answers ``{"access_token", "token_type": "bearer", "refresh_token",
  "bot_id", "workspace_id", "workspace_name", "workspace_icon", "owner": {"type": "user", "user":
  {...}}, "duplicated_template_id"}``. Refusals follow OAuth 2.0 (RFC 6749 section 5.2):
  ``{"error": "invalid_grant" | "invalid_client" | "invalid_request" | "unsupported_grant_type",
  "error_description"}``. Older integrations get no ``refresh_token`` and tokens that never
  expire (``refresh_tokens=False``).

Usage::

    with FakeNotion(token="ntn_test_123") as notion:
        db = notion.add_database(title_property="Task", properties={"Status": "select"})
        row = notion.add_page(db, {"Task": "Write the docs", "Status": "Todo"})  # upstream edit
        notion.edit_page(row, {"Status": "Done"})
        ... point the connector at notion.url (LEVQOR_NOTION_API_BASE) ...
        notion.fail_next(429, retry_after=3)  # the next POST /v1/pages is rate limited
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeNotion", "error_body", "DEFAULT_MESSAGES", "plain_property"]

DEFAULT_MESSAGES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "Error parsing JSON body."),
    "invalid_request_url": (400, "Invalid request URL."),
    "validation_error": (400, "body failed validation."),
    "missing_version": (
        400,
        "Notion-Version header failed validation: Notion-Version header should be defined.",
    ),
    "unauthorized": (401, "API token is invalid."),
    "restricted_resource": (403, "Insufficient permissions for this endpoint."),
    "object_not_found": (
        404,
        "Could not find database with ID: {id}. Make sure the relevant pages and databases are shared with your integration.",
    ),
    "conflict_error": (409, "Conflict occurred while saving. Please try again."),
    "rate_limited": (429, "You have been rate limited. Please try again in a few minutes."),
    "internal_server_error": (500, "Unexpected error occurred."),
    "service_unavailable": (503, "Notion is unavailable, please try again later."),
    "database_connection_unavailable": (
        503,
        "Notion's database is unavailable or in an unqueryable state.",
    ),
    "gateway_timeout": (504, "Notion timed out while attempting to complete this request."),
}
_CODE_FOR_STATUS = {
    400: "validation_error",
    401: "unauthorized",
    403: "restricted_resource",
    404: "object_not_found",
    409: "conflict_error",
    429: "rate_limited",
    500: "internal_server_error",
    503: "service_unavailable",
    504: "gateway_timeout",
}
#: The property types the fake knows how to store, filter and sort.
PROPERTY_TYPES = (
    "title",
    "rich_text",
    "number",
    "select",
    "status",
    "multi_select",
    "date",
    "checkbox",
    "url",
    "email",
    "phone_number",
    "people",
)
_DATE_CONDITIONS = ("equals", "before", "after", "on_or_before", "on_or_after")


def error_body(code: str, message: str | None = None, status: int | None = None) -> dict[str, Any]:
    """A documented Notion error body."""
    st, msg = DEFAULT_MESSAGES.get(code, (status or 400, code))
    return {
        "object": "error",
        "status": status or st,
        "code": code,
        "message": message if message is not None else msg.replace("{id}", "?"),
        "request_id": str(uuid.uuid4()),
    }


def _err(code: str, message: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    body = error_body(code, message)
    return Reply(body["status"], body, headers or {})


def _invalid(message: str) -> Reply:
    return _err("validation_error", f"body failed validation: {message}")


def _norm(ident: Any) -> str:
    return str(ident).replace("-", "").lower()


def _dashed(ident: str) -> str:
    h = _norm(ident)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" if len(h) == 32 else str(ident)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _rich(text: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "text",
            "text": {"content": text, "link": None},
            "annotations": {
                "bold": False,
                "italic": False,
                "strikethrough": False,
                "underline": False,
                "code": False,
                "color": "default",
            },
            "plain_text": text,
            "href": None,
        }
    ]


def _with_plain_text(items: list[Any]) -> list[dict[str, Any]]:
    """Rich text as Notion answers it: what was sent, plus ``plain_text``."""
    out = []
    for rt in items:
        content = rt.get("text", {}).get("content", "") if isinstance(rt, dict) else ""
        out.append(
            {
                **_rich(content)[0],
                **{k: v for k, v in rt.items() if k != "type"},
                "plain_text": content,
            }
        )
    return out


def plain_property(value: Mapping[str, Any]) -> Any:
    """The plain value of a stored property value (for assertions and filters in the fake)."""
    kind = value.get("type")
    v = value.get(kind)
    if kind in ("title", "rich_text"):
        return "".join(rt.get("plain_text", "") for rt in v or [])
    if kind in ("select", "status"):
        return v.get("name") if isinstance(v, dict) else None
    if kind == "multi_select":
        return [o.get("name") for o in v or []]
    if kind == "date":
        return v.get("start") if isinstance(v, dict) else None
    if kind == "people":
        return [p.get("name") or p.get("id") for p in v or []]
    return v


class FakeNotion:
    """A fake Notion API. ``pages`` holds every page created by ``POST /v1/pages`` (the request
    bodies plus ``id``); ``rows`` every database row (page objects, as Notion stores them)."""

    def __init__(
        self,
        token: str = "ntn_fake_token_123456",
        *,
        bot_name: str = "Levqor test",
        client_id: str = "notion-client-id",
        client_secret: str = "notion-client-secret",
        workspace_name: str = "Acme workspace",
        refresh_tokens: bool = True,
    ) -> None:
        self.token = token
        self.bot_name = bot_name
        self.bot_id = str(uuid.uuid4())
        self.server = FakeServer()
        self.pages: list[dict[str, Any]] = []
        #: database id (no dashes) -> {"id", "title_property", "properties": {name: type or None}}
        self.databases: dict[str, dict[str, Any]] = {}
        #: page id (no dashes) -> page object, for every database row (created upstream or by POST)
        self.rows: dict[str, dict[str, Any]] = {}
        #: page ids (no dashes) that the integration can see and create sub-pages under
        self.parent_pages: set[str] = set()
        #: access tokens the API accepts (the integration token and every OAuth token issued)
        self.tokens: set[str] = {token}
        # OAuth: the operator's client, the codes and refresh tokens handed out
        self.client_id = client_id
        self.client_secret = client_secret
        self.workspace_name = workspace_name
        self.workspace_id = str(uuid.uuid4())
        self.refresh_tokens = refresh_tokens
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, str] = {}  # refresh token -> the access token it belongs to
        self.token_requests: list[Recorded] = []
        self._clock = timedelta(0)
        self._seq = 0
        self._lock = threading.RLock()
        # routes registered later win, so the catch-all goes first
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.server.route(method, "/.*", lambda req: _err("invalid_request_url"))
        self.server.route("POST", "/v1/pages", self._create_page)
        self.server.route("PATCH", "/v1/pages/([^/]+)", self._update_page)
        self.server.route("GET", "/v1/pages/([^/]+)", self._retrieve_page)
        self.server.route("POST", "/v1/databases/([^/]+)/query", self._query)
        self.server.route("GET", "/v1/users/me", self._me)
        self.server.route("GET", "/v1/oauth/authorize", self._authorize)
        self.server.route("POST", "/v1/oauth/token", self._token)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> FakeNotion:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeNotion:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    @property
    def authorization_url(self) -> str:
        return f"{self.url}/v1/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/v1/oauth/token"

    # ------------------------------------------------------------------ clock
    def now(self) -> datetime:
        """The fake's clock, rounded down to the minute as Notion's timestamps are."""
        t = datetime.now(UTC) + self._clock
        return t.replace(second=0, microsecond=0)

    def advance(self, minutes: float = 1) -> None:
        """Move the fake's clock forward (later edits get later timestamps)."""
        self._clock += timedelta(minutes=minutes)

    # ------------------------------------------------------------------ set-up
    def add_database(
        self,
        database_id: str | None = None,
        *,
        title_property: str = "Name",
        properties: Iterable[str] | Mapping[str, str] = (),
    ) -> str:
        """Share a database with the integration; returns its id (dashed).

        ``properties`` names the other columns: a mapping ``{name: type}`` (a type of
        :data:`PROPERTY_TYPES`), or a list of names whose values the fake stores as sent."""
        ident = database_id or str(uuid.uuid4())
        props: dict[str, str | None] = (
            dict(properties) if isinstance(properties, Mapping) else dict.fromkeys(properties)
        )
        for name, kind in props.items():
            if kind is not None and kind not in PROPERTY_TYPES:
                raise ValueError(f"property {name!r}: unknown type {kind!r}")
        self.databases[_norm(ident)] = {
            "id": _dashed(ident),
            "title_property": title_property,
            "properties": {title_property: "title", **props},
        }
        return ident

    def share_page(self, page_id: str | None = None) -> str:
        """Share a page with the integration (sub-pages can be created under it); returns its id."""
        ident = page_id or str(uuid.uuid4())
        self.parent_pages.add(_norm(ident))
        return ident

    def add_page(
        self, database_id: str, properties: Mapping[str, Any] | None = None, **fields: Any
    ) -> str:
        """Add a row to a database upstream (as a person in Notion would); returns its id.

        ``properties`` maps column names to plain values (``"Write docs"``, ``3``, ``"Todo"``,
        ``["a", "b"]``, ``True``, ``"2026-01-02"``, people as ``[{"id", "name"}]``) or to raw
        Notion property values. ``fields`` may set ``created_time`` (a datetime) and
        ``page_id``."""
        db = self._db_or_raise(database_id)
        props = self._convert(db, dict(properties or {}))
        when = fields.get("created_time") or self.now()
        page = self._new_row(db, props, when, fields.get("page_id"))
        return page["id"]

    def edit_page(
        self,
        page_id: str,
        properties: Mapping[str, Any] | None = None,
        *,
        archived: bool | None = None,
    ) -> dict[str, Any]:
        """Edit a row upstream: set properties (plain or raw values) and/or archive it; its
        ``last_edited_time`` moves to the fake's now. Returns the page object."""
        with self._lock:
            page = self.rows[_norm(page_id)]
            db = self.databases[_norm(page["parent"]["database_id"])]
            for name, value in self._convert(db, dict(properties or {})).items():
                page["properties"][name] = value
            if archived is not None:
                page["archived"] = page["in_trash"] = bool(archived)
            page["last_edited_time"] = _iso(self.now())
            self._seq += 1
            page["_edit"] = self._seq
            return page

    def row(self, page_id: str) -> dict[str, Any]:
        """A database row's page object."""
        return self.rows[_norm(page_id)]

    def values(self, page_id: str) -> dict[str, Any]:
        """A row's properties as plain values."""
        return {k: plain_property(v) for k, v in self.row(page_id)["properties"].items()}

    def revoke(self, access_token: str) -> None:
        """Make an access token stop working (the API answers 401 unauthorized)."""
        self.tokens.discard(access_token)

    def issue_code(self, redirect_uri: str | None = None) -> str:
        """An authorization code as the consent screen would hand out."""
        code = secrets.token_urlsafe(12)
        self.codes[code] = {"redirect_uri": redirect_uri}
        return code

    def reset(self) -> None:
        """Forget received requests, created pages, rows and scripted answers (keeps shared
        databases and pages)."""
        self.server.reset()
        with self._lock:
            self.pages.clear()
            self.rows.clear()
            self.token_requests.clear()

    def fail_next(
        self,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        path: str = "/v1/pages",
        method: str = "POST",
        body: Any = None,
    ) -> None:
        """Answer the next ``method path`` with a documented error (or ``body`` verbatim)."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        if body is None:
            c = code or _CODE_FOR_STATUS.get(
                status, "internal_server_error" if status >= 500 else "validation_error"
            )
            body = error_body(c, message, status)
        self.server.queue(method, path, Reply(status, body, hdrs, delay))

    def delay_next(self, seconds: float, path: str = "/v1/pages", method: str = "POST") -> None:
        """Answer the next request successfully but only after ``seconds`` (for timeout tests)."""
        page = self._page_object({"parent": {"page_id": str(uuid.uuid4())}, "properties": {}})
        self.server.queue(method, path, Reply(200, page, {}, seconds))

    # ------------------------------------------------------------------ rows
    def _db_or_raise(self, database_id: str) -> dict[str, Any]:
        db = self.databases.get(_norm(database_id))
        if db is None:
            raise KeyError(f"database {database_id} is not shared with the fake's integration")
        return db

    def _convert(self, db: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in props.items():
            if name not in db["properties"]:
                raise KeyError(f"{name} is not a property of the database")
            kind = db["properties"][name]
            if isinstance(value, dict) and (kind is None or kind in value):
                raw = value
            else:
                raw = self._raw_value(kind or "rich_text", value)
            out[name] = self._stored(
                name, kind or next((k for k in PROPERTY_TYPES if k in raw), "rich_text"), raw
            )
        return out

    @staticmethod
    def _raw_value(kind: str, value: Any) -> dict[str, Any]:
        """A request-style property value from a plain value."""
        if kind in ("title", "rich_text"):
            return {kind: [{"type": "text", "text": {"content": str(value)}}]}
        if kind in ("select", "status"):
            return {kind: None if value is None else {"name": str(value)}}
        if kind == "multi_select":
            return {kind: [{"name": str(v)} for v in value]}
        if kind == "date":
            return {kind: None if value is None else {"start": str(value)}}
        if kind == "people":
            return {kind: [p if isinstance(p, dict) else {"id": str(p)} for p in value]}
        return {kind: value}

    def _stored(self, name: str, kind: str, raw: dict[str, Any]) -> dict[str, Any]:
        """The property value as Notion answers it (``id``, ``type``, value with plain_text)."""
        v = raw.get(kind)
        if kind in ("title", "rich_text"):
            v = _with_plain_text(v or [])
        elif kind in ("select", "status") and isinstance(v, dict):
            v = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_OID, v.get("name", ""))),
                "color": "default",
                **v,
            }
        elif kind == "multi_select":
            v = [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_OID, o.get("name", ""))),
                    "color": "default",
                    **o,
                }
                for o in v or []
            ]
        elif kind == "date" and isinstance(v, dict):
            v = {"start": v.get("start"), "end": v.get("end"), "time_zone": v.get("time_zone")}
        elif kind == "people":
            v = [{"object": "user", **p} for p in v or []]
        pid = "title" if kind == "title" else str(uuid.uuid5(uuid.NAMESPACE_URL, name))[:4]
        return {"id": pid, "type": kind, kind: v}

    def _new_row(
        self, db: dict[str, Any], props: dict[str, Any], when: datetime, page_id: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            pid = _dashed(page_id) if page_id else str(uuid.uuid4())
            stamp = _iso(when.replace(second=0, microsecond=0))
            for name, kind in db["properties"].items():  # every column is present, empty or not
                if name not in props and kind is not None:
                    empty: Any = {
                        "title": [],
                        "rich_text": [],
                        "multi_select": [],
                        "people": [],
                        "checkbox": False,
                    }.get(kind)
                    props[name] = {
                        "id": "title"
                        if kind == "title"
                        else str(uuid.uuid5(uuid.NAMESPACE_URL, name))[:4],
                        "type": kind,
                        kind: empty,
                    }
            page = {
                "object": "page",
                "id": pid,
                "created_time": stamp,
                "last_edited_time": stamp,
                "created_by": {"object": "user", "id": self.bot_id},
                "last_edited_by": {"object": "user", "id": self.bot_id},
                "cover": None,
                "icon": None,
                "parent": {"type": "database_id", "database_id": db["id"]},
                "archived": False,
                "in_trash": False,
                "properties": props,
                "url": f"https://www.notion.so/{pid.replace('-', '')}",
                "public_url": None,
                "_seq": self._seq,
                "_edit": self._seq,
            }
            self.rows[_norm(pid)] = page
            return page

    @staticmethod
    def _public(page: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in page.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ handlers
    def _auth(self, req: Recorded) -> Reply | None:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return _err("unauthorized")
        if not req.header("Notion-Version"):
            return _err("missing_version")
        return None

    @staticmethod
    def _body(req: Recorded) -> dict[str, Any] | Reply:
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body else {}
        except (UnicodeDecodeError, ValueError):
            return _err("invalid_json")
        if not isinstance(body, dict):
            return _invalid("body should be an object.")
        return body

    def _me(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        return Reply(
            200,
            {
                "object": "user",
                "id": self.bot_id,
                "name": self.bot_name,
                "avatar_url": None,
                "type": "bot",
                "bot": {
                    "owner": {"type": "workspace", "workspace": True},
                    "workspace_name": self.workspace_name,
                },
            },
        )

    def _page_object(self, body: dict[str, Any]) -> dict[str, Any]:
        pid = str(uuid.uuid4())
        now = _iso(self.now())
        parent = body["parent"]
        kind = "database_id" if "database_id" in parent else "page_id"
        return {
            "object": "page",
            "id": pid,
            "created_time": now,
            "last_edited_time": now,
            "created_by": {"object": "user", "id": self.bot_id},
            "last_edited_by": {"object": "user", "id": self.bot_id},
            "cover": None,
            "icon": None,
            "archived": False,
            "in_trash": False,
            "parent": {"type": kind, kind: parent[kind]},
            "properties": body.get("properties", {}),
            "url": f"https://www.notion.so/{pid.replace('-', '')}",
            "public_url": None,
        }

    def _check_props(self, db: dict[str, Any] | None, props: dict[str, Any]) -> Reply | None:
        for name, value in props.items():
            if not isinstance(value, dict):
                return _invalid(f"body.properties.{name} should be an object.")
            if db is not None:
                if name not in db["properties"]:
                    return _err("validation_error", f"{name} is not a property that exists.")
                kind = db["properties"][name]
                if kind is not None and kind not in value:
                    return _err(
                        "validation_error",
                        f"{name} is expected to be {kind}.",
                    )
            for key in ("title", "rich_text"):
                if key in value and (
                    bad := self._check_rich_text(value[key], f"properties.{name}.{key}")
                ):
                    return bad
        return None

    def _create_page(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        body = self._body(req)
        if isinstance(body, Reply):
            return body
        parent = body.get("parent")
        props = body.get("properties")
        if (
            not isinstance(parent, dict)
            or len([k for k in parent if k in ("database_id", "page_id")]) != 1
        ):
            return _invalid("body.parent should be a database_id or page_id.")
        if props is not None and not isinstance(props, dict):
            return _invalid("body.properties should be an object.")
        props = props or {}
        db = None
        if "database_id" in parent:
            db = self.databases.get(_norm(parent["database_id"]))
            if db is None:
                return _err(
                    "object_not_found",
                    DEFAULT_MESSAGES["object_not_found"][1].replace(
                        "{id}", str(parent["database_id"])
                    ),
                )
            if (bad := self._check_props(db, props)) is not None:
                return bad
        else:
            if (bad := self._check_props(None, props)) is not None:
                return bad
            if _norm(parent["page_id"]) not in self.parent_pages:
                return _err(
                    "object_not_found",
                    DEFAULT_MESSAGES["object_not_found"][1]
                    .replace("database", "block")
                    .replace("{id}", str(parent["page_id"])),
                )
            extra = [k for k in props if k != "title"]
            if extra:
                return _err(
                    "validation_error",
                    f"Invalid property for page parent: {extra[0]}. Only title is allowed.",
                )
        children = body.get("children", [])
        if not isinstance(children, list):
            return _invalid("body.children should be an array.")
        if len(children) > 100:
            return _invalid(
                f"body.children.length should be ≤ `100`, instead was `{len(children)}`."
            )
        for i, block in enumerate(children):
            if (
                not isinstance(block, dict)
                or not isinstance(block.get("type"), str)
                or block["type"] not in block
            ):
                return _invalid(f"body.children[{i}] is not a valid block.")
            inner = block[block["type"]]
            if isinstance(inner, dict) and "rich_text" in inner:
                if bad := self._check_rich_text(
                    inner["rich_text"], f"children[{i}].{block['type']}.rich_text"
                ):
                    return bad
        if db is not None:
            stored = {
                n: self._stored(
                    n,
                    db["properties"][n] or next((k for k in PROPERTY_TYPES if k in v), "rich_text"),
                    v,
                )
                for n, v in props.items()
            }
            page = self._public(self._new_row(db, stored, self.now()))
        else:
            page = self._page_object(body)
        self.pages.append({**body, "id": page["id"]})
        return Reply(200, page)

    def _retrieve_page(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        page = self.rows.get(_norm(req.match.group(1)))  # type: ignore[union-attr]
        if page is None:
            return _err("object_not_found", f"Could not find page with ID: {req.match.group(1)}.")  # type: ignore[union-attr]
        return Reply(200, self._public(page))

    def _update_page(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        ident = req.match.group(1)  # type: ignore[union-attr]
        body = self._body(req)
        if isinstance(body, Reply):
            return body
        with self._lock:
            page = self.rows.get(_norm(ident))
            if page is None:
                return _err(
                    "object_not_found",
                    f"Could not find page with ID: {ident}. Make sure the relevant pages and "
                    "databases are shared with your integration.",
                )
            unknown = [
                k for k in body if k not in ("properties", "archived", "in_trash", "icon", "cover")
            ]
            if unknown:
                return _invalid(f"body.{unknown[0]} should be not present.")
            props = body.get("properties", {})
            if not isinstance(props, dict):
                return _invalid("body.properties should be an object.")
            archived = body.get("archived", body.get("in_trash"))
            if archived is not None and not isinstance(archived, bool):
                return _invalid("body.archived should be a boolean.")
            if page["archived"] and archived is not False and props:
                return _err(
                    "validation_error",
                    "Can't edit block that is archived. You must unarchive the block before editing.",
                )
            db = self.databases[_norm(page["parent"]["database_id"])]
            if (bad := self._check_props(db, props)) is not None:
                return bad
            for name, value in props.items():
                kind = db["properties"][name] or next(
                    (k for k in PROPERTY_TYPES if k in value), "rich_text"
                )
                page["properties"][name] = self._stored(name, kind, value)
            if archived is not None:
                page["archived"] = page["in_trash"] = archived
            page["last_edited_time"] = _iso(self.now())
            self._seq += 1
            page["_edit"] = self._seq
            return Reply(200, self._public(page))

    # ------------------------------------------------------------------ query
    def _query(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        ident = req.match.group(1)  # type: ignore[union-attr]
        body = self._body(req)
        if isinstance(body, Reply):
            return body
        db = self.databases.get(_norm(ident))
        if db is None:
            return _err(
                "object_not_found",
                DEFAULT_MESSAGES["object_not_found"][1].replace("{id}", ident),
            )
        unknown = [
            k
            for k in body
            if k
            not in (
                "filter",
                "sorts",
                "start_cursor",
                "page_size",
                "filter_properties",
                "archived",
                "in_trash",
            )
        ]
        if unknown:
            return _invalid(f"body.{unknown[0]} should be not present.")
        size = body.get("page_size", 100)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
            return _invalid(
                f"body.page_size should be a number between 1 and 100, instead was `{size}`."
            )
        flt = body.get("filter")
        if flt is not None:
            problem = self._check_filter(db, flt, 0)
            if problem:
                return _invalid(problem)
        sorts = body.get("sorts", [])
        if not isinstance(sorts, list):
            return _invalid("body.sorts should be an array.")
        for i, s in enumerate(sorts):
            if not isinstance(s, dict) or s.get("direction") not in ("ascending", "descending"):
                return _invalid(
                    f'body.sorts[{i}].direction should be `"ascending"` or `"descending"`.'
                )
            if "timestamp" in s:
                if s["timestamp"] not in ("created_time", "last_edited_time"):
                    return _invalid(
                        f'body.sorts[{i}].timestamp should be `"created_time"` or `"last_edited_time"`.'
                    )
            elif s.get("property") not in db["properties"]:
                return _err(
                    "validation_error",
                    f"Could not find sort property with name or id: {s.get('property')}",
                )
        with self._lock:
            rows = [
                p
                for p in self.rows.values()
                if _norm(p["parent"]["database_id"]) == _norm(ident) and not p["archived"]
            ]
            rows = [p for p in rows if flt is None or self._match(db, flt, p)]
            rows.sort(key=lambda p: p["_seq"])
            if not sorts:  # Notion's default: newest first
                rows.sort(key=lambda p: (p["created_time"], p["_seq"]), reverse=True)
            for s in reversed(sorts):
                key = s.get("timestamp") or s.get("property")
                rows.sort(
                    key=lambda p, k=key, ts="timestamp" in s: self._sort_key(p, k, ts),
                    reverse=s["direction"] == "descending",
                )
            start = 0
            cursor = body.get("start_cursor")
            if cursor is not None:
                ids = [p["id"] for p in rows]
                if not isinstance(cursor, str) or cursor not in ids:
                    return _err(
                        "validation_error", "The start_cursor provided is invalid: " + str(cursor)
                    )
                start = ids.index(cursor)
            chunk = rows[start : start + size]
            more = start + size < len(rows)
            return Reply(
                200,
                {
                    "object": "list",
                    "results": [self._public(p) for p in chunk],
                    "next_cursor": rows[start + size]["id"] if more else None,
                    "has_more": more,
                    "type": "page_or_database",
                    "page_or_database": {},
                    "request_id": str(uuid.uuid4()),
                },
            )

    @staticmethod
    def _sort_key(page: dict[str, Any], key: str, timestamp: bool) -> tuple:
        if (
            timestamp
        ):  # Notion keeps exact times and shows them rounded: order within a minute holds
            return (0, page[key], page["_seq" if key == "created_time" else "_edit"])
        value = page["properties"].get(key)
        v = plain_property(value) if value else None
        if v is None or v == "" or v == []:
            return (1, "")  # empty values sort last, as in Notion
        return (0, v if not isinstance(v, list) else ",".join(map(str, v)))

    def _check_filter(self, db: dict[str, Any], flt: Any, depth: int) -> str | None:
        if not isinstance(flt, dict):
            return "body.filter should be an object."
        for comp in ("and", "or"):
            if comp in flt:
                if depth >= 2:
                    return "body.filter: compound filters can be nested at most two levels deep."
                if not isinstance(flt[comp], list):
                    return f"body.filter.{comp} should be an array."
                for sub in flt[comp]:
                    if (p := self._check_filter(db, sub, depth + 1)) is not None:
                        return p
                return None
        if "timestamp" in flt:
            ts = flt["timestamp"]
            if ts not in ("created_time", "last_edited_time"):
                return 'body.filter.timestamp should be `"created_time"` or `"last_edited_time"`.'
            cond = flt.get(ts)
            if not isinstance(cond, dict) or len(cond) != 1:
                return f"body.filter.{ts} should be an object with one condition."
            op, value = next(iter(cond.items()))
            if op not in _DATE_CONDITIONS and op not in ("is_empty", "is_not_empty"):
                return f"body.filter.{ts}.{op} is not a date filter condition."
            if op in _DATE_CONDITIONS and _parse_time(value) is None:
                return f"body.filter.{ts}.{op} should be a valid ISO 8601 date string."
            return None
        name = flt.get("property")
        if not isinstance(name, str):
            return "body.filter should have a property, a timestamp, an and or an or."
        if name not in db["properties"]:
            return f"Could not find property with name or id: {name}"
        kinds = [k for k in flt if k != "property"]
        if len(kinds) != 1 or not isinstance(flt[kinds[0]], dict) or len(flt[kinds[0]]) != 1:
            return f"body.filter for {name} should have exactly one type with one condition."
        kind = db["properties"][name]
        if (
            kind is not None
            and kinds[0] != kind
            and not (kind == "title" and kinds[0] == "rich_text")
        ):
            return f"body.filter: {name} is a {kind} property, not {kinds[0]}."
        return None

    def _match(self, db: dict[str, Any], flt: dict[str, Any], page: dict[str, Any]) -> bool:
        if "and" in flt:
            return all(self._match(db, f, page) for f in flt["and"])
        if "or" in flt:
            return any(self._match(db, f, page) for f in flt["or"])
        if "timestamp" in flt:
            ts = flt["timestamp"]
            op, value = next(iter(flt[ts].items()))
            return _date_cond(page[ts], op, value)
        name = flt["property"]
        kind = next(k for k in flt if k != "property")
        op, arg = next(iter(flt[kind].items()))
        prop = page["properties"].get(name)
        v = plain_property(prop) if prop else None
        if op == "is_empty":
            return v in (None, "", []) and bool(arg)
        if op == "is_not_empty":
            return v not in (None, "", []) and bool(arg)
        if kind == "date":
            return v is not None and _date_cond(v, op, arg)
        if kind == "multi_select" or kind == "people":
            names = v or []
            if kind == "people":
                names = [p.get("id") for p in prop.get("people") or []] if prop else []
            return (
                (arg in names)
                if op == "contains"
                else (arg not in names)
                if op == "does_not_contain"
                else False
            )
        if kind == "number":
            if v is None:
                return False
            return {
                "equals": v == arg,
                "does_not_equal": v != arg,
                "greater_than": v > arg,
                "less_than": v < arg,
                "greater_than_or_equal_to": v >= arg,
                "less_than_or_equal_to": v <= arg,
            }.get(op, False)
        if kind == "checkbox":
            return (v is True) == bool(arg) if op == "equals" else (v is True) != bool(arg)
        s = "" if v is None else str(v)
        return {
            "equals": s == arg,
            "does_not_equal": s != arg,
            "contains": isinstance(arg, str) and arg in s,
            "does_not_contain": isinstance(arg, str) and arg not in s,
            "starts_with": isinstance(arg, str) and s.startswith(arg),
            "ends_with": isinstance(arg, str) and s.endswith(arg),
        }.get(op, False)

    # ------------------------------------------------------------------ OAuth
    def _authorize(self, req: Recorded) -> Reply:
        """The consent screen, approved at once: redirect back with a code and the state."""
        q = {k: v[0] for k, v in req.query.items()}
        redirect = q.get("redirect_uri")
        if q.get("client_id") != self.client_id or not redirect:
            return Reply(400, "unknown client_id or missing redirect_uri", {})
        if q.get("response_type") != "code" or q.get("owner") != "user":
            back = {"error": "invalid_request", "state": q.get("state", "")}
            return Reply(302, b"", {"Location": f"{redirect}?{urlencode(back)}"})
        code = self.issue_code(redirect)
        back = {"code": code, "state": q.get("state", "")}
        return Reply(302, b"", {"Location": f"{redirect}?{urlencode(back)}"})

    def _token(self, req: Recorded) -> Reply:
        self.token_requests.append(req)

        def refuse(error: str, desc: str, status: int = 400) -> Reply:
            return Reply(status, {"error": error, "error_description": desc})

        auth = req.header("Authorization") or ""
        try:
            user, _, pw = (
                base64.b64decode(auth[6:]).decode().partition(":")
                if auth.startswith("Basic ")
                else ("", "", "")
            )
        except (ValueError, UnicodeDecodeError):
            user, pw = "", ""
        if (user, pw) != (self.client_id, self.client_secret):
            return refuse("invalid_client", "Client authentication failed (HTTP Basic).", 401)
        ctype = (req.header("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/json":
            return refuse(
                "invalid_request", "The body must be JSON (Content-Type: application/json)."
            )
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return refuse("invalid_request", "Error parsing JSON body.")
        if not isinstance(body, dict):
            return refuse("invalid_request", "body should be an object.")
        grant = body.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                issued = self.codes.pop(str(body.get("code")), None)
                if issued is None:
                    return refuse("invalid_grant", "Invalid code.")
                if issued["redirect_uri"] and body.get("redirect_uri") != issued["redirect_uri"]:
                    return refuse("invalid_grant", "Invalid redirect_uri.")
            elif grant == "refresh_token":
                old = self.refresh.pop(str(body.get("refresh_token")), None)
                if old is None:
                    return refuse("invalid_grant", "Invalid refresh token.")
                self.tokens.discard(old)
            else:
                return refuse("unsupported_grant_type", f"Unsupported grant_type: {grant}")
            access = "ntn_" + secrets.token_hex(20)
            self.tokens.add(access)
            answer: dict[str, Any] = {
                "access_token": access,
                "token_type": "bearer",
                "bot_id": self.bot_id,
                "workspace_name": self.workspace_name,
                "workspace_icon": "https://www.notion.so/images/workspace.png",
                "workspace_id": self.workspace_id,
                "owner": {
                    "type": "user",
                    "user": {
                        "object": "user",
                        "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.workspace_id)),
                        "name": "Ada Lovelace",
                        "avatar_url": None,
                        "type": "person",
                        "person": {"email": "ada@example.com"},
                    },
                },
                "duplicated_template_id": None,
                "request_id": str(uuid.uuid4()),
            }
            if self.refresh_tokens:
                answer["refresh_token"] = "nrt_" + secrets.token_hex(20)
                self.refresh[answer["refresh_token"]] = access
            return Reply(200, answer)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_rich_text(items: Any, where: str) -> Reply | None:
        if not isinstance(items, list):
            return _invalid(f"body.{where} should be an array.")
        for j, rt in enumerate(items):
            content = rt.get("text", {}).get("content") if isinstance(rt, dict) else None
            if not isinstance(content, str):
                return _invalid(f"body.{where}[{j}].text.content should be a string.")
            if len(content) > 2000:
                return _invalid(
                    f"body.{where}[{j}].text.content.length should be ≤ `2000`, "
                    f"instead was `{len(content)}`."
                )
        return None

    # ------------------------------------------------------------------ helpers for tests
    @staticmethod
    def title_of(page: dict[str, Any]) -> str:
        """The plain-text title of a recorded page body."""
        for value in page.get("properties", {}).values():
            if isinstance(value, dict) and "title" in value:
                return "".join(rt["text"]["content"] for rt in value["title"])
        return ""


def _date_cond(stamp: str, op: str, value: Any) -> bool:
    a, b = _parse_time(stamp), _parse_time(value)
    if a is None or b is None:
        return False
    if isinstance(value, str) and len(value) == 10:  # a date without a time compares by day
        a = a.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "equals": a == b,
        "before": a < b,
        "after": a > b,
        "on_or_before": a <= b,
        "on_or_after": a >= b,
    }.get(op, False)
