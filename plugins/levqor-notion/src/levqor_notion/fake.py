"""A local fake of the Notion API (the parts levqor-notion uses), over real HTTP on 127.0.0.1.

Wire contract followed (checked against Notion's documentation):

* https://developers.notion.com/reference/post-page : ``POST /v1/pages`` with ``parent``
  (``database_id`` or ``page_id``), ``properties`` (for a page parent only ``title``) and optional
  ``children`` blocks; answers the page object (``object: "page"``, ``id``, ``created_time``,
  ``url``, ``parent``, ``properties``).
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

Usage::

    with FakeNotion(token="ntn_test_123") as notion:
        db = notion.add_database(title_property="Task", properties=["Status"])
        ... point the connector at notion.url (LEVQOR_NOTION_API_BASE) ...
        assert notion.pages[0]["properties"]["Task"]["title"][0]["text"]["content"] == "Hi"
        notion.fail_next(429, retry_after=3)  # the next request is rate limited
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeNotion", "error_body", "DEFAULT_MESSAGES"]

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


def _norm(ident: Any) -> str:
    return str(ident).replace("-", "").lower()


class FakeNotion:
    """A fake Notion API. ``pages`` holds every page created (the request bodies plus ``id``)."""

    def __init__(
        self, token: str = "ntn_fake_token_123456", *, bot_name: str = "Levqor test"
    ) -> None:
        self.token = token
        self.bot_name = bot_name
        self.bot_id = str(uuid.uuid4())
        self.server = FakeServer()
        self.pages: list[dict[str, Any]] = []
        #: database id (no dashes) -> {"title_property": str, "properties": set[str]}
        self.databases: dict[str, dict[str, Any]] = {}
        #: page ids (no dashes) that the integration can see and create sub-pages under
        self.parent_pages: set[str] = set()
        # routes registered later win, so the catch-all goes first
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.server.route(method, "/.*", lambda req: _err("invalid_request_url"))
        self.server.route("POST", "/v1/pages", self._create_page)
        self.server.route("GET", "/v1/users/me", self._me)

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

    # ------------------------------------------------------------------ set-up
    def add_database(
        self,
        database_id: str | None = None,
        *,
        title_property: str = "Name",
        properties: list[str] = (),
    ) -> str:
        """Share a database with the integration; returns its id (dashed)."""
        ident = database_id or str(uuid.uuid4())
        self.databases[_norm(ident)] = {
            "title_property": title_property,
            "properties": {title_property, *properties},
        }
        return ident

    def add_page(self, page_id: str | None = None) -> str:
        """Share a page with the integration (sub-pages can be created under it); returns its id."""
        ident = page_id or str(uuid.uuid4())
        self.parent_pages.add(_norm(ident))
        return ident

    def reset(self) -> None:
        """Forget received requests, created pages and scripted answers (keeps shared databases/pages)."""
        self.server.reset()
        self.pages.clear()

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

    # ------------------------------------------------------------------ handlers
    def _auth(self, req: Recorded) -> Reply | None:
        if req.header("Authorization") != f"Bearer {self.token}":
            return _err("unauthorized")
        if not req.header("Notion-Version"):
            return _err("missing_version")
        return None

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
                    "workspace_name": "Fake workspace",
                },
            },
        )

    def _page_object(self, body: dict[str, Any]) -> dict[str, Any]:
        pid = str(uuid.uuid4())
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")
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

    def _create_page(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _err("invalid_json")
        if not isinstance(body, dict):
            return _err("validation_error", "body failed validation: body should be an object.")
        parent = body.get("parent")
        props = body.get("properties")
        if (
            not isinstance(parent, dict)
            or len([k for k in parent if k in ("database_id", "page_id")]) != 1
        ):
            return _err(
                "validation_error",
                "body failed validation: body.parent should be a database_id or page_id.",
            )
        if props is not None and not isinstance(props, dict):
            return _err(
                "validation_error", "body failed validation: body.properties should be an object."
            )
        props = props or {}
        for name, value in props.items():
            if not isinstance(value, dict):
                return _err(
                    "validation_error",
                    f"body failed validation: body.properties.{name} should be an object.",
                )
            if "title" in value and (
                bad := self._check_rich_text(value["title"], f"properties.{name}.title")
            ):
                return bad
        if "database_id" in parent:
            db = self.databases.get(_norm(parent["database_id"]))
            if db is None:
                return _err(
                    "object_not_found",
                    DEFAULT_MESSAGES["object_not_found"][1].replace(
                        "{id}", str(parent["database_id"])
                    ),
                )
            for name in props:
                if name not in db["properties"]:
                    return _err("validation_error", f"{name} is not a property that exists.")
        else:
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
            return _err(
                "validation_error", "body failed validation: body.children should be an array."
            )
        if len(children) > 100:
            return _err(
                "validation_error",
                f"body failed validation: body.children.length should be ≤ `100`, instead was `{len(children)}`.",
            )
        for i, block in enumerate(children):
            if (
                not isinstance(block, dict)
                or not isinstance(block.get("type"), str)
                or block["type"] not in block
            ):
                return _err(
                    "validation_error",
                    f"body failed validation: body.children[{i}] is not a valid block.",
                )
            inner = block[block["type"]]
            if isinstance(inner, dict) and "rich_text" in inner:
                if bad := self._check_rich_text(
                    inner["rich_text"], f"children[{i}].{block['type']}.rich_text"
                ):
                    return bad
        page = self._page_object(body)
        self.pages.append({**body, "id": page["id"]})
        return Reply(200, page)

    @staticmethod
    def _check_rich_text(items: Any, where: str) -> Reply | None:
        if not isinstance(items, list):
            return _err(
                "validation_error", f"body failed validation: body.{where} should be an array."
            )
        for j, rt in enumerate(items):
            content = rt.get("text", {}).get("content") if isinstance(rt, dict) else None
            if not isinstance(content, str):
                return _err(
                    "validation_error",
                    f"body failed validation: body.{where}[{j}].text.content should be a string.",
                )
            if len(content) > 2000:
                return _err(
                    "validation_error",
                    f"body failed validation: body.{where}[{j}].text.content.length should be ≤ `2000`, "
                    f"instead was `{len(content)}`.",
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
