"""Levqor connector for Notion: database triggers, pages and queries.

Actions: ``create_page`` (``POST /v1/pages``), ``query_database`` (``POST
/v1/databases/{id}/query``), ``update_page`` (``PATCH /v1/pages/{id}``). Polling triggers:
``new_database_item`` and ``updated_database_item`` (a database queried by ``created_time`` or
``last_edited_time``). Credentials: an internal integration secret, or a workspace connected
with OAuth2 (a public integration). Notion-Version 2022-06-28. See README.md for the fields.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, bearer, is_oauth
from levqor_kernel.triggers import Poll, TriggerItem

from .values import compound_depth, filter_problems, flatten_page, sorts_problems

__all__ = [
    "DEFAULT_BASE",
    "NOTION_VERSION",
    "MAX_BLOCKS",
    "MAX_TEXT",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
    "poll_trigger",
    "oauth_credentials",
    "content_blocks",
    "normalize_id",
    "flatten_page",
]

DEFAULT_BASE = "https://api.notion.com"
NOTION_VERSION = "2022-06-28"
SERVICE = "Notion"
#: Notion accepts at most 100 blocks in one request's ``children``.
MAX_BLOCKS = 100
#: Notion's limit for the content of one rich-text object.
MAX_TEXT = 2000
#: Notion's largest page_size.
PAGE_SIZE = 100
#: query_database returns at most this many items per step (10 requests).
MAX_QUERY_ITEMS = 1000
#: A poll follows ``has_more`` for at most this many pages (500 items); the rest come next poll.
MAX_POLL_PAGES = 5
#: Each poll looks this far back before the newest timestamp it saw: Notion rounds
#: created_time / last_edited_time down to the minute and its query index can lag behind an
#: edit, so the windows overlap and the host's id deduplication drops what was seen.
POLL_OVERLAP = timedelta(minutes=2)

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

TOKEN_CREDENTIALS: dict[str, Any] = {
    "title": "Integration secret",
    "type": "object",
    "required": ["token"],
    "additionalProperties": False,
    "properties": {
        "token": {
            "type": "string",
            "minLength": 8,
            "pattern": r"^\S+$",
            "title": "Integration secret",
            "description": "Internal integration secret (ntn_... or secret_...) from "
            "notion.so/my-integrations",
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


#: The OAuth2 variant: what "Connect" stores (levqor_kernel.oauth), plus the workspace and bot.
OAUTH_CREDENTIALS: dict[str, Any] = copy.deepcopy(OAUTH2_CREDENTIALS)
OAUTH_CREDENTIALS["title"] = "Connected workspace (OAuth2)"
OAUTH_CREDENTIALS["properties"].update(
    {
        "workspace_id": {"type": "string", "description": "The connected Notion workspace"},
        "workspace_name": {"type": "string"},
        "bot_id": {"type": "string", "description": "The integration's bot in that workspace"},
    }
)

CREDENTIALS_SCHEMA: dict[str, Any] = {"anyOf": [TOKEN_CREDENTIALS, OAUTH_CREDENTIALS]}

#: The operator's public integration (LEVQOR_OAUTH_NOTION_CLIENT_ID / _CLIENT_SECRET).
OAUTH2: dict[str, Any] = {
    "authorization_url": f"{DEFAULT_BASE}/v1/oauth/authorize",
    "token_url": f"{DEFAULT_BASE}/v1/oauth/token",
    "scopes": [],
    "pkce": False,
    "client_auth": "basic",
    "token_body": "json",
    "extra_params": {"owner": "user"},
    "account": "/workspace_name",
    "title": "Connect a Notion workspace",
}

_FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Notion filter object, passed through: a property filter "
    '({"property": "Status", "select": {"equals": "Done"}}), a timestamp filter or a compound '
    '{"and": [...]} / {"or": [...]} (nested at most two levels)',
}
_SORTS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": 20,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["direction"],
        "properties": {
            "property": {"type": "string", "minLength": 1},
            "timestamp": {"enum": ["created_time", "last_edited_time"]},
            "direction": {"enum": ["ascending", "descending"]},
        },
    },
    "description": 'Notion sort objects, earlier ones first: {"property": "Due", "direction": '
    '"ascending"} or {"timestamp": "created_time", "direction": "descending"}',
}
_DATABASE_ID = {
    **_ID_SCHEMA,
    "description": "The database's id or its Notion URL (share the database with your integration first)",
}

ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "created_time", "last_edited_time", "properties"],
    "properties": {
        "id": {"type": "string", "description": "The page's id"},
        "url": {"type": "string", "description": "The page's URL in Notion"},
        "created_time": {"type": "string", "description": "ISO 8601, rounded down to the minute"},
        "last_edited_time": {
            "type": "string",
            "description": "ISO 8601, rounded down to the minute",
        },
        "archived": {"type": "boolean"},
        "database_id": {"type": ["string", "null"]},
        "title": {"type": "string", "description": "The title property as plain text"},
        "properties": {
            "type": "object",
            "description": "Every property by name as a plain value: text for title and rich "
            "text, the option name for select and status, a list of names for multi-select and "
            "people, the start of a date, true/false for a checkbox, numbers, URLs, emails and "
            "phone numbers as they are",
        },
    },
}

QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["database_id"],
    "additionalProperties": False,
    "properties": {
        "database_id": _DATABASE_ID,
        "filter": _FILTER_SCHEMA,
        "sorts": _SORTS_SCHEMA,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_QUERY_ITEMS,
            "default": PAGE_SIZE,
            "description": f"At most this many items (default {PAGE_SIZE}, at most "
            f"{MAX_QUERY_ITEMS}); next_cursor continues where it stopped",
        },
        "start_cursor": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "A next_cursor from an earlier query, to read on",
        },
    },
}

QUERY_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["items", "count", "has_more", "next_cursor"],
    "properties": {
        "items": {
            "type": "array",
            "items": ITEM_SCHEMA,
            "description": "The pages, as plain values",
        },
        "count": {"type": "integer"},
        "has_more": {"type": "boolean", "description": "More items match than were returned"},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Give as start_cursor to read on",
        },
        "raw": {
            "type": "array",
            "items": {"type": "object"},
            "description": "The page objects as Notion sent them",
        },
    },
}

UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["page_id"],
    "additionalProperties": False,
    "properties": {
        "page_id": {
            **_ID_SCHEMA,
            "description": "The page's id or its Notion URL ({{ trigger.id }} after a Notion trigger)",
        },
        "properties": {
            "type": "object",
            "description": "Raw Notion property values to change, keyed by property name, e.g. "
            '{"Status": {"select": {"name": "Done"}}}; properties left out keep their values',
        },
        "archived": {
            "type": "boolean",
            "description": "true moves the page to the trash, false restores it",
        },
    },
}

UPDATE_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "last_edited_time", "archived"],
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "last_edited_time": {"type": "string"},
        "archived": {"type": "boolean"},
        "properties": {"type": "object", "description": "Every property by name as a plain value"},
    },
}

_TRIGGER_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["database_id"],
    "additionalProperties": False,
    "properties": {
        "database_id": _DATABASE_ID,
        "filter": {
            **_FILTER_SCHEMA,
            "description": "Only items that match this Notion filter (optional; and-ed with the "
            "trigger's own time filter, so it may nest and/or one level less than a query)",
        },
    },
}
NEW_ITEM_CONFIG: dict[str, Any] = copy.deepcopy(_TRIGGER_CONFIG)
UPDATED_ITEM_CONFIG: dict[str, Any] = copy.deepcopy(_TRIGGER_CONFIG)
UPDATED_ITEM_CONFIG["properties"]["include_new"] = {
    "type": "boolean",
    "default": True,
    "description": "Also fire for new items (their creation is their first edit); false fires "
    "only for items edited after the minute they were created in",
}

SAMPLE_ITEM: dict[str, Any] = {
    "id": "59833787-2cf9-4fdf-8782-e53db20768a5",
    "url": "https://www.notion.so/Tuscan-kale-598337872cf94fdf8782e53db20768a5",
    "created_time": "2026-03-01T19:05:00.000Z",
    "last_edited_time": "2026-03-01T19:05:00.000Z",
    "archived": False,
    "database_id": "d9824bdc-8445-4327-be8b-5b47500af6ce",
    "title": "Tuscan kale",
    "properties": {
        "Name": "Tuscan kale",
        "Status": "In stock",
        "Tags": ["Vegetable", "Leafy"],
        "Price": 2.5,
        "Last ordered": "2026-02-20",
        "Done": False,
        "Owner": ["Ada Lovelace"],
    },
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "notion",
            "title": "Notion",
            "description": "Start pipelines from new or updated items in a Notion database; "
            "create, query and update pages.",
            "icon": ICON,
            "categories": ["productivity", "notes"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://developers.notion.com/reference/intro",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "oauth2": OAUTH2,
            "triggers": {
                "new_database_item": {
                    "title": "New database item",
                    "description": "Fires once for each page added to a database (polling; "
                    "Notion has no webhook for this on API version 2022-06-28). The first poll "
                    "only notes what is there.",
                    "kind": "polling",
                    "config": NEW_ITEM_CONFIG,
                    "output": ITEM_SCHEMA,
                    "sample": SAMPLE_ITEM,
                    "example": {"database_id": "d9824bdc84454327be8b5b47500af6ce"},
                },
                "updated_database_item": {
                    "title": "New or updated database item",
                    "description": "Fires for each edit of a page in a database, new pages "
                    "included unless include_new is false. Notion stamps edits to the minute, so "
                    "several edits of one page within a minute fire once.",
                    "kind": "polling",
                    "config": UPDATED_ITEM_CONFIG,
                    "output": ITEM_SCHEMA,
                    "sample": SAMPLE_ITEM,
                    "example": {
                        "database_id": "d9824bdc84454327be8b5b47500af6ce",
                        "filter": {"property": "Status", "select": {"equals": "Done"}},
                    },
                },
            },
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
                },
                "query_database": {
                    "title": "Query a database",
                    "description": "Finds the pages of a database that match a Notion filter, "
                    "sorted as asked, as plain values (and the raw page objects).",
                    "payload": QUERY_SCHEMA,
                    "output": QUERY_OUTPUT,
                    "example": {
                        "database_id": "d9824bdc84454327be8b5b47500af6ce",
                        "filter": {
                            "property": "Status",
                            "select": {"equals": "{{ trigger.status }}"},
                        },
                        "sorts": [{"timestamp": "created_time", "direction": "descending"}],
                        "limit": 10,
                    },
                    "price": 1,
                    "minutes_saved": 2,
                    "idempotent": True,
                    "writes": False,
                },
                "update_page": {
                    "title": "Update a page",
                    "description": "Changes property values of a page (a database row) and/or "
                    "moves it to the trash or back.",
                    "payload": UPDATE_SCHEMA,
                    "output": UPDATE_OUTPUT,
                    "example": {
                        "page_id": "59833787-2cf9-4fdf-8782-e53db20768a5",
                        "properties": {"Status": {"select": {"name": "Done"}}},
                    },
                    "price": 1,
                    "minutes_saved": 2,
                    "idempotent": True,
                    "writes": True,
                },
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


def _query_problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if normalize_id(payload.get("database_id")) is None:
        out.append(
            "database_id: no Notion id found (give a 32-character id or the database's Notion URL)"
        )
    if "filter" in payload:
        out += filter_problems(payload["filter"])
    if "sorts" in payload:
        out += sorts_problems(payload["sorts"])
    return out


def _update_problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if normalize_id(payload.get("page_id")) is None:
        out.append("page_id: no Notion id found (give a 32-character id or the page's Notion URL)")
    props = payload.get("properties")
    if props is not None and not isinstance(props, Mapping):
        out.append("properties: must be an object")
    elif isinstance(props, Mapping):
        for name, value in props.items():
            if not isinstance(value, Mapping):
                out.append(
                    f"properties[{name!r}]: must be a Notion property value such as "
                    '{"select": {"name": "Done"}}'
                )
    if not props and "archived" not in payload:
        out.append("give properties to change, archived, or both")
    return out


def _trigger_filter(
    config: Mapping[str, Any], stamp: str, since: str | None
) -> dict[str, Any] | None:
    """The trigger's query filter: its time window and-ed with the user's filter."""
    window = None if since is None else {"timestamp": stamp, stamp: {"on_or_after": since}}
    user = config.get("filter")
    if not user:
        return window
    if window is None:
        return dict(user)
    if isinstance(user, Mapping) and isinstance(user.get("and"), list):
        return {"and": [window, *user["and"]]}
    return {"and": [window, user]}


def _trigger_problems(config: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if normalize_id(config.get("database_id")) is None:
        out.append(
            "database_id: no Notion id found (give a 32-character id or the database's Notion URL)"
        )
    if config.get("filter"):
        out += filter_problems(config["filter"])
        combined = _trigger_filter(config, "created_time", "2000-01-01T00:00:00.000Z")
        if not out and compound_depth(combined) > 2:
            out.append(
                "filter: the trigger and-s its own time filter with yours, so yours may nest "
                "and/or one level only"
            )
    return out


_PROBLEMS = {
    "create_page": _problems,
    "query_database": _query_problems,
    "update_page": _update_problems,
}


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "notion" or action not in _PROBLEMS:
        return None
    return _PROBLEMS[action](payload)


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
    """The bearer token: the integration secret, or the OAuth2 credential's access token."""
    if is_oauth(credentials):
        return bearer(credentials)
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
    secrets = [token] + [
        v for k, v in credentials.items() if k == "refresh_token" and isinstance(v, str) and v
    ]
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
        secrets=secrets,
        service=SERVICE,
        **kw,
    )
    if not 200 <= resp.status_code < 300:
        raise _error(resp, secrets)
    return resp


