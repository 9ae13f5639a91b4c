"""Levqor connector ``sheets``: append rows to a Google Sheets spreadsheet as a service account.

The credential is a Google service-account key (the JSON key file's fields). An access token
is obtained with the signed-JWT grant (RFC 7523: an RS256 assertion signed with the key's
``private_key``, posted to its ``token_uri``) and cached in this process until shortly before it
expires. Rows are written with ``spreadsheets.values.append``. See README.md.
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
from levqor_kernel import StepContext, hookimpl
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import error_for_response, redact

__all__ = [
    "SHEETS_BASE",
    "DEFAULT_TOKEN_URI",
    "SCOPE",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
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
MAX_ROWS = 10_000
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

CREDENTIALS_SCHEMA: dict[str, Any] = {
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


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "sheets",
            "title": "Google Sheets",
            "description": "Append rows to a Google Sheets spreadsheet as a service account.",
            "icon": ICON,
            "categories": ["spreadsheets", "productivity"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://developers.google.com/workspace/sheets/api/reference/rest/v4/spreadsheets.values/append",
            "kernel": ">=0.1,<1",
            "credentials": CREDENTIALS_SCHEMA,
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
                }
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


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "sheets" or action != "append_rows":
        return None
    return _problems(payload)


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


# --------------------------------------------------------------------------- Sheets API

_CANONICAL_PAYLOAD = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"}


def _sheets_error(
    resp: requests.Response, sa: ServiceAccount, spreadsheet_id: str, secrets: list[str]
) -> ConnectorError:
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
            f" (share the spreadsheet with {sa.client_email} as an editor, and enable the "
            "Sheets API for the service account's project)"
        )
    elif status == 404:
        detail = (detail or "") + f" (spreadsheet {spreadsheet_id} not found)"
    base = error_for_response(resp, detail=detail, secrets=secrets, service="Google Sheets")
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


def _append(
    payload: Mapping[str, Any],
    sa: ServiceAccount,
    credentials: Mapping[str, Any],
    context: StepContext,
) -> dict[str, Any]:
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
    base, guarded = context.api_base("sheets", SHEETS_BASE, credentials)
    url = f"{base}/v4/spreadsheets/{spreadsheet_id}/values/{quote(rng, safe='')}:append"
    body = {"range": rng, "majorDimension": "ROWS", "values": rows}
    params = {"valueInputOption": vio, "insertDataOption": ido}

    token, cached = access_token(sa, context)
    for _attempt in range(2):
        secrets = [*sa.secrets, token]
        resp = context.http.request(
            "POST",
            url,
            guard=guarded,
            expect=range(100, 600),
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            secrets=secrets,
            service="Google Sheets",
        )
        if resp.status_code == 401:
            _drop_token(sa.cache_key(SCOPE), token)
            if cached:  # revoked or expired early: one more try with a new token is safe
                token, cached = access_token(sa, context, fresh=True)
                continue
        break
    if not 200 <= resp.status_code < 300:
        raise _sheets_error(resp, sa, spreadsheet_id, secrets)
    data = _json_or_none(resp)
    updates = data.get("updates") if isinstance(data, dict) else None
    if not isinstance(updates, dict) or not isinstance(updates.get("updatedRange"), str):
        raise PermanentError(
            f"Google Sheets answered HTTP {resp.status_code} without the appended range",
            code="malformed_response",
        )

    def count(name: str) -> int:
        v = updates.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise PermanentError(
                f"Google Sheets answered with a malformed {name}", code="malformed_response"
            )
        return v

    return {
        "spreadsheet_id": str(data.get("spreadsheetId") or spreadsheet_id),
        "updated_range": updates["updatedRange"],
        "updated_rows": count("updatedRows"),
        "updated_cells": count("updatedCells"),
    }


# --------------------------------------------------------------------------- hooks


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != "sheets" or action != "append_rows":
        raise PayloadError(f"sheets has no action {action!r}", code="unknown_action")
    sa = service_account_from(credentials)
    try:
        return _append(payload, sa, credentials or {}, context)
    except ConnectorError as e:  # belt and braces: no key material in any message
        e.message = redact(e.message, sa.secrets)
        e.args = (e.message,)
        raise


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Obtains a fresh access token (proves the key and its token endpoint; writes nothing)."""
    if connector != "sheets":
        return None
    sa = service_account_from(credentials)
    access_token(sa, context, fresh=True)
    return {"ok": True, "account": sa.client_email}
