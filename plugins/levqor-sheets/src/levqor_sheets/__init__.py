"""Levqor connector ``sheets``: Google Sheets rows, as a service account or a connected Google account.

Two kinds of credential: a Google service-account key (the JSON key file's fields), for which an
access token is obtained with the signed-JWT grant (RFC 7523: an RS256 assertion signed with the
key's ``private_key``, posted to its ``token_uri``) and cached in this process until shortly
before it expires; or an OAuth2 credential from "Connect" (``auth: "oauth2"``), whose access
token the host refreshes: a 401 with it raises ``CredentialError(status=401)`` and the host
refreshes the token and calls once more.

Actions: ``append_rows`` (``spreadsheets.values.append``), ``lookup_rows`` (``values.get`` and a
match on one column), ``update_row`` (``values.update`` of one row). Trigger: ``new_row``
(polling ``values.get`` below the last row seen). See README.md.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from levqor_kernel import Poll, StepContext, TriggerItem, hookimpl
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import error_for_response, redact
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, bearer, is_oauth

__all__ = [
    "SHEETS_BASE",
    "DEFAULT_TOKEN_URI",
    "SCOPE",
    "OAUTH_SCOPES",
    "USERINFO_URL",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
    "poll_trigger",
    "oauth_credentials",
    "column_letters",
    "column_index",
    "row_record",
    "ServiceAccount",
    "service_account_from",
    "access_token",
    "clear_token_cache",
    "parse_spreadsheet_id",
    "rows_from",
]

SHEETS_BASE = "https://sheets.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/spreadsheets"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: lifetime of the signed assertion; Google accepts at most one hour
ASSERTION_LIFETIME = 3600
#: a cached token is dropped this long (at most) before Google says it expires
TOKEN_MARGIN = 60.0
#: Google's OAuth2 endpoints for "Connect" (web-server flow)
AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
TOKEN_URL = DEFAULT_TOKEN_URI
#: openid + email: the token response then carries an id_token naming the account's email
OAUTH_SCOPES = [SCOPE, "openid", "email"]
#: OpenID Connect userinfo, read when a token response has no id_token (override:
#: LEVQOR_GOOGLE_USERINFO_API_BASE, the URL of the endpoint itself)
USERINFO_URL = "https://openidconnect.googleapis.com/v1/userinfo"
MAX_ROWS = 10_000
#: rows one poll of new_row reads at most (the rest come on the next poll)
MAX_POLL_ROWS = 500
#: rows the first poll of new_row hands back as samples (seen, never run)
SAMPLE_ROWS = 3
#: the first poll reads the sheet in pages of this many rows (each answer stays far below the
#: HTTP helper's response cap), until a page is empty
BASELINE_PAGE = 5000
MAX_BASELINE_PAGES = 2000
#: matches lookup_rows returns at most
MAX_LOOKUP = 100
MAX_ROW_NUMBER = 10_000_000
MAX_COLUMNS = 1_000
MAX_CELLS = 200_000

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect x='4' y='2' width='16' height='20' rx='2' fill='%230f9d58'/%3E"
    "%3Cpath d='M7 8h10M7 12h10M7 16h10M12 8v9' stroke='%23fff' stroke-width='1.5'/%3E%3C/svg%3E"
)

_SCALAR = {
    "description": "A cell value: text, number, boolean, or null (left empty)",
    "type": ["string", "number", "boolean", "null"],
}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "range", "values"],
    "additionalProperties": False,
    "properties": {
        "spreadsheet_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "The spreadsheet id (the part after /spreadsheets/d/ in its URL), or the "
            "spreadsheet's URL. Share the spreadsheet with the service account's client_email",
        },
        "range": {
            "type": "string",
            "minLength": 1,
            "maxLength": 300,
            "pattern": r"^[^\r\n]*$",
            "description": "A1 notation of the table to append to, such as Sheet1!A1, Sheet1 or "
            "'Sales 2024'!A:D; rows go after the last row of the table found there",
        },
        "values": {
            "description": "The rows to append: an array of rows, each an array of cell values; "
            "a single row (an array of cell values) is accepted too",
            "anyOf": [
                {
                    "description": "several rows",
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ROWS,
                    "items": {
                        "type": "array",
                        "maxItems": MAX_COLUMNS,
                        "items": _SCALAR,
                        "description": "one row",
                    },
                },
                {
                    "description": "one row",
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_COLUMNS,
                    "items": _SCALAR,
                },
            ],
        },
        "value_input_option": {
            "type": "string",
            "enum": ["RAW", "USER_ENTERED"],
            "default": "USER_ENTERED",
            "description": "USER_ENTERED parses values as if typed into the sheet (numbers, dates, "
            "and formulas starting with =); RAW stores them as given. Use RAW for values that come "
            "from untrusted input so they cannot become formulas",
        },
        "insert_data_option": {
            "type": "string",
            "enum": ["OVERWRITE", "INSERT_ROWS"],
            "default": "INSERT_ROWS",
            "description": "INSERT_ROWS inserts new rows for the data; OVERWRITE writes over any cells "
            "below the table",
        },
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "updated_range", "updated_rows", "updated_cells"],
    "properties": {
        "spreadsheet_id": {"type": "string", "description": "The spreadsheet written to"},
        "updated_range": {
            "type": "string",
            "description": "A1 range the rows were written to, e.g. Sheet1!A5:C6",
        },
        "updated_rows": {"type": "integer", "description": "Rows written"},
        "updated_cells": {"type": "integer", "description": "Cells written"},
    },
}

SERVICE_ACCOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Google service account key",
    "description": "Paste the fields of the service account's JSON key file (the whole file is "
    "accepted). Share the spreadsheet with the client_email as an editor",
    "required": ["client_email", "private_key"],
    "additionalProperties": True,
    "properties": {
        "type": {
            "type": "string",
            "const": "service_account",
            "title": "Key type",
            "description": "Always service_account",
        },
        "client_email": {
            "type": "string",
            "minLength": 3,
            "title": "Client email",
            "description": "The service account's email, e.g. bot@project.iam.gserviceaccount.com",
        },
        "private_key": {
            "type": "string",
            "minLength": 100,
            "writeOnly": True,
            "title": "Private key",
            "description": "The PEM private key (-----BEGIN PRIVATE KEY-----...)",
        },
        "private_key_id": {
            "type": "string",
            "writeOnly": True,
            "title": "Private key id",
            "description": "The key's id, sent as the kid of the signed assertion",
        },
        "token_uri": {
            "type": "string",
            "title": "Token URI",
            "description": "Google's token endpoint; defaults to https://oauth2.googleapis.com/token",
        },
        "api_base": {
            "type": "string",
            "title": "API base URL",
            "description": "Only for a Sheets-compatible proxy; defaults to https://sheets.googleapis.com",
        },
    },
}


CREDENTIALS_SCHEMA: dict[str, Any] = {
    "title": "Google Sheets credential",
    "description": "A connected Google account (Connect), or a service account key",
    "anyOf": [
        {
            **OAUTH2_CREDENTIALS,
            "title": "Google account (Connect)",
            "description": "A Google account connected with Connect; Levqor refreshes its access "
            "token. It reaches the spreadsheets that account can open",
        },
        SERVICE_ACCOUNT_SCHEMA,
    ],
}

_SHEET = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": r"^[^\r\n]*$",
    "description": "The sheet (tab) name, as shown at the bottom of the spreadsheet, e.g. Orders",
}
_HEADER_ROW = {
    "type": "integer",
    "minimum": 0,
    "maximum": 1000,
    "default": 1,
    "description": "The row holding the column names (1 = the first row); data starts below it. "
    "0: no header row, columns are named by their letters (A, B, ...)",
}
_SPREADSHEET_ID = PAYLOAD_SCHEMA["properties"]["spreadsheet_id"]
_ROW_OBJECT = {
    "type": "object",
    "required": ["row_number"],
    "properties": {
        "row_number": {"type": "integer", "description": "The row's number in the sheet"}
    },
    "additionalProperties": {
        **_SCALAR,
        "description": "A cell, keyed by its column's name in the header row (or its letter)",
    },
}

NEW_ROW_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "sheet"],
    "additionalProperties": False,
    "properties": {
        "spreadsheet_id": _SPREADSHEET_ID,
        "sheet": _SHEET,
        "header_row": _HEADER_ROW,
        "value_render_option": {
            "type": "string",
            "enum": ["FORMATTED_VALUE", "UNFORMATTED_VALUE"],
            "default": "FORMATTED_VALUE",
            "description": "FORMATTED_VALUE: cells as the sheet shows them (text); "
            "UNFORMATTED_VALUE: numbers as numbers",
        },
    },
}

LOOKUP_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "sheet", "column", "value"],
    "additionalProperties": False,
    "properties": {
        "spreadsheet_id": _SPREADSHEET_ID,
        "sheet": _SHEET,
        "column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "The column to search: its name in the header row, or its letter (C)",
        },
        "value": {
            "type": ["string", "number", "boolean"],
            "description": "The value to look for (compared as the sheet shows it, exactly)",
        },
        "header_row": _HEADER_ROW,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LOOKUP,
            "default": 10,
            "description": f"Return at most this many matching rows (1-{MAX_LOOKUP}), first rows first",
        },
    },
}
LOOKUP_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["rows", "count", "truncated"],
    "properties": {
        "rows": {"type": "array", "items": _ROW_OBJECT, "description": "The matching rows"},
        "count": {"type": "integer", "description": "How many rows are returned"},
        "truncated": {"type": "boolean", "description": "More rows matched than limit"},
        "first": {
            **_ROW_OBJECT,
            "description": "The first matching row (absent when none matched)",
        },
    },
}

UPDATE_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "sheet", "row_number", "values"],
    "additionalProperties": False,
    "properties": {
        "spreadsheet_id": _SPREADSHEET_ID,
        "sheet": _SHEET,
        "row_number": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_ROW_NUMBER,
            "description": "The row to write (a trigger's or a lookup's row_number)",
        },
        "values": {
            "description": "The cells to write: an object {column name or letter: value} (other "
            "cells are left as they are), or an array of cells from column A",
            "anyOf": [
                {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_COLUMNS,
                    "additionalProperties": _SCALAR,
                    "description": "by column",
                },
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_COLUMNS,
                    "items": _SCALAR,
                    "description": "from column A",
                },
            ],
        },
        "header_row": _HEADER_ROW,
        "value_input_option": PAYLOAD_SCHEMA["properties"]["value_input_option"],
    },
}
UPDATE_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["spreadsheet_id", "updated_range", "updated_cells", "row_number"],
    "properties": {
        "spreadsheet_id": {"type": "string", "description": "The spreadsheet written to"},
        "updated_range": {"type": "string", "description": "A1 range written, e.g. Orders!B5:D5"},
        "updated_cells": {"type": "integer", "description": "Cells written"},
        "row_number": {"type": "integer", "description": "The row written"},
    },
}

OAUTH2: dict[str, Any] = {
    "authorization_url": AUTHORIZATION_URL,
    "token_url": TOKEN_URL,
    "scopes": OAUTH_SCOPES,
    "scope_separator": " ",
    "pkce": True,
    # offline + consent: Google issues a refresh token (again, on every Connect)
    "extra_params": {
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    },
    "client_auth": "body",
    "title": "Connect Google Sheets",
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "sheets",
            "title": "Google Sheets",
            "description": "Append, look up and update rows of a Google Sheets spreadsheet, and start "
            "pipelines from new rows; as a connected Google account or a service account.",
            "icon": ICON,
            "categories": ["spreadsheets", "productivity"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://developers.google.com/workspace/sheets/api/reference/rest/v4/spreadsheets.values",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "oauth2": OAUTH2,
            "triggers": {
                "new_row": {
                    "title": "New row",
                    "description": "Starts a run for each row added at the bottom of a sheet. Row "
                    "numbers identify rows: deleting rows of a watched sheet shifts them, and rows "
                    "added afterwards start runs only once the sheet grows past the last row seen.",
                    "kind": "polling",
                    "config": NEW_ROW_CONFIG,
                    "output": _ROW_OBJECT,
                    "sample": {
                        "row_number": 7,
                        "Order": "A-1001",
                        "Email": "ada@example.com",
                        "Total": "42.50",
                    },
                    "example": {
                        "spreadsheet_id": "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
                        "sheet": "Orders",
                    },
                }
            },
            "actions": {
                "append_rows": {
                    "title": "Append rows",
                    "description": "Appends one or more rows after the last row of a table in a "
                    "sheet (spreadsheets.values.append). Not idempotent: a retry after an "
                    "ambiguous failure can append twice.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": OUTPUT_SCHEMA,
                    "example": {
                        "spreadsheet_id": "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
                        "range": "Orders!A1",
                        "values": [
                            ["{{ trigger.order_id }}", "{{ trigger.email }}", "{{ trigger.total }}"]
                        ],
                        "value_input_option": "RAW",
                    },
                    "price": 1,
                    "minutes_saved": 2,
                    "idempotent": False,
                    "writes": True,
                },
                "lookup_rows": {
                    "title": "Look up rows",
                    "description": "Finds the rows whose cell in one column equals a value "
                    "(spreadsheets.values.get of the sheet; at most limit rows, first rows first).",
                    "payload": LOOKUP_PAYLOAD,
                    "output": LOOKUP_OUTPUT,
                    "example": {
                        "spreadsheet_id": "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
                        "sheet": "Orders",
                        "column": "Email",
                        "value": "{{ trigger.email }}",
                    },
                    "price": 1,
                    "minutes_saved": 1,
                    "idempotent": True,
                    "writes": False,
                },
                "update_row": {
                    "title": "Update a row",
                    "description": "Writes cells of one row, by column name or letter "
                    "(spreadsheets.values.update); cells not named are left as they are.",
                    "payload": UPDATE_PAYLOAD,
                    "output": UPDATE_OUTPUT,
                    "example": {
                        "spreadsheet_id": "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
                        "sheet": "Orders",
                        "row_number": 7,
                        "values": {"Status": "shipped"},
                        "value_input_option": "RAW",
                    },
                    "price": 1,
                    "minutes_saved": 1,
                    "idempotent": True,
                    "writes": True,
                },
            },
        }
    ]


# --------------------------------------------------------------------------- payload

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_URL_ID_RE = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")


def parse_spreadsheet_id(value: Any) -> str:
    """The spreadsheet id from an id or a docs.google.com URL (PayloadError otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise PayloadError("spreadsheet_id is required", code="invalid_payload")
    value = value.strip()
    if "/" in value:
        m = _URL_ID_RE.search(urlsplit(value).path if "://" in value else value)
        if not m:
            raise PayloadError(
                "spreadsheet_id: not a spreadsheet id or a .../spreadsheets/d/<id>/... URL",
                code="invalid_payload",
            )
        value = m.group(1)
    if not _ID_RE.match(value):
        raise PayloadError(
            "spreadsheet_id may contain only letters, digits, - and _", code="invalid_payload"
        )
    return value


def _is_scalar(v: Any) -> bool:
    if isinstance(v, float):
        return v == v and v not in (float("inf"), float("-inf"))
    return v is None or isinstance(v, (str, int, bool))


def rows_from(values: Any) -> list[list[Any]]:
    """Normalise ``values`` to a list of rows (a single row becomes one row)."""
    if not isinstance(values, list) or not values:
        raise PayloadError("values must be a non-empty array of rows", code="invalid_payload")
    if all(not isinstance(v, list) for v in values):
        rows = [values]
    elif all(isinstance(v, list) for v in values):
        rows = values
    else:
        raise PayloadError(
            "values must be either an array of rows or a single row, not a mix",
            code="invalid_payload",
        )
    if len(rows) > MAX_ROWS:
        raise PayloadError(f"at most {MAX_ROWS} rows per append", code="invalid_payload")
    cells = 0
    for i, row in enumerate(rows):
        if len(row) > MAX_COLUMNS:
            raise PayloadError(f"row {i}: at most {MAX_COLUMNS} cells", code="invalid_payload")
        for j, cell in enumerate(row):
            if not _is_scalar(cell):
                raise PayloadError(
                    f"row {i}, cell {j}: a cell must be text, a number, a boolean or null, "
                    f"not {type(cell).__name__}",
                    code="invalid_payload",
                )
        cells += len(row)
    if cells > MAX_CELLS:
        raise PayloadError(f"at most {MAX_CELLS} cells per append", code="invalid_payload")
    if cells == 0:
        raise PayloadError("values contain no cells", code="invalid_payload")
    return rows


def _problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for check in (
        lambda: parse_spreadsheet_id(payload.get("spreadsheet_id")),
        lambda: rows_from(payload.get("values")),
    ):
        try:
            check()
        except PayloadError as e:
            out.append(e.message)
    rng = payload.get("range")
    if not isinstance(rng, str) or not rng.strip() or "\n" in rng or "\r" in rng:
        out.append("range: an A1 range such as Sheet1!A1 is required")
    if payload.get("value_input_option", "USER_ENTERED") not in ("RAW", "USER_ENTERED"):
        out.append("value_input_option must be RAW or USER_ENTERED")
    if payload.get("insert_data_option", "INSERT_ROWS") not in ("OVERWRITE", "INSERT_ROWS"):
        out.append("insert_data_option must be OVERWRITE or INSERT_ROWS")
    return out


def _sheet_problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    try:
        parse_spreadsheet_id(payload.get("spreadsheet_id"))
    except PayloadError as e:
        out.append(e.message)
    try:
        sheet_name(payload.get("sheet"))
    except PayloadError as e:
        out.append(e.message)
    return out


def _update_problems(payload: Mapping[str, Any]) -> list[str]:
    out = _sheet_problems(payload)
    values = payload.get("values")
    cells = list(values.values()) if isinstance(values, Mapping) else values
    if not isinstance(cells, list) or not cells:
        out.append("values: give an object {column: value} or an array of cells")
    elif not all(_is_scalar(c) for c in cells):
        out.append("values: a cell must be text, a number, a boolean or null")
    if isinstance(values, Mapping) and any(not str(k).strip() for k in values):
        out.append("values: a column name must not be empty")
    row, header = payload.get("row_number"), payload.get("header_row", 1)
    if isinstance(row, int) and isinstance(header, int) and row == header and header > 0:
        out.append(f"row_number {row} is the header row; data rows start at {header + 1}")
    return out


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "sheets":
        return None
    if action == "append_rows":
        return _problems(payload)
    if action == "lookup_rows":
        return _sheet_problems(payload)
    if action == "update_row":
        return _update_problems(payload)
    return None


# --------------------------------------------------------------------------- credentials


class ServiceAccount:
    """A validated service-account key."""

    def __init__(
        self, client_email: str, private_key: Any, pem: str, key_id: str | None, token_uri: str
    ) -> None:
        self.client_email = client_email
        self.private_key = private_key
        self.pem = pem
        self.key_id = key_id
        self.token_uri = token_uri

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.pem, self.key_id) if s]

    def cache_key(self, scope: str) -> str:
        # The key material is part of the cache key: client emails are not secret, so a cache
        # keyed on the email alone would hand one tenant's token to anyone naming that account.
        h = hashlib.sha256()
        for part in (self.client_email, self.token_uri, scope, self.key_id or "", self.pem):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


