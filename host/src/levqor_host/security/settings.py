"""Security settings (sign-in, sessions, rate limits, headers, proxies), read from the environment.

Parsed by :meth:`levqor_host.config.Config.from_env` into ``Config.security``; every name and
default is listed in docs/security.md. Every default is safe on a laptop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from limits import parse_many

#: Per-plan limits for authenticated callers, overridable with LEVQOR_RATE_LIMITS_<PLAN>.
DEFAULT_PLAN_LIMITS = {
    "free": "100/minute",
    "pro": "600/minute",
    "business": "1200/minute",
}
PLAN_PREFIX = "LEVQOR_RATE_LIMITS_"

DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None


def _user_default_limit(env: Mapping[str, str]) -> str:
    """The per-user limit for a plan without a `LEVQOR_RATE_LIMITS_<PLAN>` tier.

    `LEVQOR_RATE_LIMIT_GLOBAL`, its old name, is still read when the new one is unset: it never was a
    global limit (each signed-in user has their own counter).
    """
    if env.get("LEVQOR_RATE_LIMIT_USER_DEFAULT") or not env.get("LEVQOR_RATE_LIMIT_GLOBAL"):
        return _limit(env, "LEVQOR_RATE_LIMIT_USER_DEFAULT", "100/minute")
    logging.getLogger("levqor.config").warning(
        "LEVQOR_RATE_LIMIT_GLOBAL is deprecated: it is the per-user limit for plans without their own "
        "tier; set LEVQOR_RATE_LIMIT_USER_DEFAULT instead"
    )
    return _limit(env, "LEVQOR_RATE_LIMIT_GLOBAL", "100/minute")


def _limit(env: Mapping[str, str], key: str, default: str) -> str:
    raw = (env.get(key) or default).strip()
    try:
        parse_many(raw)
    except ValueError:
        raise ValueError(
            f"{key} must be a rate limit such as '100/minute' or '5 per minute', got {raw!r}"
        ) from None
    return raw


@dataclass
class SecuritySettings:
    # ---- Supabase JWT sign-in
    supabase_jwt_secret: str | None = None
    supabase_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None
    jwt_leeway: int = 30
    jwks_cache_seconds: int = 600
    jwks_refetch_seconds: int = 300
    # ---- host sessions
    session_ttl: int = 14 * 24 * 3600
    login_link_ttl: int = 15 * 60
    # ---- rate limits
    rate_limits: bool = True
    rate_limit_storage: str = "memory://"
    rate_limit_strategy: str = "fixed-window"
    rate_limit_prefix: str = "levqor"
    rate_limit_user_default: str = "100/minute"
    rate_limit_ip: str = "20/minute"
    rate_limit_signin: str = "5/minute"
    rate_limit_billing: str = "10/minute"
    rate_limit_webhook: str = "60/minute"
    plan_limits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PLAN_LIMITS))
    # ---- proxies and headers
    trusted_proxies: int = 0
    hsts_max_age: int = 31536000
    csp: str = DEFAULT_CSP

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_algorithms) and bool(self.jwt_issuer)

    @property
    def jwks_url(self) -> str | None:
        return f"{self.supabase_url}/auth/v1/.well-known/jwks.json" if self.supabase_url else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SecuritySettings:
        secret = env.get("SUPABASE_JWT_SECRET") or None
        url = (env.get("SUPABASE_URL") or "").strip().rstrip("/") or None
        raw_algs = env.get("LEVQOR_JWT_ALGORITHMS")
        if raw_algs:
            algs = tuple(a.strip().upper() for a in raw_algs.split(",") if a.strip())
        else:
            algs = (("HS256",) if secret else ()) + (("ES256", "RS256") if url else ())
        bad = [a for a in algs if a not in ("HS256", "ES256", "RS256")]
        if bad:
            raise ValueError(
                f"LEVQOR_JWT_ALGORITHMS accepts HS256, ES256 and RS256, got {', '.join(bad)}"
            )
        if "HS256" in algs and not secret:
            raise ValueError("LEVQOR_JWT_ALGORITHMS lists HS256: set SUPABASE_JWT_SECRET")
        if any(a != "HS256" for a in algs) and not url:
            raise ValueError("LEVQOR_JWT_ALGORITHMS lists ES256/RS256: set SUPABASE_URL")
        issuer = (env.get("LEVQOR_JWT_ISSUER") or "").strip() or (f"{url}/auth/v1" if url else None)
        mode = (env.get("LEVQOR_RATE_LIMITS") or "on").strip().lower()
        if mode not in ("on", "off", "1", "0", "true", "false"):
            raise ValueError("LEVQOR_RATE_LIMITS must be on or off")
        plans = dict(DEFAULT_PLAN_LIMITS)
        for k in env:
            if k.startswith(PLAN_PREFIX) and len(k) > len(PLAN_PREFIX):
                plans[k[len(PLAN_PREFIX) :].lower()] = _limit(env, k, "")
        storage = (env.get("LEVQOR_RATE_LIMIT_STORAGE") or "memory://").strip()
        if not storage.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
            raise ValueError("LEVQOR_RATE_LIMIT_STORAGE must be memory:// or a redis:// URL")
        strategy = (env.get("LEVQOR_RATE_LIMIT_STRATEGY") or "fixed-window").strip()
        if strategy not in ("fixed-window", "moving-window", "sliding-window-counter"):
            raise ValueError(
                "LEVQOR_RATE_LIMIT_STRATEGY must be fixed-window, moving-window or "
                "sliding-window-counter"
            )
        if _int(env, "LEVQOR_JWKS_REFETCH_SECONDS", 300) < 0:
            raise ValueError("LEVQOR_JWKS_REFETCH_SECONDS must be 0 or more")
        proxies = _int(env, "LEVQOR_TRUSTED_PROXIES", 0)
        if proxies < 0:
            raise ValueError("LEVQOR_TRUSTED_PROXIES must be 0 or more")
        return cls(
            supabase_jwt_secret=secret,
            supabase_url=url,
            jwt_algorithms=algs,
            jwt_audience=(env.get("LEVQOR_JWT_AUDIENCE") or "authenticated").strip(),
            jwt_issuer=issuer,
            jwt_leeway=_int(env, "LEVQOR_JWT_LEEWAY", 30),
            jwks_cache_seconds=_int(env, "LEVQOR_JWKS_CACHE_SECONDS", 600),
            jwks_refetch_seconds=_int(env, "LEVQOR_JWKS_REFETCH_SECONDS", 300),
            session_ttl=_int(env, "LEVQOR_SESSION_TTL", 14 * 24 * 3600),
            login_link_ttl=_int(env, "LEVQOR_LOGIN_LINK_TTL", 15 * 60),
            rate_limits=mode in ("on", "1", "true"),
            rate_limit_storage=storage,
            rate_limit_strategy=strategy,
            rate_limit_prefix=(env.get("LEVQOR_RATE_LIMIT_PREFIX") or "levqor").strip(),
            rate_limit_user_default=_user_default_limit(env),
            rate_limit_ip=_limit(env, "LEVQOR_RATE_LIMIT_IP", "20/minute"),
            rate_limit_signin=_limit(env, "LEVQOR_RATE_LIMIT_SIGNIN", "5/minute"),
            rate_limit_billing=_limit(env, "LEVQOR_RATE_LIMIT_BILLING", "10/minute"),
            rate_limit_webhook=_limit(env, "LEVQOR_RATE_LIMIT_WEBHOOK", "60/minute"),
            plan_limits=plans,
            trusted_proxies=proxies,
            hsts_max_age=_int(env, "LEVQOR_HSTS_MAX_AGE", 31536000),
            csp=(env.get("LEVQOR_CSP") or DEFAULT_CSP).strip(),
        )
