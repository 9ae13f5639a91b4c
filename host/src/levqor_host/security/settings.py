"""Security settings (vault key, sign-in, sessions, rate limits, headers, proxies).

Read by :meth:`levqor_host.config.Config.from_env` into ``Config.security``; every name and
default is listed in docs/configuration.md. Every default is safe on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class SecuritySettings:
    #: the vault key(s), comma separated, newest first (None: the key file in the data folder)
    secret_key: str | None = None
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
