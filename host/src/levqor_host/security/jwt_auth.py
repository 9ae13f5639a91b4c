"""Supabase JWT verification (``Authorization: Bearer <jwt>``).

* The algorithms come from configuration (``LEVQOR_JWT_ALGORITHMS``; by default HS256 when
  ``SUPABASE_JWT_SECRET`` is set, ES256 and RS256 when ``SUPABASE_URL`` is set), never from the
  token: a header naming another algorithm (``none`` included) is refused before any
  signature check.
* HS256 is verified with the legacy project secret only. ES256/RS256 need a ``kid`` that names
  a key of the project's JWKS (``SUPABASE_URL/auth/v1/.well-known/jwks.json``), fetched and
  cached for ``LEVQOR_JWKS_CACHE_SECONDS``. A token naming a kid that is not cached makes us fetch
  the JWKS again (once, for every waiting request) only when the last fetch is older than
  ``LEVQOR_JWKS_REFETCH_SECONDS`` (5 minutes by default): however many unknown kids arrive, the
  JWKS endpoint sees at most one such fetch per interval. A rotated key is therefore accepted
  at most that long after it is first used (publish standby keys ahead, as Supabase advises).
  The key's type must match the algorithm (an HS256 token "signed" with the public key never
  verifies).
* ``exp``, ``aud`` (``authenticated``), ``iss`` (``SUPABASE_URL/auth/v1``) and ``sub`` are
  required and checked, with ``LEVQOR_JWT_LEEWAY`` seconds of clock skew.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests

from levqor_host.security.settings import SecuritySettings

log = logging.getLogger("levqor.auth")

_KTY_FOR_ALG = {"ES256": "EC", "RS256": "RSA"}


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (never echoes the token)."""


class ProviderUnavailable(Exception):
    """The JWKS could not be fetched and no cached key applies."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("lvq_")


class JwksCache:
    """The project's signing keys by kid.

    Refreshed when older than ``ttl`` (the cached keys stay in use while a refresh fails), and
    on an unknown kid only when the last fetch attempt is older than ``refetch_interval``.
    """

    def __init__(self, url: str, ttl: float, refetch_interval: float = 300.0) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            resp = requests.get(
                self.url, timeout=(3.0, 5.0), headers={"Accept": "application/json"}
            )
            resp.raise_for_status()
            data = resp.json()
            keys: dict[str, jwt.PyJWK] = {}
            for jwk in data.get("keys", []) if isinstance(data, dict) else []:
                if not isinstance(jwk, dict) or not jwk.get("kid"):
                    continue
                if jwk.get("use", "sig") != "sig":
                    continue
                try:
                    keys[str(jwk["kid"])] = jwt.PyJWK(jwk)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                    log.warning("JWKS key %s skipped: unsupported", jwk.get("kid"))
        except (requests.RequestException, ValueError) as e:
            raise ProviderUnavailable(f"cannot fetch the JWKS: {type(e).__name__}") from None
        self._keys = keys
        self._fetched_at = time.monotonic()

    def get(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        with self._lock:
            stale = self._fetched_at is None or now - self._fetched_at > self.ttl
            if stale:
                try:
                    self._fetch()
                except ProviderUnavailable:
                    if not self._keys:
                        raise
                    log.warning("JWKS refresh failed; using the cached keys")
            key = self._keys.get(kid)
            if key is not None or stale:
                return key
            # a kid we do not know: the project may have rotated its keys, or the kid is made
            # up; either way the endpoint sees at most one such fetch per interval
            last = self._attempted_at
            if last is not None and now - last < self.refetch_interval:
                return None
            self._fetch()
            return self._keys.get(kid)


class SupabaseVerifier:
    def __init__(self, settings: SecuritySettings) -> None:
        self.settings = settings
        self.algorithms = tuple(settings.jwt_algorithms)
        self.jwks = (
            JwksCache(settings.jwks_url, settings.jwks_cache_seconds, settings.jwks_refetch_seconds)
            if settings.jwks_url and any(a != "HS256" for a in self.algorithms)
            else None
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or :class:`InvalidToken`."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("token algorithm not accepted")
        if alg == "HS256":
            key: Any = s.supabase_jwt_secret
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid or self.jwks is None:
                raise InvalidToken("token has no key id")
            jwk = self.jwks.get(kid)
            if jwk is None:
                raise InvalidToken("token signed by an unknown key")
            if jwk.key_type != _KTY_FOR_ALG[alg] or (
                jwk.algorithm_name and jwk.algorithm_name != alg
            ):
                raise InvalidToken("token algorithm does not match its key")
            key = jwk.key
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway,
                options={"require": ["exp", "aud", "iss", "sub"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as e:
            raise InvalidToken(f"token lacks the {e.claim} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("token signature or claims invalid") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("token lacks the sub claim")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email or len(email) > 320:
            raise InvalidToken("token has no email (anonymous sign-ins cannot use Levqor)")
        return claims
