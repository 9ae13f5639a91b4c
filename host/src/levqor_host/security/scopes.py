"""The scopes an API key can hold (no Flask: the CLI makes keys too)."""

from __future__ import annotations

#: every scope; ``admin`` only for admins
SCOPES = (
    "pipelines:read",
    "pipelines:write",
    "runs:execute",
    "credentials:write",
    "billing",
    "admin",
)
#: every scope but ``admin``: what a key holds unless asked otherwise
DEFAULT_SCOPES = tuple(s for s in SCOPES if s != "admin")


def scopes_for(is_admin: bool) -> list[str]:
    """The scopes of a key made for a user without naming them: admin too for an admin."""
    return list(SCOPES) if is_admin else list(DEFAULT_SCOPES)