def _json_object(context: StepContext, resp: requests.Response, kind: str) -> dict[str, Any]:
    data = context.http.json(resp, service=SERVICE)
    if not isinstance(data, dict) or data.get("object") != kind:
        raise PermanentError(
            f"Notion answered HTTP {resp.status_code} without a {kind} object",
            code="malformed_response",
        )
    return data


def query(
    context: StepContext,
    credentials: Mapping[str, Any],
    database_id: str,
    body: Mapping[str, Any],
) -> dict[str, Any]:
    """One ``POST /v1/databases/{id}/query``; the list object, checked."""
    token = _token(credentials)
    resp = _call(
        context, "POST", f"/v1/databases/{database_id}/query", token, credentials, json=dict(body)
    )
    data = _json_object(context, resp, "list")
    results = data.get("results")
    if not isinstance(results, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) for p in results
    ):
        raise PermanentError(
            "Notion answered a query without a list of pages", code="malformed_response"
        )
    cursor = data.get("next_cursor")
    if data.get("has_more") is True and not isinstance(cursor, str):
        raise PermanentError(
            "Notion answered has_more without a next_cursor", code="malformed_response"
        )
    return data


def _create_page(
    payload: Mapping[str, Any], credentials: Any, context: StepContext
) -> dict[str, Any]:
    token = _token(credentials)
    body = build_body(payload)
    resp = _call(context, "POST", "/v1/pages", token, credentials or {}, json=body)
    data = _json_object(context, resp, "page")
    if not isinstance(data.get("id"), str):
        raise PermanentError("Notion answered a page without an id", code="malformed_response")
    out = {"id": data["id"], "url": str(data.get("url") or "")}
    if isinstance(data.get("created_time"), str):
        out["created_time"] = data["created_time"]
    return out


