"""OAuth2 "Connect" and refresh for the host, over the kernel's protocol (:mod:`levqor_kernel.oauth`).

**Connect.** :meth:`OAuthService.start` answers the provider's authorization URL for a signed-in
user, a connector and a credential name. Its ``state`` is signed with the host's
:class:`~levqor_host.security.signing.LinkSigner` and carries the user, the connector, the
name, an expiry (10 minutes) and the PKCE verifier encrypted by the vault (the provider and the
browser see only ciphertext; no server-side row, so any host of the deployment takes the
callback). :meth:`OAuthService.callback` checks the state, exchanges the code, builds the
credential (``oauth_credentials`` hook, the description's ``account`` pointer) and stores it
encrypted; connecting a name again replaces its tokens and clears ``broken``.

**Refresh.** An access token expiring within a minute is refreshed before a step or a poll
uses it, and a 401 on it refreshes it once (the runner asks :meth:`UserCredentials.refresh`).
Either way the refresh holds the credential's row (``SELECT ... FOR UPDATE`` on PostgreSQL,
the write transaction on SQLite) and reads it again first: when another worker or host
refreshed meanwhile, its token is used and the provider is not asked again. A refresh token
the provider refuses (``invalid_grant``) marks the credential ``broken``, pauses the triggers
that use it, emails the owner once and fails the step with :class:`RefreshRefused`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from jsonschema import Draft202012Validator
from levqor_kernel.context import make_context
from levqor_kernel.errors import ConnectorError, CredentialError, RefreshRefused, RetryableError
from levqor_kernel.http import Http
from levqor_kernel.oauth import (
    OAuthClient,
    call_with_refresh,
    credential_from_token,
    is_oauth,
    make_pkce,
    needs_refresh,
)

from levqor_host.config import OAuthConfig
from levqor_host.errors import ApiError
from levqor_host.store.credentials import BROKEN
from levqor_host.store.db import Conflict

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.config import Config
    from levqor_host.security.signing import LinkSigner
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store
    from levqor_host.store.rows import CredentialRow

log = logging.getLogger("levqor.oauth")

T = TypeVar("T")

STATE_TTL = 600  # seconds a Connect may take between start and callback
_STATE_MAX = 4096  # a state longer than this was not made here
_TOKEN_TIMEOUT = (5.0, 20.0)
_SIGNED = "oauth-state"

#: called with (user_id, credential name, reason) when a credential turns broken / is connected
Listener = Callable[[str, str, str], Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OAuthService:
    """Connect, refresh and resolve OAuth2 credentials for one app (no Flask, no SQL: it is
    handed the store, the plugin manager, the vault and the link signer)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        pm: LevqorPluginManager,
        vault: Vault,
        signer: LinkSigner,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.pm = pm
        self.vault = vault
        self.signer = signer
        #: told when a refresh token was refused (pause the triggers, email the owner)
        self.on_broken: list[Listener] = []
        #: told when an account is connected (again): what ``on_broken`` stopped may go on
        self.on_connected: list[Listener] = []

    @property
    def redirect_uri(self) -> str:
        """Where providers send the browser back: ``<LEVQOR_BASE_URL>/oauth/callback``."""
        return f"{self.cfg.base_url}/oauth/callback"

    # ------------------------------------------------------------------ the client
    def _title(self, connector: str) -> str:
        info = self.pm.catalog.get(connector)
        return info.title if info is not None else connector

    def configured(self, connector: str) -> bool:
        """Whether the operator set ``connector``'s OAuth client (Connect works)."""
        return bool(self.cfg.oauth.client(connector).client_id)

    def client(self, connector: str) -> OAuthClient:
        """The operator's client for ``connector``: 404 when the connector is not installed or
        has no OAuth2 option, 503 naming the variables when no client is configured."""
        info = self.pm.catalog.get(connector)
        if info is None:
            raise ApiError(404, "unknown_connector", f"connector {connector!r} is not installed")
        if not info.oauth2:
            raise ApiError(
                404, "no_oauth", f"connector {info.title!r} has no Connect option (OAuth2)"
            )
        settings = self.cfg.oauth.client(connector)
        if not settings.client_id:
            cid, secret = OAuthConfig.variables(connector)
            raise ApiError(
                503,
                "oauth_not_configured",
                f"Connect for {info.title} is not set up on this server: the operator sets "
                f"{cid} and {secret} (the OAuth app's client id and secret; its redirect URI "
                f"is {self.redirect_uri})",
                {"variables": [cid, secret]},
            )
        return OAuthClient(
            connector,
            info.oauth2,
            settings.client_id,
            settings.client_secret,
            authorization_endpoint=settings.authorization_url,
            token_endpoint=settings.token_url,
        )

    # ------------------------------------------------------------------ Connect
    def start(self, user_id: str, connector: str, name: str) -> str:
        """The provider's authorization URL that connects an account of ``connector`` as the
        user's credential ``name`` (new, or the same connector's credential connected again)."""
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise ApiError(400, "invalid_request", "name the credential (1-100 characters)")
        client = self.client(connector)
        existing = self.store.credentials.by_name(user_id, name)
        if existing is not None and existing["connector"] != connector:
            raise ApiError(
                409,
                "conflict",
                f"a credential named {name!r} exists for connector {existing['connector']!r}",
            )
        pkce = make_pkce() if client.pkce else None
        payload = {
            "u": user_id,
            "c": connector,
            "n": name,
            "x": int(time.time()) + STATE_TTL,
            "v": self.vault.encrypt(pkce.verifier) if pkce else None,
            "r": secrets.token_urlsafe(9),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        state = f"{body}.{self.signer.sign(_SIGNED, body)}"
        return client.authorization_url(
            self.redirect_uri, state, code_challenge=pkce.challenge if pkce else None
        )

    def read_state(self, state: str) -> dict[str, Any]:
        """The fields of a state this host signed (400 ``bad_state`` otherwise: forged,
        altered, expired or not ours)."""
        bad = ApiError(400, "bad_state", "this Connect link is not valid: start Connect again")
        if not isinstance(state, str) or not state or len(state) > _STATE_MAX or "." not in state:
            raise bad
        body, sig = state.rsplit(".", 1)
        if not self.signer.verify(sig, _SIGNED, body):
            raise bad
        try:
            data = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            raise bad from None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("u", "c", "n")
        ) or not isinstance(data.get("x"), int):
            raise bad
        if data["x"] < time.time():
            raise ApiError(400, "state_expired", "this Connect took too long: start Connect again")
        verifier = None
        if data.get("v") is not None:
            try:
                verifier = self.vault.decrypt(data["v"])
            except Exception:  # noqa: BLE001 - a rotated-away key: the link is simply void
                raise bad from None
        return {"user_id": data["u"], "connector": data["c"], "name": data["n"], "verifier": verifier}

    def callback(
        self,
        user_id: str,
        state: str,
        code: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> CredentialRow:
        """Finish Connect for the signed-in ``user_id``: check the state, exchange the code,
        store the credential. 4xx ``ApiError`` for a bad state, another user's state, a provider
        error, a refused code; 502 when the provider cannot be reached. Nothing is stored then."""
        st = self.read_state(state)
        if st["user_id"] != user_id:
            raise ApiError(403, "bad_state", "this Connect was started by another account")
        connector, name = st["connector"], st["name"]
        title = self._title(connector)
        if error:
            said = f" ({error_description[:200]})" if error_description else ""
            if error == "access_denied":
                raise ApiError(400, "access_denied", f"{title} access was not allowed{said}")
            raise ApiError(400, "provider_error", f"{title} answered {error[:100]}{said}")
        if not code:
            raise ApiError(400, "invalid_request", f"{title} sent no authorization code")
        client = self.client(connector)
        try:
            token = client.exchange(
                Http(timeout=_TOKEN_TIMEOUT), code, self.redirect_uri, code_verifier=st["verifier"]
            )
            cred = self._credential(connector, token, previous=None)
        except RetryableError as e:
            raise ApiError(502, "provider_unavailable", f"{title} could not be reached: {e.message}") from None
        except ConnectorError as e:
            raise ApiError(400, "provider_refused", f"{title} refused the authorization: {e.message}") from None
        self._check_schema(connector, cred)
        try:
            row = self.store.credentials.connect(user_id, name, connector, cred)
        except Conflict as e:
            raise ApiError(409, "conflict", str(e)) from None
        for fn in self.on_connected:
            fn(user_id, name, "connected")
        return row

    def _credential(
        self, connector: str, token: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The credential of a token answer, with what the connector's ``oauth_credentials``
        adds (its errors fail a connect; a refresh keeps the earlier fields instead)."""
        info = self.pm.catalog.get(connector)
        extra = None
        if self.pm.owner_impl("oauth_credentials", connector) is not None:
            ctx = make_context(
                f"oauth-{connector}", "oauth", timeout=20.0, env=self.cfg.plugin_settings()
            )
            ctx.http.add_secrets(token.get("access_token"), token.get("refresh_token"))
            try:
                extra = self.pm.call_owner(
                    "oauth_credentials", connector, connector=connector, token=dict(token), context=ctx
                )
            except ConnectorError:
                if previous is None:
                    raise
                log.warning("oauth_credentials of %s failed after a refresh; kept its fields", connector)
            finally:
                ctx.http.close()
        return credential_from_token(
            token,
            info.oauth2 if info is not None else None,
            previous=previous,
            extra=extra if isinstance(extra, Mapping) else None,
        )

    def _check_schema(self, connector: str, cred: dict) -> None:
        info = self.pm.catalog.get(connector)
        schema = info.credentials if info is not None else None
        if schema and not Draft202012Validator(schema).is_valid(cred):
            raise ApiError(
                502,
                "provider_answer_unusable",
                f"{self._title(connector)} answered tokens its connector cannot use",
            )

    # ------------------------------------------------------------------ refresh
    def refresh(
        self,
        user_id: str,
        name: str,
        connector: str,
        stale: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Refresh the user's OAuth2 credential ``name`` under its row lock and answer the
        values to use: refreshed, or refreshed meanwhile by another worker (``stale`` is what
        the caller saw refused; without it, what expires soon is refreshed). ``None`` when it
        cannot be refreshed (no such credential, not OAuth2, no refresh token). Raises
        :class:`RefreshRefused` (the credential is then broken) or a ``RetryableError`` (the
        provider could not be reached)."""
        refused: RefreshRefused | None = None
        newly_broken = False
        with self.store.credentials.locked(user_id, name) as cur:
            if cur is None or cur.connector != connector or not is_oauth(cur.values):
                return None
            values = cur.values
            if stale is not None and values.get("access_token") != stale.get("access_token"):
                return values  # another worker refreshed it meanwhile
            if stale is None and not needs_refresh(values):
                return values
            if cur.status == BROKEN:
                refused = self._refused(name, connector, "it was refused before")
            elif not values.get("refresh_token"):
                return None
            else:
                try:
                    client = self.client(connector)
                except ApiError as e:
                    raise CredentialError(e.message, code=e.code) from None
                try:
                    token = client.refresh(Http(timeout=_TOKEN_TIMEOUT), values["refresh_token"])
                except RefreshRefused as e:
                    cur.mark_broken()
                    refused, newly_broken = self._refused(name, connector, e.message), True
                else:
                    fresh = self._credential(connector, token, previous=values)
                    cur.save(fresh)
                    return fresh
        if newly_broken:
            for fn in self.on_broken:
                try:
                    fn(user_id, name, refused.message)
                except Exception:  # noqa: BLE001 - the step still fails with the clear error
                    log.exception("a broken-credential listener failed for %s", name)
        raise refused

    def _refused(self, name: str, connector: str, why: str) -> RefreshRefused:
        return RefreshRefused(
            f"credential {name!r} ({self._title(connector)}) must be connected again: its "
            f"refresh token was refused ({why[:300]})"
        )

    # ------------------------------------------------------------------ use
    def resolver(self, user_id: str) -> UserCredentials:
        """The credential resolver of one user's run (a kernel ``RefreshingCredentials``)."""
        return UserCredentials(self, user_id)

    def call_with_refresh(
        self,
        user_id: str,
        name: str | None,
        connector: str,
        fn: Callable[[dict[str, Any] | None], T],
    ) -> T:
        """``fn(values)`` with the user's credential ``name`` (refreshed first when it expires
        soon; ``None`` when no name is given), and once more with a refreshed credential when
        it raises a ``CredentialError`` with status 401 on an OAuth2 credential. For callers
        outside the runner (the trigger poller). A ``CredentialError`` when ``name`` names no
        credential of ``connector``."""
        if not name:
            return fn(None)
        creds = self.resolver(user_id)
        values = creds(name, connector)
        if values is None:
            raise CredentialError(
                f"credential {name!r} does not exist or is not for {connector!r}: add it",
                code="missing_credentials",
            )
        return call_with_refresh(fn, values, lambda stale: creds.refresh(name, connector, stale))


class UserCredentials:
    """One user's credentials for the runner: ``creds(name, connector)`` answers the values
    (an OAuth2 access token expiring within a minute refreshed first), ``creds.refresh(...)``
    refreshes after a 401. Implements :class:`levqor_kernel.recording.RefreshingCredentials`."""

    def __init__(self, service: OAuthService, user_id: str) -> None:
        self.service = service
        self.user_id = user_id

    def __call__(self, name: str | None, connector: str) -> dict[str, Any] | None:
        if not name:
            return None
        found = self.service.store.credentials.values(self.user_id, name)
        if found is None or found[0] != connector:
            return None
        values = found[1]
        if needs_refresh(values):
            try:
                fresh = self.service.refresh(self.user_id, name, connector)
            except RetryableError as e:  # the token may still work; a 401 refreshes again
                log.warning("refreshing credential %s failed for now: %s", name, e.message)
                fresh = None
            if fresh:
                return fresh
        return values

    def refresh(
        self, name: str, connector: str, stale: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return self.service.refresh(self.user_id, name, connector, stale)
