"""Supabase JWT verification (``Authorization: Bearer <jwt>``).

* The algorithms come from configuration (``LEVQOR_JWT_ALGORITHMS``; by default HS256 when
  ``SUPABASE_JWT_SECRET`` is set, ES256 and RS256 when ``SUPABASE_URL`` is set), never from the
  token: a header naming another algorithm (``none`` included) is refused before any
  signature check.
* HS256 is verified with the legacy project secret only. ES256/RS256 need a ``kid`` that names
  a key of the project's JWKS (``SUPABASE_URL/auth/v1/.well-known/jwks.json``), fetched and
  cached for ``LEVQOR_JWKS_CACHE_SECONDS``, fetched again (once, for every waiting request) when
  a token names a kid that is not cached; a kid still unknown after that is remembered as
  unknown for a minute so random kids cannot make us hammer the JWKS endpoint. The key's type
  must match the algorithm (an HS256 token "signed" with the public key never verifies).
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

from .settings import SecuritySettings

log = logging.getLogger("levqor.auth")

_KTY_FOR_ALG = {"ES256": "EC", "RS256": "RSA"}
UNKNOWN_KID_SECONDS = 60.0


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (never echoes the token)."""


class ProviderUnavailable(Exception):
    """The JWKS could not be fetched and no cached key applies."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("lvq_")


class JwksCache:
    def __init__(self, url: str, ttl: float) -> None:
        self.url = url
        self.ttl = ttl
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _fetch(self) -> None:
        self.fetches += 1
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
            stale = now - self._fetched_at > self.ttl
            if stale:
                try:
                    self._fetch()
                except ProviderUnavailable:
                    if not self._keys:
                        raise
                    log.warning("JWKS refresh failed; using the cached keys")
            key = self._keys.get(kid)
            if key is not None:
                return key
            seen = self._unknown.get(kid)
            if seen is not None and now - seen < UNKNOWN_KID_SECONDS:
                return None
            if not stale:  # a kid we do not know: the project may have rotated its keys
                self._fetch()
                key = self._keys.get(kid)
            if key is None:
                if len(self._unknown) > 1000:
                    self._unknown.clear()
                self._unknown[kid] = now
            return key


class SupabaseVerifier:
    def __init__(self, settings: SecuritySettings) -> None:
        self.settings = settings
        self.algorithms = tuple(settings.jwt_algorithms)
        self.jwks = (
            JwksCache(settings.jwks_url, settings.jwks_cache_seconds)
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