def _query_database(
    payload: Mapping[str, Any], credentials: Any, context: StepContext
) -> dict[str, Any]:
    problems = _query_problems(payload)
    if problems:
        raise PayloadError("invalid Notion query: " + "; ".join(problems), code="invalid_payload")
    _token(credentials)  # fail before any request when the credential is unusable
    db = normalize_id(payload["database_id"])
    limit = int(payload.get("limit") or PAGE_SIZE)
    body: dict[str, Any] = {}
    for key in ("filter", "sorts"):
        if key in payload:
            body[key] = payload[key]
    cursor = payload.get("start_cursor")
    raw: list[dict[str, Any]] = []
    has_more = False
    while len(raw) < limit:
        ask = dict(body, page_size=min(PAGE_SIZE, limit - len(raw)))
        if cursor:
            ask["start_cursor"] = cursor
        data = query(context, credentials, db, ask)  # type: ignore[arg-type]
        raw += data["results"][: limit - len(raw)]
        has_more = data.get("has_more") is True
        cursor = data.get("next_cursor") if has_more else None
        if not has_more:
            break
    return {
        "items": [flatten_page(p) for p in raw],
        "count": len(raw),
        "has_more": has_more,
        "next_cursor": cursor if has_more else None,
        "raw": raw,
    }


