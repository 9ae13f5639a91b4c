"""OAuth2 credentials: the shape the host stores after "Connect", and how a connector reads it.

A connector that declares ``oauth2`` in its description accepts this shape as one variant of
its credentials schema::

    "credentials": {"anyOf": [SERVICE_ACCOUNT_SCHEMA, OAUTH2_CREDENTIALS]}

The host fills it from the token endpoint's answer (plus what ``oauth_credentials`` adds),
refreshes ``access_token`` before ``expires_at``, and hands it to ``run_task`` and the trigger
hooks like any credential. A connector sends ``Authorization: Bearer <access_token>``
(:func:`bearer`) and raises a ``CredentialError`` with status 401 when the upstream refuses it:
the host then refreshes once and calls again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import CredentialError

__all__ = ["OAUTH2_CREDENTIALS", "bearer", "is_oauth", "sample_oauth_credentials"]

#: The JSON Schema of a stored OAuth2 credential. Extra fields (a team id, a workspace id, the
#: account's email) are allowed: ``oauth_credentials`` adds them.
OAUTH2_CREDENTIALS: dict[str, Any] = {
    "type": "object",
    "title": "Connected account (OAuth2)",
    "required": ["auth", "access_token"],
    "properties": {
        "auth": {"const": "oauth2"},
        "access_token": {"type": "string", "minLength": 1, "writeOnly": True},
        "refresh_token": {"type": "string", "minLength": 1, "writeOnly": True},
        "token_type": {"type": "string"},
        "expires_at": {
            "type": "number",
            "description": "Unix time the access token expires (absent: it does not expire)",
        },
        "scope": {"type": "string"},
        "account": {"type": "string", "description": "The connected account, as shown to the user"},
    },
}


def sample_oauth_credentials() -> dict[str, Any]:
    """A well-formed OAuth2 credential (the catalog checks a connector's schema accepts it)."""
    return {
        "auth": "oauth2",
        "access_token": "sample-access-token",
        "refresh_token": "sample-refresh-token",
        "token_type": "Bearer",
        "expires_at": 4102444800,
        "scope": "",
        "account": "user@example.com",
    }


def is_oauth(credentials: Mapping[str, Any] | None) -> bool:
    """True when ``credentials`` came from "Connect" (the OAuth2 variant)."""
    return isinstance(credentials, Mapping) and credentials.get("auth") == "oauth2"


def bearer(credentials: Mapping[str, Any] | None) -> str:
    """The access token of an OAuth2 credential, or a :class:`CredentialError` (never echoing it)."""
    token = credentials.get("access_token") if is_oauth(credentials) else None
    if not isinstance(token, str) or not token:
        raise CredentialError(
            "this credential has no OAuth2 access token: connect the account again",
            code="missing_credentials",
        )
    return token