def service_account_from(credentials: Any) -> ServiceAccount:
    """Check the credential's shape and load its private key (CredentialError, never a leak)."""
    if not isinstance(credentials, Mapping) or not credentials:
        raise CredentialError(
            "Google Sheets needs a service account key: client_email and private_key from the "
            "JSON key file"
        )
    kind = credentials.get("type")
    if kind is not None and kind != "service_account":
        raise CredentialError(
            f"the key's type is {str(kind)[:40]!r}; a service account key is required"
        )
    email = credentials.get("client_email")
    if (
        not isinstance(email, str)
        or "@" not in email
        or len(email) > 320
        or any(c.isspace() for c in email.strip())
    ):
        raise CredentialError("client_email is missing or is not an email address")
    pem = credentials.get("private_key")
    if not isinstance(pem, str) or "PRIVATE KEY" not in pem:
        raise CredentialError("private_key is missing or is not a PEM private key")
    pem = pem.strip().replace("\\n", "\n")  # keys pasted from an escaped JSON string
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialError(
            "private_key could not be read (expected an unencrypted PEM RSA key)"
        ) from None
    except Exception:  # noqa: BLE001 - e.g. UnsupportedAlgorithm; never show the key
        raise CredentialError("private_key could not be read") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError("private_key must be an RSA key (RS256)")
    kid = credentials.get("private_key_id")
    if kid is not None and (not isinstance(kid, str) or any(c.isspace() for c in kid)):
        raise CredentialError("private_key_id is malformed")
    token_uri = credentials.get("token_uri") or DEFAULT_TOKEN_URI
    if not isinstance(token_uri, str) or urlsplit(token_uri).scheme not in ("http", "https"):
        raise CredentialError("token_uri must be an http(s) URL")
    api_base = credentials.get("api_base")
    if api_base is not None and not isinstance(api_base, str):
        raise CredentialError("api_base must be a URL")
    return ServiceAccount(email.strip(), key, pem, kid or None, token_uri.strip())