def _update_page(
    payload: Mapping[str, Any], credentials: Any, context: StepContext
) -> dict[str, Any]:
    problems = _update_problems(payload)
    if problems:
        raise PayloadError(
            "invalid Notion page update: " + "; ".join(problems), code="invalid_payload"
        )
    token = _token(credentials)
    page_id = normalize_id(payload["page_id"])
    body: dict[str, Any] = {}
    if payload.get("properties"):
        body["properties"] = dict(payload["properties"])
    if "archived" in payload:
        body["archived"] = bool(payload["archived"])
    resp = _call(context, "PATCH", f"/v1/pages/{page_id}", token, credentials or {}, json=body)
    data = _json_object(context, resp, "page")
    flat = flatten_page(data)
    return {
        "id": str(data.get("id") or page_id),
        "url": str(data.get("url") or ""),
        "last_edited_time": str(data.get("last_edited_time") or ""),
        "archived": flat["archived"],
        "properties": flat["properties"],
    }


_ACTIONS = {
    "create_page": _create_page,
    "query_database": _query_database,
    "update_page": _update_page,
}


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != "notion" or action not in _ACTIONS:
        raise PayloadError(f"notion has no action {action!r}", code="unknown_action")
    return _ACTIONS[action](payload, credentials, context)


# --------------------------------------------------------------------------- triggers

