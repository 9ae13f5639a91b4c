"""A local fake of Google's OAuth endpoints and the Sheets API ``values`` methods, over real HTTP
on 127.0.0.1.

Wire contracts followed (checked against the providers' documentation):

* https://developers.google.com/identity/protocols/oauth2/service-account (mirrored at
  https://gist.github.com/fsans/6c88cb755837c22b265f31d9aa8fdc23): a JWT with header
  ``{"alg": "RS256", "typ": "JWT", "kid": <private_key_id>}`` and claims ``iss`` (the service
  account email), ``scope`` (space separated), ``aud`` (the token URI), ``iat`` and ``exp`` (at
  most one hour after ``iat``), signed with the key's private key, is POSTed form-encoded as
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`` to the token URI
  (``https://oauth2.googleapis.com/token``); the answer is
  ``{"access_token", "expires_in": 3599, "token_type": "Bearer"}``. Errors follow RFC 6749
  section 5.2: ``400 {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}``
  and similar (RFC 7523 section 3.1, https://dret.github.io/webconcepts/concepts/oauth-uri/urn:ietf:params:oauth:grant-type:jwt-bearer).
* https://developers.google.com/identity/protocols/oauth2/web-server (as summarised at
  https://developers.google.com/accounts/docs/OAuth and in google-auth-library's
  GenerateAuthUrlOpts, https://cloud.google.com/nodejs/docs/reference/google-auth-library/7.4.1/google-auth-library/generateauthurlopts):
  the user is sent to ``https://accounts.google.com/o/oauth2/v2/auth`` with ``client_id``,
  ``redirect_uri``, ``response_type=code``, ``scope`` (space separated), ``state``,
  ``access_type=offline`` (only then is a refresh token issued, on the first exchange),
  ``prompt=consent`` and PKCE ``code_challenge`` / ``code_challenge_method`` (``S256`` or
  ``plain``); Google redirects to ``redirect_uri?code=...&state=...&scope=...``. The code is
  exchanged at ``POST https://oauth2.googleapis.com/token`` (form: ``code``, ``client_id``,
  ``client_secret``, ``redirect_uri``, ``grant_type=authorization_code``, ``code_verifier``) for
  ``{"access_token", "expires_in", "refresh_token", "scope", "token_type": "Bearer"}`` (plus
  ``id_token`` when ``openid`` was asked for); a refresh (``grant_type=refresh_token``) answers
  the same without ``refresh_token``. A revoked or expired refresh token, a used code or a wrong
  ``code_verifier`` answer ``400 {"error": "invalid_grant", "error_description": ...}`` ("Token
  has been expired or revoked.", https://workos.com/blog/invalid-grant-oauth-errors-by-provider);
  a wrong client ``401 {"error": "invalid_client"}`` (RFC 6749 section 5.2).
* https://developers.google.com/identity/openid-connect/reference : the UserInfo endpoint
  (``GET https://openidconnect.googleapis.com/v1/userinfo`` with the Bearer token) answers
  ``{"sub", "email", "email_verified", ...}``; the id_token carries the same claims.
* https://developers.google.com/workspace/sheets/api/reference/rest/v4/spreadsheets.values/get :
  ``GET /v4/spreadsheets/{spreadsheetId}/values/{range}`` (A1 notation: ``'Sheet'``,
  ``'Sheet'!A1:D5``, ``'Sheet'!5:504`` for whole rows) with ``majorDimension`` (ROWS | COLUMNS)
  and ``valueRenderOption`` (FORMATTED_VALUE, the default | UNFORMATTED_VALUE | FORMULA);
  answers a ValueRange ``{"range", "majorDimension", "values"}``, trailing empty rows and
  columns left out (``values`` absent when there is nothing).
* https://developers.google.cn/workspace/sheets/api/reference/rest/v4/spreadsheets.values/batchGet.md.txt :
  ``GET /v4/spreadsheets/{spreadsheetId}/values:batchGet?ranges=...&ranges=...`` (with
  ``majorDimension``, ``valueRenderOption``) answers BatchGetValuesResponse
  ``{"spreadsheetId", "valueRanges": [ValueRange, ...]}``, one per range, in order.
* https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/update :
  ``PUT /v4/spreadsheets/{spreadsheetId}/values/{range}?valueInputOption=RAW|USER_ENTERED``
  with a ValueRange body; answers UpdateValuesResponse. In a ValueRange written, a null cell is
  skipped (the cell keeps its value; https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values#ValueRange).
* https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append :
  ``POST /v4/spreadsheets/{spreadsheetId}/values/{range}:append`` with query parameters
  ``valueInputOption`` (required, RAW | USER_ENTERED) and ``insertDataOption``
  (OVERWRITE | INSERT_ROWS), a ValueRange body ``{"range", "majorDimension", "values"}`` and an
  OAuth bearer token with the ``https://www.googleapis.com/auth/spreadsheets`` scope; the answer
  is ``{"spreadsheetId", "tableRange", "updates": UpdateValuesResponse}``.
* https://developers.google.com/sheets/reference/rest/v4/UpdateValuesResponse :
  ``{"spreadsheetId", "updatedRange", "updatedRows", "updatedColumns", "updatedCells"}``.
* https://cloud.google.com/apis/design/errors and
  https://cloud.google.com/video-intelligence/docs/reference/rest/Shared.Types/Code : error
  bodies ``{"error": {"code", "message", "status"}}`` with canonical codes INVALID_ARGUMENT (400),
  UNAUTHENTICATED (401), PERMISSION_DENIED (403), NOT_FOUND (404), RESOURCE_EXHAUSTED (429),
  INTERNAL (500), UNAVAILABLE (503).
* https://developers.google.com/sheets/api/limits : per-minute quotas, ``429: Too many requests``
  when exceeded.

Usage::

    with FakeGoogleSheets() as google:          # generates a test RSA key pair
        creds = google.service_account()        # a key file pointing token_uri at the fake
        google.add_spreadsheet("sheet123", ["Orders"])
        ... LEVQOR_SHEETS_API_BASE=google.url, LEVQOR_SSRF_ALLOW=127.0.0.1 ...
        assert google.rows("sheet123", "Orders") == [["a", 1]]
        google.add_row("sheet123", "Orders", ["b", 2])   # a row added upstream
        token = google.grant(email="ada@example.com")     # an OAuth access token it accepts
        google.fail_next(429, headers={"Retry-After": "3"})
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = [
    "FakeGoogleSheets",
    "a1_parts",
    "google_error",
    "generate_key_pair",
    "SCOPE",
    "JWT_GRANT",
]

SCOPE = "https://www.googleapis.com/auth/spreadsheets"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

_CANONICAL = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: (
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute "
        "per user' of service 'sheets.googleapis.com'.",
    ),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
}


def google_error(status: int, message: str | None = None, canonical: str | None = None) -> dict:
    """A documented Google API error body."""
    canon, msg = _CANONICAL.get(status, ("UNKNOWN", "Unknown error."))
    return {
        "error": {
            "code": status,
            "message": message if message is not None else msg,
            "status": canonical or canon,
        }
    }


def _gerr(status: int, message: str | None = None, canonical: str | None = None) -> Reply:
    return Reply(status, google_error(status, message, canonical))


def _oauth_err(error: str, description: str, status: int = 400) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


def generate_key_pair() -> tuple[str, Any]:
    """A fresh 2048-bit RSA key: (private key PEM in PKCS#8 like Google's key files, public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


_APPEND_PATH = r"/v4/spreadsheets/([^/]+)/values/([^/]+):append"
_VALUES_PATH = r"/v4/spreadsheets/([^/]+)/values/([^/:]+)"
_CELL_RE = re.compile(r"^\$?([A-Za-z]{1,3})?\$?(\d+)?$")


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def _col_letters(index: int) -> str:
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def _split_range(a1: str, sheets: dict[str, Any]) -> tuple[str, str]:
    """(sheet title, 'A1:B2' or '') of an A1 range; a bare cell range means the first sheet."""
    if "!" in a1:
        sheet, _, cells = a1.rpartition("!")
    else:
        sheet, cells = a1, ""
    if len(sheet) >= 2 and sheet[0] == sheet[-1] == "'":
        sheet = sheet[1:-1].replace("''", "'")
    if "!" not in a1 and sheet not in sheets and _CELL_RE.match(a1.split(":")[0]):
        sheet, cells = next(iter(sheets), ""), a1
    return sheet, cells


def a1_parts(cells: str) -> tuple[int, int, int | None, int | None] | None:
    """The bounds of an A1 cell range as 0-based (col0, row0, col1, row1), None meaning
    unbounded: ``""`` is the whole sheet, ``A:D`` whole columns, ``5:10`` whole rows, ``B2`` one
    cell. None when ``cells`` is not A1 notation."""
    if not cells:
        return 0, 0, None, None
    first, sep, last = cells.partition(":")
    if not first or (sep and not last):
        return None
    m0, m1 = _CELL_RE.match(first), _CELL_RE.match(last if sep else first)
    if m0 is None or m1 is None:
        return None
    c0 = _col_index(m0.group(1)) if m0.group(1) else 0
    r0 = int(m0.group(2)) - 1 if m0.group(2) else 0
    c1 = _col_index(m1.group(1)) if m1.group(1) else None
    r1 = int(m1.group(2)) - 1 if m1.group(2) else None
    if r0 < 0 or (r1 is not None and r1 < r0) or (c1 is not None and c1 < c0):
        return None
    return c0, r0, c1, r1


def _formatted(cell: Any) -> Any:
    """FORMATTED_VALUE: a cell as the sheet shows it (text)."""
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return "" if cell is None else str(cell)


def _quote_sheet(name: str) -> str:
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        return name
    return "'" + name.replace("'", "''") + "'"


class FakeGoogleSheets:
    """Google's token endpoint (``POST /token``) and Sheets ``values.append`` in one server.

    ``public_key``: the service account's public key (a ``cryptography`` key or PEM); when
    omitted a key pair is generated and :meth:`service_account` includes its private key.
    ``spreadsheets`` maps id -> sheet title -> rows; ``appends`` records every accepted append;
    ``token_requests`` counts token grants (accepted or not).
    """

    def __init__(
        self,
        *,
        client_email: str = "levqor-bot@levqor-test.iam.gserviceaccount.com",
        public_key: Any = None,
        key_id: str = "0123456789abcdef0123456789abcdef01234567",
        token_lifetime: int = 3599,
    ) -> None:
        self.private_key_pem: str | None = None
        if public_key is None:
            self.private_key_pem, public_key = generate_key_pair()
        elif isinstance(public_key, (str, bytes)):
            public_key = serialization.load_pem_public_key(
                public_key.encode() if isinstance(public_key, str) else public_key
            )
        self.public_key = public_key
        self.client_email = client_email
        self.key_id = key_id
        self.token_lifetime = token_lifetime
        self.server = FakeServer()
        self._lock = threading.Lock()
        self.spreadsheets: dict[str, dict[str, list[list[Any]]]] = {}
        #: spreadsheet ids the service account may not edit (403 PERMISSION_DENIED)
        self.denied: set[str] = set()
        self.appends: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        #: access token -> (scopes, expiry as time.time())
        self.tokens: dict[str, tuple[set[str], float]] = {}
        self.token_requests = 0
        #: the claims of the last accepted assertion
        self.last_claims: dict[str, Any] | None = None
        #: access token -> the account's email (OAuth tokens)
        self.token_emails: dict[str, str] = {}
        #: the operator's OAuth client
        self.client_id = "levqor-test.apps.googleusercontent.com"
        self.client_secret = "GOCSPX-fake-client-secret"
        #: authorization code -> what was authorised (used codes are removed)
        self.codes: dict[str, dict[str, Any]] = {}
        #: refresh token -> {"scopes", "email", "client_id"}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        #: the email the next authorisation signs in as
        self.user_email = "ada@example.com"
        self.grants: list[str] = []  # grant_type of each accepted token request, in order
        self._fail: dict[str, deque[Reply]] = {
            "token": deque(),
            "append": deque(),
            "get": deque(),
            "update": deque(),
        }
        self.server.route("POST", r"/token", self._token)
        self.server.route("GET", r"/o/oauth2/v2/auth", self._authorize)
        self.server.route("GET", r"/v1/userinfo", self._userinfo)
        self.server.route("GET", _VALUES_PATH, self._get)
        self.server.route("GET", r"/v4/spreadsheets/([^/]+)/values:batchGet", self._batch_get)
        self.server.route("PUT", _VALUES_PATH, self._update)
        self.server.route("POST", _APPEND_PATH, self._append)

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_uri(self) -> str:
        return f"{self.server.url}/token"

    @property
    def authorization_url(self) -> str:
        return f"{self.server.url}/o/oauth2/v2/auth"

    @property
    def userinfo_url(self) -> str:
        return f"{self.server.url}/v1/userinfo"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def start(self) -> FakeGoogleSheets:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeGoogleSheets:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget requests, spreadsheets, tokens and scripted failures (keeps the key)."""
        with self._lock:
            self.server.reset()
            self.spreadsheets.clear()
            self.denied.clear()
            self.appends.clear()
            self.updates.clear()
            self.tokens.clear()
            self.token_emails.clear()
            self.codes.clear()
            self.refresh_tokens.clear()
            self.grants.clear()
            self.token_requests = 0
            self.last_claims = None
            for q in self._fail.values():
                q.clear()
        self.token_lifetime = 3599
        self.user_email = "ada@example.com"

    # ------------------------------------------------------------------ set-up
    def service_account(self, private_key_pem: str | None = None, **overrides: Any) -> dict:
        """A service-account key file (as a dict) whose token_uri is this fake."""
        pem = private_key_pem or self.private_key_pem
        if pem is None:
            raise ValueError("give the private key PEM matching the fake's public key")
        key = {
            "type": "service_account",
            "project_id": "levqor-test",
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }
        key.update(overrides)
        return key

    def add_spreadsheet(
        self, spreadsheet_id: str, sheets: list[str] | tuple[str, ...] = ("Sheet1",)
    ) -> None:
        with self._lock:
            self.spreadsheets[spreadsheet_id] = {name: [] for name in sheets}

    def rows(self, spreadsheet_id: str, sheet: str = "Sheet1") -> list[list[Any]]:
        with self._lock:
            return [list(r) for r in self.spreadsheets[spreadsheet_id][sheet]]

    def add_row(self, spreadsheet_id: str, sheet: str, row: list[Any]) -> int:
        """A row typed in upstream, below the last row; returns its row number."""
        with self._lock:
            table = self.spreadsheets[spreadsheet_id][sheet]
            table.append(list(row))
            return len(table)

    def set_rows(self, spreadsheet_id: str, sheet: str, rows: list[list[Any]]) -> None:
        with self._lock:
            self.spreadsheets[spreadsheet_id][sheet] = [list(r) for r in rows]

    def delete_row(self, spreadsheet_id: str, sheet: str, row_number: int) -> None:
        """Delete a row upstream: the rows below move up one (their numbers shift)."""
        with self._lock:
            del self.spreadsheets[spreadsheet_id][sheet][row_number - 1]

    def grant(
        self,
        *,
        email: str | None = None,
        scopes: tuple[str, ...] = (SCOPE, EMAIL_SCOPE, "openid"),
        expires_in: float | None = None,
    ) -> str:
        """An OAuth access token this fake accepts (as if "Connect" had run), for ``email``."""
        token = "ya29.a0" + secrets.token_urlsafe(24)
        life = self.token_lifetime if expires_in is None else expires_in
        with self._lock:
            self.tokens[token] = (set(scopes), time.time() + life)
            self.token_emails[token] = email or self.user_email
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (the next API call answers 401)."""
        with self._lock:
            self.tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        """The user removed the app's access: refreshing answers invalid_grant."""
        with self._lock:
            self.refresh_tokens.clear()

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        endpoint: str = "append",
        delay: float = 0.0,
    ) -> None:
        """Answer the next request to ``endpoint`` ("append", "get", "update" or "token") with
        this reply (default body: the documented error body for the status)."""
        if body is None and status >= 400:
            body = (
                google_error(status)
                if endpoint != "token"
                else {"error": "invalid_request", "error_description": "Scripted failure."}
            )
        with self._lock:
            self._fail[endpoint].append(Reply(status, body, dict(headers or {}), delay))

    def delay_next(self, seconds: float, *, endpoint: str = "append") -> None:
        """Process the next request normally but only after ``seconds``."""
        with self._lock:
            self._fail[endpoint].append(Reply(-1, None, {}, seconds))

    def _scripted(self, endpoint: str) -> Reply | None:
        with self._lock:
            q = self._fail[endpoint]
            return q.popleft() if q else None

    # ------------------------------------------------------------------ token endpoint
    def _token(self, req: Recorded) -> Reply:
        with self._lock:
            self.token_requests += 1
        scripted = self._scripted("token")
        if scripted is not None:
            if scripted.status != -1:
                return scripted
            time.sleep(scripted.delay)
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return _oauth_err("invalid_request", "Invalid Content-Type.")
        form = parse_qs(req.body.decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if grant in ("authorization_code", "refresh_token"):
            return self._oauth_grant(req, grant, {k: v[0] for k, v in form.items()})
        if grant != JWT_GRANT:
            return _oauth_err("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = form.get("assertion", [""])[0]
        if not assertion:
            return _oauth_err("invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return _oauth_err("invalid_grant", "Invalid JWT: malformed.")
        if header.get("alg") != "RS256" or header.get("kid") not in (None, self.key_id):
            return _oauth_err("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp"]},
                leeway=0,
            )
        except jwt.InvalidSignatureError:
            return _oauth_err("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return _oauth_err(
                "invalid_grant",
                f"Invalid JWT: Failed audience check. The right audience is {self.token_uri}",
            )
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            return _oauth_err(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        except jwt.InvalidTokenError as e:
            return _oauth_err("invalid_grant", f"Invalid JWT: {e}")
        now = time.time()
        if claims["exp"] - claims["iat"] > 3600 or claims["iat"] > now + 300:
            return _oauth_err(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        if claims["iss"] != self.client_email:
            return _oauth_err("invalid_grant", "Invalid grant: account not found")
        scopes = set(str(claims.get("scope") or "").split())
        if not scopes:
            return _oauth_err("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.c." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = (scopes, now + self.token_lifetime)
            self.last_claims = dict(claims, _kid=header.get("kid"))
            self.grants.append(grant)
        return Reply(
            200,
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"},
        )

    # ------------------------------------------------------------------ OAuth web-server flow
    def _bearer(self, req: Recorded) -> tuple[str, set[str]] | None:
        auth = req.header("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self._lock:
            info = self.tokens.get(token)
        if info is None or info[1] < time.time():
            return None
        return token, info[0]

    def _refused(self, req: Recorded, scopes: set[str]) -> Reply | None:
        """401 without a valid token, 403 without one of ``scopes``; None when allowed."""
        found = self._bearer(req)
        if found is None:
            return Reply(
                401,
                google_error(401),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        if not found[1] & scopes:
            return _gerr(403, "Request had insufficient authentication scopes.")
        return None

    @staticmethod
    def _scopes(requested: str) -> list[str]:
        aliases = {"email": EMAIL_SCOPE}
        return [aliases.get(s, s) for s in requested.split()]

    def _authorize(self, req: Recorded) -> Reply:
        """The consent screen, consented at once: a redirect to redirect_uri with a code."""
        q = {k: v[0] for k, v in req.query.items()}
        if q.get("client_id") != self.client_id:
            return Reply(400, "Error 401: invalid_client. The OAuth client was not found.")
        redirect = q.get("redirect_uri") or ""
        if urlsplit(redirect).scheme not in ("http", "https"):
            return Reply(400, "Error 400: redirect_uri_mismatch")
        state = q.get("state")

        def back(**params: str) -> Reply:
            if state is not None:
                params["state"] = state
            sep = "&" if "?" in redirect else "?"
            return Reply(302, b"", {"Location": redirect + sep + urlencode(params)})

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        scopes = self._scopes(q.get("scope") or "")
        if not scopes:
            return back(
                error="invalid_request", error_description="Missing required parameter: scope"
            )
        method = q.get("code_challenge_method") or ("plain" if q.get("code_challenge") else None)
        if method not in (None, "S256", "plain"):
            return back(error="invalid_request", error_description="Invalid code_challenge_method")
        code = "4/0A" + secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = {
                "client_id": self.client_id,
                "redirect_uri": redirect,
                "scopes": scopes,
                "challenge": q.get("code_challenge"),
                "method": method,
                "offline": q.get("access_type") == "offline",
                "email": self.user_email,
                "query": q,
            }
        return back(code=code, scope=" ".join(scopes))

    def _client_ok(self, req: Recorded, form: dict[str, str]) -> bool:
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = req.header("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        return cid == self.client_id and secret == self.client_secret

    def _id_token(self, email: str) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": self.client_id,
            "sub": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(
            claims, "fake-google-signing-key-" + self.client_secret, algorithm="HS256"
        )

    def _oauth_grant(self, req: Recorded, grant: str, form: dict[str, str]) -> Reply:
        if not self._client_ok(req, form):
            return _oauth_err("invalid_client", "Unauthorized", 401)
        refresh: str | None = None
        with self._lock:
            if grant == "authorization_code":
                info = self.codes.pop(form.get("code", ""), None)
                if info is None:
                    return _oauth_err("invalid_grant", "Bad Request")
                if form.get("redirect_uri") != info["redirect_uri"]:
                    return _oauth_err("redirect_uri_mismatch", "Bad Request")
                if info["challenge"] is not None:
                    verifier = form.get("code_verifier") or ""
                    expected = (
                        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                        .decode()
                        .rstrip("=")
                        if info["method"] == "S256"
                        else verifier
                    )
                    if not verifier or expected != info["challenge"]:
                        return _oauth_err("invalid_grant", "Invalid code verifier.")
                scopes, email = info["scopes"], info["email"]
                if info["offline"]:
                    refresh = "1//0g" + secrets.token_urlsafe(32)
                    self.refresh_tokens[refresh] = {"scopes": scopes, "email": email}
            else:
                info = self.refresh_tokens.get(form.get("refresh_token", ""))
                if info is None:
                    return _oauth_err("invalid_grant", "Token has been expired or revoked.")
                scopes, email = info["scopes"], info["email"]
            token = "ya29.a0" + secrets.token_urlsafe(24)
            self.tokens[token] = (set(scopes), time.time() + self.token_lifetime)
            self.token_emails[token] = email
            self.grants.append(grant)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        if "openid" in scopes:
            body["id_token"] = self._id_token(email)
        return Reply(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _userinfo(self, req: Recorded) -> Reply:
        found = self._bearer(req)
        if found is None:
            return Reply(
                401, {"error": "invalid_request", "error_description": "Invalid Credentials"}
            )
        with self._lock:
            email = self.token_emails.get(found[0])
        if email is None or not found[1] & {EMAIL_SCOPE, "openid"}:
            return Reply(401, {"error": "insufficient_scope"})
        return Reply(
            200,
            {
                "sub": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
                "email": email,
                "email_verified": True,
            },
        )

    # ------------------------------------------------------------------ values.get / update
    def _locate(self, req: Recorded) -> tuple[str, str, list[list[Any]], tuple] | Reply:
        """(spreadsheet id, sheet, table, bounds) of the request's range, or an error reply.
        Call with the lock held."""
        assert req.match is not None
        sid, rng = unquote(req.match.group(1)), unquote(req.match.group(2))
        book = self.spreadsheets.get(sid)
        if book is None:
            return _gerr(404)
        if sid in self.denied:
            return _gerr(403)
        sheet, cells = _split_range(rng, book)
        bounds = a1_parts(cells)
        if sheet not in book or bounds is None:
            return _gerr(400, f"Unable to parse range: {rng}")
        return sid, sheet, book[sheet], bounds

    def _get(self, req: Recorded) -> Reply:
        scripted = self._scripted("get")
        if scripted is not None:
            if scripted.status != -1:
                return scripted
            time.sleep(scripted.delay)
        if (refused := self._refused(req, {SCOPE, DRIVE_SCOPE, SCOPE + ".readonly"})) is not None:
            return refused
        q = {k: v[0] for k, v in req.query.items()}
        major = q.get("majorDimension", "ROWS")
        render = q.get("valueRenderOption", "FORMATTED_VALUE")
        if major not in ("ROWS", "COLUMNS"):
            return _gerr(400, f"Invalid value at 'major_dimension' ({major})")
        if render not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA"):
            return _gerr(400, f"Invalid value at 'value_render_option' ({render})")
        with self._lock:
            found = self._locate(req)
            if isinstance(found, Reply):
                return found
            _sid, sheet, table, (c0, r0, c1, r1) = found
            last_row = len(table) - 1 if r1 is None else min(r1, len(table) - 1)
            rows = []
            for r in range(r0, last_row + 1):
                row = table[r][c0 : None if c1 is None else c1 + 1]
                while row and row[-1] in (None, ""):
                    row = row[:-1]
                rows.append(
                    [
                        _formatted(c) if render == "FORMATTED_VALUE" else ("" if c is None else c)
                        for c in row
                    ]
                )
        while rows and not rows[-1]:
            rows.pop()
        width = max((len(r) for r in rows), default=0)
        end_col = c0 + max(width, 1) - 1 if c1 is None else c1
        end_row = r0 + max(len(rows), 1) - 1 if r1 is None else r1
        label = (
            f"{_quote_sheet(sheet)}!{_col_letters(c0)}{r0 + 1}:{_col_letters(end_col)}{end_row + 1}"
        )
        out: dict[str, Any] = {"range": label, "majorDimension": major}
        if rows:
            if major == "COLUMNS":
                rows = [[r[i] if i < len(r) else "" for r in rows] for i in range(width)]
            out["values"] = rows
        return Reply(200, out)

    def _batch_get(self, req: Recorded) -> Reply:
        """values:batchGet: one ValueRange per ``ranges`` parameter, in order."""
        ranges = req.query.get("ranges", [])
        if not ranges:
            return _gerr(400, "Must specify at least one range.")
        out = []
        for rng in ranges:
            one = Recorded(req.method, req.path, {**req.query}, req.headers, b"")
            one.query.pop("ranges", None)
            one.match = re.match(
                r"/v4/spreadsheets/([^/]+)/values/(.+)",
                f"{req.path.split('/values:')[0]}/values/{rng}",
            )
            reply = self._get(one)
            if reply.status != 200:
                return reply
            out.append(reply.body)
        assert req.match is not None
        return Reply(200, {"spreadsheetId": unquote(req.match.group(1)), "valueRanges": out})

    def _update(self, req: Recorded) -> Reply:
        scripted = self._scripted("update")
        if scripted is not None:
            if scripted.status != -1:
                return scripted
            time.sleep(scripted.delay)
        if (refused := self._refused(req, {SCOPE, DRIVE_SCOPE})) is not None:
            return refused
        vio = {k: v[0] for k, v in req.query.items()}.get("valueInputOption")
        if vio not in ("RAW", "USER_ENTERED"):
            return _gerr(400, "'valueInputOption' is required but not specified")
        try:
            body = req.json()
        except ValueError:
            return _gerr(400, "Invalid JSON payload received.")
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
            return _gerr(400, "Invalid value at 'data.values'")
        if any(isinstance(c, (dict, list)) for r in values for c in r):
            return _gerr(400, "Invalid values: cells must be scalar")
        assert req.match is not None
        rng = unquote(req.match.group(2))
        if "range" in body and body["range"] != rng:
            return _gerr(
                400,
                f"Requested writing within range [{rng}], but tried writing to [{body['range']}]",
            )
        with self._lock:
            found = self._locate(req)
            if isinstance(found, Reply):
                return found
            sid, sheet, table, (c0, r0, c1, r1) = found
            height, width = len(values), max((len(r) for r in values), default=0)
            if (r1 is not None and r0 + height - 1 > r1) or (
                c1 is not None and c0 + width - 1 > c1
            ):
                return _gerr(
                    400,
                    f"Requested writing within range [{rng}], but tried writing beyond it",
                )
            cells = 0
            for i, row in enumerate(values):
                while len(table) <= r0 + i:
                    table.append([])
                target = table[r0 + i]
                for j, cell in enumerate(row):
                    if cell is None:
                        continue  # a null cell is skipped: the cell keeps its value
                    while len(target) <= c0 + j:
                        target.append(None)
                    target[c0 + j] = cell
                    cells += 1
            updated = (
                f"{_quote_sheet(sheet)}!{_col_letters(c0)}{r0 + 1}:"
                f"{_col_letters(c0 + max(width, 1) - 1)}{r0 + max(height, 1)}"
            )
            self.updates.append(
                {"spreadsheet_id": sid, "range": rng, "values": values, "value_input_option": vio}
            )
        return Reply(
            200,
            {
                "spreadsheetId": sid,
                "updatedRange": updated,
                "updatedRows": height,
                "updatedColumns": width,
                "updatedCells": cells,
            },
        )

    # ------------------------------------------------------------------ values.append
    def _append(self, req: Recorded) -> Reply:
        scripted = self._scripted("append")
        if scripted is not None:
            if scripted.status != -1:
                return scripted
            time.sleep(scripted.delay)
        if (refused := self._refused(req, {SCOPE, DRIVE_SCOPE})) is not None:
            return refused
        assert req.match is not None
        sid, rng = unquote(req.match.group(1)), unquote(req.match.group(2))
        q = {k: v[0] for k, v in req.query.items()}
        vio = q.get("valueInputOption")
        if vio not in ("RAW", "USER_ENTERED"):
            return _gerr(
                400,
                f"Invalid value at 'value_input_option' ({vio})"
                if vio
                else "'valueInputOption' is required but not specified",
            )
        ido = q.get("insertDataOption", "OVERWRITE")
        if ido not in ("OVERWRITE", "INSERT_ROWS"):
            return _gerr(400, f"Invalid value at 'insert_data_option' ({ido})")
        try:
            body = req.json()
        except ValueError:
            return _gerr(400, "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return _gerr(400, "Invalid JSON payload received. Expected an object.")
        if "range" in body and body["range"] != rng:
            return _gerr(
                400,
                f"Requested writing within range [{rng}], but tried writing to [{body['range']}]",
            )
        if body.get("majorDimension", "ROWS") not in ("ROWS", "COLUMNS"):
            return _gerr(400, "Invalid value at 'data.major_dimension'")
        values = body.get("values")
        if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
            return _gerr(400, "Invalid value at 'data.values'")
        for row in values:
            for cell in row:
                if isinstance(cell, (dict, list)):
                    return _gerr(400, "Invalid values: cells must be scalar")
        if body.get("majorDimension") == "COLUMNS":
            width = max((len(r) for r in values), default=0)
            values = [[c[i] if i < len(c) else None for c in values] for i in range(width)]
        with self._lock:
            book = self.spreadsheets.get(sid)
            if book is None:
                return _gerr(404)
            if sid in self.denied:
                return _gerr(403)
            sheet, cells = _split_range(rng, book)
            m = _CELL_RE.match(cells.split(":")[0]) if cells else _CELL_RE.match("A1")
            if sheet not in book or m is None:
                return _gerr(400, f"Unable to parse range: {rng}")
            col0 = _col_index(m.group(1) or "A")
            table = book[sheet]
            first_row = len(table) + 1
            table_range = (
                f"{_quote_sheet(sheet)}!A1:{_col_letters(max(len(r) for r in table) - 1)}{len(table)}"
                if table and any(table)
                else None
            )
            for row in values:
                table.append([None] * col0 + list(row))
            width = max((len(r) for r in values), default=0)
            n_rows = len(values)
            n_cells = sum(len(r) for r in values)
            updated_range = (
                f"{_quote_sheet(sheet)}!{_col_letters(col0)}{first_row}:"
                f"{_col_letters(col0 + max(width, 1) - 1)}{first_row + max(n_rows, 1) - 1}"
            )
            self.appends.append(
                {
                    "spreadsheet_id": sid,
                    "range": rng,
                    "value_input_option": vio,
                    "insert_data_option": ido,
                    "values": values,
                    "updated_range": updated_range,
                }
            )
        out: dict[str, Any] = {
            "spreadsheetId": sid,
            "updates": {
                "spreadsheetId": sid,
                "updatedRange": updated_range,
                "updatedRows": n_rows,
                "updatedColumns": width,
                "updatedCells": n_cells,
            },
        }
        if table_range:
            out["tableRange"] = table_range
        return Reply(200, out)