# --------------------------------------------------------------------------- access tokens

#: cache key -> (access token, time.monotonic() after which it is not used)
_TOKENS: dict[str, tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached access token (tests; a key rotation)."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


def _drop_token(key: str, token: str) -> None:
    with _TOKENS_LOCK:
        if _TOKENS.get(key, ("",))[0] == token:
            del _TOKENS[key]


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _token_error(resp: requests.Response, secrets: list[str]) -> ConnectorError:
    """RFC 6749 section 5.2 errors from the token endpoint: ``{"error", "error_description"}``."""
    data = _json_or_none(resp)
    code = data.get("error") if isinstance(data, dict) else None
    if isinstance(code, str):
        desc = data.get("error_description")
        detail = code + (f": {desc}" if isinstance(desc, str) and desc else "")
    else:
        code, detail = None, None
    base = error_for_response(resp, detail=detail, secrets=secrets, service="Google token endpoint")
    status = resp.status_code
    if isinstance(base, RetryableError):
        return base
    if status in (400, 401, 403):
        hint = ""
        if code == "invalid_grant":
            hint = (
                " (check that the key is current and not deleted, and that this machine's clock "
                "is right)"
            )
        return CredentialError(
            base.message + hint, status=status, code=code or base.code or "token_refused"
        )
    return base


def _fetch_token(sa: ServiceAccount, context: StepContext, scope: str) -> tuple[str, float]:
    now = int(time.time())
    claims = {
        "iss": sa.client_email,
        "scope": scope,
        "aud": sa.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    headers = {"kid": sa.key_id} if sa.key_id else None
    try:
        assertion = jwt.encode(claims, sa.private_key, algorithm="RS256", headers=headers)
    except Exception:  # noqa: BLE001 - never show key material
        raise CredentialError("could not sign the token request with private_key") from None
    secrets = [*sa.secrets, assertion]
    started = time.monotonic()
    resp = context.http.request(
        "POST",
        sa.token_uri,
        guard=True,  # user supplied (it comes from the key file)
        expect=range(100, 600),
        data={"grant_type": JWT_GRANT, "assertion": assertion},
        headers={"Accept": "application/json"},
        secrets=secrets,
        service="Google token endpoint",
    )
    if not 200 <= resp.status_code < 300:
        raise _token_error(resp, secrets)
    data = _json_or_none(resp)
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise PermanentError(
            f"Google token endpoint answered HTTP {resp.status_code} without an access_token",
            code="malformed_response",
        )
    token_type = data.get("token_type")
    if isinstance(token_type, str) and token_type.lower() != "bearer":
        raise PermanentError(
            f"Google token endpoint issued a {token_type[:20]!r} token, expected Bearer",
            code="malformed_response",
        )
    expires_in = data.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        valid_until = started  # no lifetime given: use it for this step only
    else:
        valid_until = started + float(expires_in) - min(TOKEN_MARGIN, float(expires_in) / 2)
    return token, valid_until


def access_token(
    sa: ServiceAccount, context: StepContext, *, scope: str = SCOPE, fresh: bool = False
) -> tuple[str, bool]:
    """An access token for ``sa`` and whether it came from the cache."""
    key = sa.cache_key(scope)
    if not fresh:
        with _TOKENS_LOCK:
            hit = _TOKENS.get(key)
        if hit is not None and time.monotonic() < hit[1]:
            return hit[0], True
    token, valid_until = _fetch_token(sa, context, scope)
    with _TOKENS_LOCK:
        if valid_until > time.monotonic():
            _TOKENS[key] = (token, valid_until)
        else:
            _TOKENS.pop(key, None)
    return token, False


# --------------------------------------------------------------------------- A1 notation

_LETTERS_RE = re.compile(r"^[A-Za-z]{1,3}$")


def column_letters(index: int) -> str:
    """The letters of a 0-based column index (0 -> A, 26 -> AA)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def column_index(letters: str) -> int:
    """The 0-based index of column letters (A -> 0); PayloadError when they are not letters."""
    if not isinstance(letters, str) or not _LETTERS_RE.match(letters.strip()):
        raise PayloadError(f"{letters!r} is not a column letter", code="invalid_payload")
    n = 0
    for ch in letters.strip().upper():
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def sheet_name(value: Any) -> str:
    """A sheet (tab) name, checked (PayloadError otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise PayloadError("sheet: the sheet (tab) name is required", code="invalid_payload")
    if "\n" in value or "\r" in value or len(value) > 100:
        raise PayloadError(
            "sheet: a one-line name of at most 100 characters", code="invalid_payload"
        )
    return value.strip()


def _a1(sheet: str, cells: str = "") -> str:
    """``'Sheet name'!cells``: the sheet always quoted, so names like ``A1`` or ``Q&A`` stay names."""
    quoted = "'" + sheet.replace("'", "''") + "'"
    return f"{quoted}!{cells}" if cells else quoted


def row_record(headers: list[Any], row: list[Any], row_number: int) -> dict[str, Any]:
    """One row as ``{"row_number": n, <column name>: value, ...}``.

    A column is named by its header cell; a column with an empty header (or no header row) by
    its letter; a name used twice gets its letter added (``"Total (F)"``)."""
    out: dict[str, Any] = {"row_number": row_number}
    for j, cell in enumerate(row):
        letter = column_letters(j)
        name = headers[j] if j < len(headers) else None
        key = str(name).strip() if name not in (None, "") and str(name).strip() else letter
        if key in out:
            key = f"{key} ({letter})"
        out[key] = cell
    return out


# --------------------------------------------------------------------------- Sheets API


class _Auth:
    """How requests to Google are authorised for one call of the connector.

    Service account: a cached token; a 401 on a cached token is retried once with a fresh one.
    OAuth2 ("Connect"): the stored access token; a 401 raises ``CredentialError(status=401)``, on
    which the host refreshes the token and calls the hook once more."""

    def __init__(self, credentials: Any, context: StepContext) -> None:
        self.context = context
        self.sa: ServiceAccount | None = None
        if is_oauth(credentials):
            self.token = bearer(credentials)
            self.cached = False
            refresh = credentials.get("refresh_token")
            self.secrets = [
                self.token,
                *([refresh] if isinstance(refresh, str) and refresh else []),
            ]
            account = credentials.get("account")
            self.who = (
                f"the connected account {account}"
                if isinstance(account, str) and account
                else "the connected Google account"
            )
        else:
            self.sa = service_account_from(credentials)
            self.token, self.cached = "", False  # fetched by the first request
            self.secrets = list(self.sa.secrets)
            self.who = self.sa.client_email

    def request(self, method: str, url: str, *, guard: bool, **kwargs: Any) -> requests.Response:
        if self.sa is not None and not self.token:
            self.token, self.cached = access_token(self.sa, self.context)
            self.secrets.append(self.token)
        for _attempt in range(2):
            resp = self.context.http.request(
                method,
                url,
                guard=guard,
                expect=range(100, 600),
                headers={"Authorization": f"Bearer {self.token}"},
                secrets=self.secrets,
                service="Google Sheets",
                **kwargs,
            )
            if resp.status_code == 401 and self.sa is not None:
                _drop_token(self.sa.cache_key(SCOPE), self.token)
                if self.cached:  # revoked or expired early: one more try with a new token is safe
                    self.token, self.cached = access_token(self.sa, self.context, fresh=True)
                    self.secrets.append(self.token)
                    continue
            break
        return resp

    def redact(self, e: ConnectorError) -> ConnectorError:
        e.message = redact(e.message, self.secrets)
        e.args = (e.message,)
        return e


_CANONICAL_PAYLOAD = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"}


def _sheets_error(resp: requests.Response, auth: _Auth, spreadsheet_id: str) -> ConnectorError:
    """Google's ``{"error": {"code", "message", "status"}}`` bodies."""
    data = _json_or_none(resp)
    err = data.get("error") if isinstance(data, dict) else None
    gstatus: str | None = None
    if isinstance(err, dict):
        gstatus = err.get("status") if isinstance(err.get("status"), str) else None
        msg = err.get("message") if isinstance(err.get("message"), str) else ""
        detail = " ".join(x for x in (gstatus and f"{gstatus}:", msg) if x)
    else:
        detail = None
    status = resp.status_code
    if status == 403 and gstatus == "PERMISSION_DENIED":
        detail = (detail or "") + (
            f" (share the spreadsheet with {auth.who} as an editor, and enable the "
            "Sheets API for the project)"
        )
    elif status == 404:
        detail = (detail or "") + f" (spreadsheet {spreadsheet_id} not found)"
    base = error_for_response(resp, detail=detail, secrets=auth.secrets, service="Google Sheets")
    if gstatus == "RESOURCE_EXHAUSTED" and not isinstance(base, RetryableError):
        # per-minute quotas refill every minute (https://developers.google.com/sheets/api/limits)
        return RetryableError(
            base.message, status=status, retry_after=base.retry_after, code="rate_limited"
        )
    if status == 400 and (gstatus in _CANONICAL_PAYLOAD or gstatus is None) and err is not None:
        return PayloadError(base.message, status=status, code=(gstatus or "bad_request").lower())
    if status == 404:
        return PermanentError(base.message, status=status, code="not_found")
    return base


def _values_url(
    context: StepContext, credentials: Any, spreadsheet_id: str, rng: str
) -> tuple[str, bool]:
    base, guarded = context.api_base("sheets", SHEETS_BASE, credentials)
    return f"{base}/v4/spreadsheets/{spreadsheet_id}/values/{quote(rng, safe='')}", guarded


def _get_values(
    auth: _Auth,
    credentials: Any,
    spreadsheet_id: str,
    rng: str,
    render: str = "FORMATTED_VALUE",
) -> list[list[Any]]:
    """``values.get`` of ``rng`` by rows: the rows from the range's first row on (an empty row
    in between is ``[]``; Google leaves out trailing empty rows and columns)."""
    url, guarded = _values_url(auth.context, credentials, spreadsheet_id, rng)
    resp = auth.request(
        "GET", url, guard=guarded, params={"majorDimension": "ROWS", "valueRenderOption": render}
    )
    if not 200 <= resp.status_code < 300:
        raise _sheets_error(resp, auth, spreadsheet_id)
    data = _json_or_none(resp)
    if not isinstance(data, dict):
        raise PermanentError(
            f"Google Sheets answered HTTP {resp.status_code} without a ValueRange",
            code="malformed_response",
        )
    values = data.get("values", [])
    if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
        raise PermanentError(
            "Google Sheets answered with malformed values", code="malformed_response"
        )
    return values


def _batch_get(
    auth: _Auth, credentials: Any, spreadsheet_id: str, ranges: list[str]
) -> list[list[Any]]:
    """The first row of each range, with ``values:batchGet`` (one request)."""
    base, guarded = auth.context.api_base("sheets", SHEETS_BASE, credentials)
    params = [("majorDimension", "ROWS"), *(("ranges", r) for r in ranges)]
    resp = auth.request(
        "GET",
        f"{base}/v4/spreadsheets/{spreadsheet_id}/values:batchGet",
        guard=guarded,
        params=params,
    )
    if not 200 <= resp.status_code < 300:
        raise _sheets_error(resp, auth, spreadsheet_id)
    data = _json_or_none(resp)
    found = data.get("valueRanges") if isinstance(data, dict) else None
    if not isinstance(found, list) or len(found) != len(ranges):
        raise PermanentError(
            f"Google Sheets answered HTTP {resp.status_code} without one ValueRange per range",
            code="malformed_response",
        )
    out = []
    for vr in found:
        values = vr.get("values") if isinstance(vr, dict) else None
        row = values[0] if isinstance(values, list) and values else []
        if not isinstance(row, list):
            raise PermanentError(
                "Google Sheets answered with malformed values", code="malformed_response"
            )
        out.append(row)
    return out


def _append(payload: Mapping[str, Any], auth: _Auth, credentials: Any) -> dict[str, Any]:
    spreadsheet_id = parse_spreadsheet_id(payload.get("spreadsheet_id"))
    rows = rows_from(payload.get("values"))
    rng = payload.get("range")
    if not isinstance(rng, str) or not rng.strip() or "\n" in rng or "\r" in rng:
        raise PayloadError(
            "range: an A1 range such as Sheet1!A1 is required", code="invalid_payload"
        )
    rng = rng.strip()
    vio = payload.get("value_input_option") or "USER_ENTERED"
    ido = payload.get("insert_data_option") or "INSERT_ROWS"
    if vio not in ("RAW", "USER_ENTERED") or ido not in ("OVERWRITE", "INSERT_ROWS"):
        raise PayloadError(
            "value_input_option must be RAW or USER_ENTERED and insert_data_option OVERWRITE "
            "or INSERT_ROWS",
            code="invalid_payload",
        )
    url, guarded = _values_url(auth.context, credentials, spreadsheet_id, rng)
    body = {"range": rng, "majorDimension": "ROWS", "values": rows}
    params = {"valueInputOption": vio, "insertDataOption": ido}
    resp = auth.request("POST", url + ":append", guard=guarded, params=params, json=body)
    if not 200 <= resp.status_code < 300:
        raise _sheets_error(resp, auth, spreadsheet_id)
    data = _json_or_none(resp)
    updates = data.get("updates") if isinstance(data, dict) else None
    if not isinstance(updates, dict) or not isinstance(updates.get("updatedRange"), str):
        raise PermanentError(
            f"Google Sheets answered HTTP {resp.status_code} without the appended range",
            code="malformed_response",
        )
    return {
        "spreadsheet_id": str(data.get("spreadsheetId") or spreadsheet_id),
        "updated_range": updates["updatedRange"],
        "updated_rows": _count(updates, "updatedRows"),
        "updated_cells": _count(updates, "updatedCells"),
    }


def _count(updates: Mapping[str, Any], name: str) -> int:
    v = updates.get(name, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PermanentError(
            f"Google Sheets answered with a malformed {name}", code="malformed_response"
        )
    return v


def _header_row(payload: Mapping[str, Any]) -> int:
    h = payload.get("header_row", 1)
    if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= 1000:
        raise PayloadError("header_row must be a row number from 0 to 1000", code="invalid_payload")
    return h


def _column(name: str, headers: list[Any]) -> int:
    """The index of a column named in a payload: a header name (exact, then ignoring case and
    surrounding spaces), else column letters."""
    wanted = name.strip()
    texts = [str(h).strip() if h is not None else "" for h in headers]
    if wanted in texts:
        return texts.index(wanted)
    lowered = [t.lower() for t in texts]
    if wanted.lower() in lowered:
        return lowered.index(wanted.lower())
    if _LETTERS_RE.match(wanted):
        return column_index(wanted)
    known = ", ".join(t for t in texts if t)[:300] or "none"
    raise PayloadError(
        f"column {wanted[:100]!r} is neither a name in the header row (names: {known}) nor a "
        "column letter",
        code="unknown_column",
    )


def _same(cell: Any, value: Any) -> bool:
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()

    return cell is not None and text(cell) == text(value)


def _lookup(payload: Mapping[str, Any], auth: _Auth, credentials: Any) -> dict[str, Any]:
    spreadsheet_id = parse_spreadsheet_id(payload.get("spreadsheet_id"))
    sheet = sheet_name(payload.get("sheet"))
    header = _header_row(payload)
    column = payload.get("column")
    if not isinstance(column, str) or not column.strip():
        raise PayloadError("column is required", code="invalid_payload")
    value = payload.get("value")
    if not _is_scalar(value) or value is None:
        raise PayloadError("value must be text, a number or a boolean", code="invalid_payload")
    limit = payload.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LOOKUP:
        raise PayloadError(f"limit must be 1-{MAX_LOOKUP}", code="invalid_payload")
    headers: list[Any] = []
    if header:
        got = _get_values(auth, credentials, spreadsheet_id, _a1(sheet, f"{header}:{header}"))
        headers = got[0] if got else []
    letter = column_letters(_column(column, headers))
    # the one column, below the header: a small answer however wide or long the sheet
    cells = _get_values(
        auth, credentials, spreadsheet_id, _a1(sheet, f"{letter}{header + 1}:{letter}")
    )
    matches = [header + 1 + i for i, c in enumerate(cells) if c and _same(c[0], value)]
    truncated = len(matches) > limit
    matches = matches[:limit]
    found: list[dict[str, Any]] = []
    if matches:
        ranges = [_a1(sheet, f"{n}:{n}") for n in matches]
        for n, row in zip(
            matches, _batch_get(auth, credentials, spreadsheet_id, ranges), strict=True
        ):
            found.append(row_record(headers, row, n))
    out: dict[str, Any] = {"rows": found, "count": len(found), "truncated": truncated}
    if found:
        out["first"] = found[0]
    return out


def _update(payload: Mapping[str, Any], auth: _Auth, credentials: Any) -> dict[str, Any]:
    spreadsheet_id = parse_spreadsheet_id(payload.get("spreadsheet_id"))
    sheet = sheet_name(payload.get("sheet"))
    header = _header_row(payload)
    problems = _update_problems(payload)
    if problems:
        raise PayloadError("; ".join(problems), code="invalid_payload")
    row_number = payload.get("row_number")
    if (
        isinstance(row_number, bool)
        or not isinstance(row_number, int)
        or not 1 <= row_number <= MAX_ROW_NUMBER
    ):
        raise PayloadError(f"row_number must be 1-{MAX_ROW_NUMBER}", code="invalid_payload")
    vio = payload.get("value_input_option") or "USER_ENTERED"
    if vio not in ("RAW", "USER_ENTERED"):
        raise PayloadError("value_input_option must be RAW or USER_ENTERED", code="invalid_payload")
    values = payload["values"]
    if isinstance(values, Mapping):
        headers: list[Any] = []
        if header:
            got = _get_values(auth, credentials, spreadsheet_id, _a1(sheet, f"{header}:{header}"))
            headers = got[0] if got else []
        cells: dict[int, Any] = {}
        for name, v in values.items():
            cells[_column(str(name), headers)] = v
        first, last = min(cells), max(cells)
        # a null cell in a ValueRange is skipped by values.update: the cells in between keep their values
        row = [cells.get(j) for j in range(first, last + 1)]
    else:
        first, row = 0, list(values)
    rng = _a1(
        sheet,
        f"{column_letters(first)}{row_number}:{column_letters(first + len(row) - 1)}{row_number}",
    )
    url, guarded = _values_url(auth.context, credentials, spreadsheet_id, rng)
    resp = auth.request(
        "PUT",
        url,
        guard=guarded,
        params={"valueInputOption": vio},
        json={"range": rng, "majorDimension": "ROWS", "values": [row]},
    )
    if not 200 <= resp.status_code < 300:
        raise _sheets_error(resp, auth, spreadsheet_id)
    data = _json_or_none(resp)
    if not isinstance(data, dict) or not isinstance(data.get("updatedRange"), str):
        raise PermanentError(
            f"Google Sheets answered HTTP {resp.status_code} without the updated range",
            code="malformed_response",
        )
    return {
        "spreadsheet_id": str(data.get("spreadsheetId") or spreadsheet_id),
        "updated_range": data["updatedRange"],
        "updated_cells": _count(data, "updatedCells"),
        "row_number": row_number,
    }


# --------------------------------------------------------------------------- trigger


def _baseline(
    auth: _Auth, credentials: Any, spreadsheet_id: str, sheet: str, header: int, render: str
) -> Poll:
    """The first poll: the sheet's last row, read in pages of BASELINE_PAGE rows until a page is
    empty (a page may end in empty rows with more below), and its last rows as samples."""
    headers: list[Any] = []
    count, tail_start, tail = 0, 1, []
    for page in range(MAX_BASELINE_PAGES):
        first = page * BASELINE_PAGE + 1
        rows = _get_values(
            auth,
            credentials,
            spreadsheet_id,
            _a1(sheet, f"{first}:{first + BASELINE_PAGE - 1}"),
            render,
        )
        if page == 0 and header and len(rows) >= header:
            headers = rows[header - 1]
        if not rows:
            break
        count, tail_start, tail = first - 1 + len(rows), first, rows
    items = [
        TriggerItem(id=str(n), data=row_record(headers, tail[n - tail_start], n))
        for n in range(max(header + 1, count - SAMPLE_ROWS + 1), count + 1)
        if n >= tail_start and tail[n - tail_start]
    ]
    return Poll(items=items, state={"row_count": max(count, header)})


def _poll_new_rows(
    config: Mapping[str, Any],
    credentials: Any,
    state: Mapping[str, Any] | None,
    context: StepContext,
) -> Poll:
    """New rows below the last row seen (``state["row_count"]``).

    The first poll reads the sheet once, keeps its row count as the baseline and hands back its
    last few rows (seen, never run: samples for "test trigger"). Later polls read at most
    MAX_POLL_ROWS rows below the baseline (one request when nothing is new, two when rows are:
    the header row is read again so renamed columns show)."""
    spreadsheet_id = parse_spreadsheet_id(config.get("spreadsheet_id"))
    sheet = sheet_name(config.get("sheet"))
    header = _header_row(config)
    render = config.get("value_render_option") or "FORMATTED_VALUE"
    if render not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE"):
        raise PayloadError("value_render_option must be FORMATTED_VALUE or UNFORMATTED_VALUE")
    auth = _Auth(credentials, context)
    try:
        seen = (state or {}).get("row_count")
        if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
            return _baseline(auth, credentials, spreadsheet_id, sheet, header, render)
        start = max(seen, header) + 1
        rows = _get_values(
            auth,
            credentials,
            spreadsheet_id,
            _a1(sheet, f"{start}:{start + MAX_POLL_ROWS - 1}"),
            render,
        )
        if not rows:
            return Poll(items=[], state={"row_count": seen})
        headers = []
        if header:
            got = _get_values(
                auth, credentials, spreadsheet_id, _a1(sheet, f"{header}:{header}"), render
            )
            headers = got[0] if got else []
        items = [
            TriggerItem(id=str(start + i), data=row_record(headers, row, start + i))
            for i, row in enumerate(rows)
            if row
        ]
        return Poll(items=items, state={"row_count": start - 1 + len(rows)})
    except ConnectorError as e:
        raise auth.redact(e) from None


# --------------------------------------------------------------------------- hooks


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    do = {"append_rows": _append, "lookup_rows": _lookup, "update_row": _update}.get(action)
    if connector != "sheets" or do is None:
        raise PayloadError(f"sheets has no action {action!r}", code="unknown_action")
    auth = _Auth(credentials, context)
    try:
        return do(payload, auth, credentials)
    except ConnectorError as e:  # belt and braces: no key material or token in any message
        raise auth.redact(e) from None


@hookimpl
def poll_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    state: dict[str, Any] | None,
    context: StepContext,
) -> Poll:
    if connector != "sheets" or trigger != "new_row":
        raise PayloadError(f"sheets has no trigger {trigger!r}", code="unknown_trigger")
    return _poll_new_rows(config or {}, credentials, state, context)


def _id_token_email(id_token: Any) -> str | None:
    """The ``email`` claim of the id_token in a token response.

    Not verified: it came straight from Google's token endpoint over TLS, which OpenID Connect
    Core 1.0 section 3.1.3.7 accepts in place of checking the signature."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    email = claims.get("email") if isinstance(claims, dict) else None
    return email if isinstance(email, str) and "@" in email else None


def _userinfo_email(access: str, context: StepContext) -> str:
    url = (context.env.get("LEVQOR_GOOGLE_USERINFO_API_BASE") or USERINFO_URL).rstrip("/")
    resp = context.http.request(
        "GET",
        url,
        expect=range(100, 600),
        headers={"Authorization": f"Bearer {access}"},
        secrets=[access],
        service="Google userinfo",
    )
    if not 200 <= resp.status_code < 300:
        raise error_for_response(resp, secrets=[access], service="Google userinfo")
    data = _json_or_none(resp)
    email = data.get("email") if isinstance(data, dict) else None
    if not isinstance(email, str) or "@" not in email:
        raise PermanentError("Google userinfo answered without an email", code="malformed_response")
    return email


@hookimpl
def oauth_credentials(
    connector: str, token: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """The account's email: from the token response's id_token (scope ``openid email``), else the
    one already stored (a refresh), else one read-only userinfo call."""
    if connector != "sheets":
        return None
    email = _id_token_email(token.get("id_token"))
    if email is None and isinstance(token.get("account"), str) and token["account"]:
        email = token["account"]
    if email is None:
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise CredentialError(
                "the token response has no access_token", code="malformed_response"
            )
        email = _userinfo_email(access, context)
    return {"account": email}


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Service account: obtains a fresh access token (proves the key and its token endpoint).
    Connected account: reads its email from userinfo (proves the access token). Writes nothing."""
    if connector != "sheets":
        return None
    if is_oauth(credentials):
        token = bearer(credentials)
        return {"ok": True, "account": _userinfo_email(token, context)}
    sa = service_account_from(credentials)
    access_token(sa, context, fresh=True)
    return {"ok": True, "account": sa.client_email}