_STAMP = {"new_database_item": "created_time", "updated_database_item": "last_edited_time"}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _item(trigger: str, page: Mapping[str, Any]) -> TriggerItem:
    data = flatten_page(page)
    if trigger == "new_database_item":
        return TriggerItem(id=page["id"], data=data)
    # one item per page and edit minute: the same edit seen twice keeps its id
    return TriggerItem(id=f"{page['id']}@{page.get('last_edited_time') or ''}", data=data)


def _pages(
    context: StepContext,
    credentials: Mapping[str, Any],
    db: str,
    body: dict[str, Any],
    max_pages: int,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``max_pages`` pages of a query; the results and the cursor to read on (None: done)."""
    out: list[dict[str, Any]] = []
    for _ in range(max_pages):
        ask = dict(body)
        if cursor:
            ask["start_cursor"] = cursor
        data = query(context, credentials, db, ask)
        out += data["results"]
        if data.get("has_more") is not True:
            return out, None
        cursor = data["next_cursor"]
    return out, cursor


@hookimpl
def poll_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    state: dict[str, Any] | None,
    context: StepContext,
) -> Poll:
    """Query the database for pages created (or edited) since the newest timestamp seen.

    State: ``{"since": <newest created_time / last_edited_time seen, or None>}``, plus
    ``window`` and ``cursor`` while a burst larger than one poll is being read. The first poll
    (``state`` None) reads the newest page of items as a baseline. Later polls ask for items
    stamped on or after ``since`` minus :data:`POLL_OVERLAP`, oldest first, following
    ``has_more`` for at most :data:`MAX_POLL_PAGES` pages; when more remain, the next poll goes
    on with the same window from Notion's cursor (so a burst within one minute is read to its
    end instead of from its start again). Repeats are dropped by the host.
    """
    if connector != "notion" or trigger not in _STAMP:
        raise PayloadError(f"notion has no trigger {trigger!r}", code="unknown_trigger")
    problems = _trigger_problems(config)
    if problems:
        raise PayloadError("invalid Notion trigger: " + "; ".join(problems), code="invalid_config")
    creds: Mapping[str, Any] = credentials or {}
    _token(creds)
    stamp = _STAMP[trigger]
    db = normalize_id(config["database_id"])
    assert db is not None  # checked by _trigger_problems
    state = state if isinstance(state, Mapping) else None
    prev = _parse_time((state or {}).get("since"))
    window: str | None = None
    more: str | None = None
    if state is None:
        body: dict[str, Any] = {
            "sorts": [{"timestamp": stamp, "direction": "descending"}],
            "page_size": PAGE_SIZE,
        }
        flt = _trigger_filter(config, stamp, None)
        if flt:
            body["filter"] = flt
        pages, _ = _pages(context, creds, db, body, 1)
        pages.reverse()
    else:
        cursor = state.get("cursor") if isinstance(state.get("cursor"), str) else None
        if cursor and "window" in state and isinstance(state["window"], str | None):
            window = state["window"]  # go on reading the window a burst overflowed
        else:
            cursor = None
            window = None if prev is None else _iso(prev - POLL_OVERLAP)
        body = {"sorts": [{"timestamp": stamp, "direction": "ascending"}], "page_size": PAGE_SIZE}
        flt = _trigger_filter(config, stamp, window)
        if flt:
            body["filter"] = flt
        try:
            pages, more = _pages(context, creds, db, body, MAX_POLL_PAGES, cursor)
        except PayloadError:
            if cursor is None:
                raise
            # Notion no longer knows the cursor: read the window again from its start
            window = None if prev is None else _iso(prev - POLL_OVERLAP)
            body.pop("filter", None)
            flt = _trigger_filter(config, stamp, window)
            if flt:
                body["filter"] = flt
            pages, more = _pages(context, creds, db, body, MAX_POLL_PAGES)
    stamps = [t for t in (_parse_time(p.get(stamp)) for p in pages) if t is not None]
    newest = max([*stamps, *([prev] if prev else [])], default=None)
    if trigger == "updated_database_item" and config.get("include_new") is False:
        pages = [p for p in pages if p.get("created_time") != p.get("last_edited_time")]
    items = [_item(trigger, p) for p in pages if not p.get("archived") and not p.get("in_trash")]
    next_state: dict[str, Any] = {"since": _iso(newest) if newest else None}
    if more:
        next_state.update(window=window, cursor=more)
    return Poll(items=items, state=next_state)


@hookimpl
def oauth_credentials(
    connector: str, token: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Keep the workspace and bot from Notion's token response (a refresh answers them again)."""
    if connector != "notion":
        return None
    out: dict[str, Any] = {}
    for key in ("workspace_id", "workspace_name", "bot_id"):
        if isinstance(token.get(key), str) and token[key]:
            out[key] = token[key]
    name = out.get("workspace_name") or out.get("workspace_id")
    if name:
        out["account"] = name
    return out or None


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
