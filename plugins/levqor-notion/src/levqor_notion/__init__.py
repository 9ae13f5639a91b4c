"""Levqor connector for Notion: ``notion.create_page``.

Creates a page in a database (``parent.database_id``) or under a page (``parent.page_id``)
with ``POST /v1/pages`` (Notion-Version 2022-06-28). See README.md for the fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests
from levqor_kernel import StepContext, hookimpl
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import error_for_response

__all__ = [
    "DEFAULT_BASE",
    "NOTION_VERSION",
    "MAX_BLOCKS",
    "MAX_TEXT",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
    "content_blocks",
    "normalize_id",
]

DEFAULT_BASE = "https://api.notion.com"
NOTION_VERSION = "2022-06-28"
SERVICE = "Notion"
#: Notion accepts at most 100 blocks in one request's ``children``.
MAX_BLOCKS = 100
#: Notion's limit for the content of one rich-text object.
MAX_TEXT = 2000

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect x='3' y='3' width='18' height='18' rx='3' fill='%23fff' stroke='%23111' stroke-width='2'/%3E"
    "%3Cpath d='M8 17V7l8 10V7' fill='none' stroke='%23111' stroke-width='2'/%3E%3C/svg%3E"
)

_HEX32 = re.compile(r"([0-9a-fA-F]{32})(?![0-9a-fA-F])")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_ID_SCHEMA = {
    "type": "string",
    "minLength": 32,
    "maxLength": 2000,
}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["parent"],
    "additionalProperties": False,
    "properties": {
        "parent": {
            "type": "object",
            "description": 'Where the page goes: {"database_id": ...} for a database row, '
            'or {"page_id": ...} for a sub-page. An id (with or without dashes) or the page\'s Notion URL.',
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
            "properties": {
                "database_id": {
                    **_ID_SCHEMA,
                    "description": "The database's id or URL (share the database with your integration first)",
                },
                "page_id": {
                    **_ID_SCHEMA,
                    "description": "The parent page's id or URL (share the page with your integration first)",
                },
            },
        },
        "title": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT,
            "description": "The page title as plain text",
        },
        "title_property": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "default": "Name",
            "description": 'For a database parent: the name of the database\'s title property (default "Name")',
        },
        "properties": {
            "type": "object",
            "description": "Raw Notion property values keyed by property name, e.g. "
            '{"Status": {"select": {"name": "Done"}}}; for a page parent only "title" is allowed',
        },
        "children": {
            "type": "array",
            "maxItems": MAX_BLOCKS,
            "items": {"type": "object"},
            "description": "Page content as raw Notion block objects",
        },
        "content": {
            "type": "string",
            "maxLength": MAX_BLOCKS * MAX_TEXT,
            "description": "Page content as plain text: each paragraph (separated by a blank line) becomes "
            "a paragraph block, split every 2000 characters; appended after children",
        },
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url"],
    "properties": {
        "id": {"type": "string", "description": "The new page's id"},
        "url": {"type": "string", "description": "The new page's URL in Notion"},
        "created_time": {
            "type": "string",
            "description": "When Notion created the page (ISO 8601)",
        },
    },
}

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["token"],
    "additionalProperties": False,
    "properties": {
        "token": {
            "type": "string",
            "minLength": 8,
            "pattern": r"^\S+$",
            "title": "Integration secret",
            "description": "Internal integration secret (ntn_... or secret_...) or an OAuth access token, "
            "from notion.so/my-integrations",
            "writeOnly": True,
        },
        "api_base": {
            "type": "string",
            "format": "uri",
            "title": "API base URL",
            "description": "Only for a Notion-compatible proxy; defaults to https://api.notion.com",
        },
    },
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "notion",
            "title": "Notion",
            "description": "Create pages in Notion databases or under existing pages.",
            "icon": ICON,
            "categories": ["productivity", "notes"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://developers.notion.com/reference/post-page",
            "kernel": ">=0.1,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "actions": {
                "create_page": {
                    "title": "Create a page",
                    "description": "Creates a page in a database or under a page, with a title, optional "
                    "property values and optional content. Not idempotent: Notion has no idempotency key.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": OUTPUT_SCHEMA,
                    "example": {
                        "parent": {"database_id": "d9824bdc84454327be8b5b47500af6ce"},
                        "title": "Order {{ trigger.order_id }}",
                        "properties": {"Status": {"select": {"name": "New"}}},
                        "content": "Customer: {{ trigger.customer }}\n\nTotal: {{ trigger.total }}",
                    },
                    "price": 1,
                    "minutes_saved": 3,
                    "idempotent": False,
                    "writes": True,
                }
            },
        }
    ]


# --------------------------------------------------------------------------- payload helpers


def normalize_id(value: Any) -> str | None:
    """A Notion id from an id (dashed or not) or a Notion URL; None when there is none."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if _UUID.match(value):
        return value.lower()
    # the id is the last 32-hex run of a URL path (before any ?query / #fragment)
    path = value.split("?", 1)[0].split("#", 1)[0]
    found = _HEX32.findall(path)
    if not found:
        return None
    h = found[-1].lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _rich_text(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": {"content": text[i : i + MAX_TEXT]}}
        for i in range(0, len(text), MAX_TEXT)
    ] or [{"type": "text", "text": {"content": ""}}]


def content_blocks(content: str) -> list[dict[str, Any]]:
    """Paragraph blocks for plain text: one per paragraph, each chunk at most 2000 characters."""
    blocks: list[dict[str, Any]] = []
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    for para in re.split(r"\n\s*\n", text):
        para = para.strip("\n")
        if not para.strip():
            continue
        for i in range(0, len(para), MAX_TEXT):
            chunk = para[i : i + MAX_TEXT]
            blocks.append(
                {
                    "object": "block",
                    "type": "paragraph",
                    "paragraph": {"rich_text": [{"type": "text", "text": {"content": chunk}}]},
                }
            )
    return blocks


def _parent(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    parent = payload.get("parent")
    if not isinstance(parent, Mapping) or len(parent) != 1:
        return None
    kind, raw = next(iter(parent.items()))
    if kind not in ("database_id", "page_id"):
        return None
    ident = normalize_id(raw)
    return (kind, ident) if ident else None


def _problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    parent = payload.get("parent")
    p = _parent(payload)
    if p is None:
        if (
            isinstance(parent, Mapping)
            and len(parent) == 1
            and next(iter(parent)) in ("database_id", "page_id")
        ):
            out.append(
                "parent: no Notion id found (give a 32-character id or the page's Notion URL)"
            )
        else:
            out.append("parent: give exactly one of database_id or page_id")
    props = payload.get("properties")
    if props is not None and not isinstance(props, Mapping):
        out.append("properties: must be an object")
        props = None
    title = payload.get("title")
    if title is None and not props:
        out.append("give a title (or a properties object that contains the title)")
    if p is not None and p[0] == "page_id":
        if "title_property" in payload:
            out.append(
                "title_property: only used with a database parent (a sub-page's title is properties.title)"
            )
        extra = sorted(k for k in (props or {}) if k != "title")
        if extra:
            out.append(
                f"properties: a page under a page can only have a title, not {', '.join(extra)}"
            )
        if title is not None and props and "title" in props:
            out.append("give the title either as title or as properties.title, not both")
    elif p is not None and title is not None and props:
        tp = payload.get("title_property") or "Name"
        if tp in props:
            out.append(f"give the title either as title or as properties[{tp!r}], not both")
    children = payload.get("children") or []
    content = payload.get("content")
    n = len(children) if isinstance(children, list) else 0
    if isinstance(content, str):
        n += len(content_blocks(content))
    if n > MAX_BLOCKS:
        out.append(
            f"children and content make {n} blocks; Notion accepts at most {MAX_BLOCKS} per request"
        )
    return out


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "notion" or action != "create_page":
        return None
    return _problems(payload)


def build_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/pages`` for a create_page payload (PayloadError when invalid)."""
    problems = _problems(payload)
    if problems:
        raise PayloadError("invalid Notion page: " + "; ".join(problems), code="invalid_payload")
    kind, ident = _parent(payload)  # type: ignore[misc]
    properties: dict[str, Any] = dict(payload.get("properties") or {})
    title = payload.get("title")
    if title is not None:
        key = "title" if kind == "page_id" else (payload.get("title_property") or "Name")
        properties[key] = {"title": _rich_text(str(title))}
    body: dict[str, Any] = {"parent": {kind: ident}, "properties": properties}
    children = list(payload.get("children") or [])
    if isinstance(payload.get("content"), str):
        children += content_blocks(payload["content"])
    if children:
        body["children"] = children
    return body


# --------------------------------------------------------------------------- HTTP


def _token(credentials: Any) -> str:
    if not isinstance(credentials, Mapping):
        raise CredentialError(
            "Notion credentials are missing: an integration secret (token) is required"
        )
    token = credentials.get("token")
    if not isinstance(token, str) or not token.strip():
        raise CredentialError("Notion credentials need a token (the integration secret)")
    token = token.strip()
    if len(token) < 8 or any(c.isspace() for c in token):
        raise CredentialError(
            "the Notion token is malformed (expected an integration secret such as ntn_...)"
        )
    return token


def _error_body(resp: requests.Response) -> dict[str, Any] | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    if (
        isinstance(data, dict)
        and data.get("object") == "error"
        and isinstance(data.get("code"), str)
    ):
        return data
    return None


def _detail(resp: requests.Response) -> str:
    err = _error_body(resp)
    if err is None:
        return resp.text[:300]
    msg = f"{err['code']}: {err.get('message') or ''}".strip()
    if err.get("code") == "object_not_found":
        msg += " (is the page or database shared with your integration?)"
    elif err.get("code") == "restricted_resource":
        msg += " (the integration lacks the capability or access for this operation)"
    if isinstance(err.get("request_id"), str):
        msg += f" [request_id {err['request_id']}]"
    return msg


def _error(resp: requests.Response, secrets: list[str]) -> ConnectorError:
    """Map a non-2xx Notion answer to the right error class (documented codes first)."""
    base = error_for_response(resp, detail=_detail(resp), secrets=secrets, service=SERVICE)
    err = _error_body(resp)
    code = err.get("code") if err else None
    kw = {"status": base.status, "retry_after": base.retry_after}
    if code == "conflict_error":  # the transaction did not complete; Notion says to try again
        return RetryableError(base.message, code=code, **kw)
    if code in ("validation_error", "invalid_json") and resp.status_code == 400:
        return PayloadError(base.message, code=code, status=base.status)
    if code in (
        "service_unavailable",
        "database_connection_unavailable",
        "gateway_timeout",
        "internal_server_error",
    ):
        return RetryableError(base.message, code=code, **kw)
    if code and not isinstance(base, (RetryableError, CredentialError)):
        base.code = code
    return base


def _call(
    context: StepContext,
    method: str,
    path: str,
    token: str,
    credentials: Mapping[str, Any],
    **kw: Any,
) -> requests.Response:
    base, guarded = context.api_base("notion", DEFAULT_BASE, credentials)
    resp = context.http.request(
        method,
        f"{base}{path}",
        guard=guarded,
        expect=range(100, 600),
        headers={
            "Authorization": f"Bearer {token}",
            "Notion-Version": NOTION_VERSION,
            "Accept": "application/json",
        },
        secrets=[token],
        service=SERVICE,
        **kw,
    )
    if not 200 <= resp.status_code < 300:
        raise _error(resp, [token])
    return resp


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != "notion" or action != "create_page":
        raise PayloadError(f"notion has no action {action!r}", code="unknown_action")
    token = _token(credentials)
    body = build_body(payload)
    resp = _call(context, "POST", "/v1/pages", token, credentials or {}, json=body)
    data = context.http.json(resp, service=SERVICE)
    if (
        not isinstance(data, dict)
        or data.get("object") != "page"
        or not isinstance(data.get("id"), str)
    ):
        raise PermanentError(
            f"Notion answered HTTP {resp.status_code} without a page object",
            code="malformed_response",
        )
    out = {"id": data["id"], "url": str(data.get("url") or "")}
    if isinstance(data.get("created_time"), str):
        out["created_time"] = data["created_time"]
    return out


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    if connector != "notion":
        return None
    token = _token(credentials)
    resp = _call(context, "GET", "/v1/users/me", token, credentials or {})
    data = context.http.json(resp, service=SERVICE)
    if (
        not isinstance(data, dict)
        or data.get("object") != "user"
        or not isinstance(data.get("id"), str)
    ):
        raise PermanentError(
            "Notion answered /v1/users/me without a user object", code="malformed_response"
        )
    return {
        "ok": True,
        "account": str(data.get("name") or data["id"]),
        "bot_id": data["id"],
        "type": data.get("type"),
    }
