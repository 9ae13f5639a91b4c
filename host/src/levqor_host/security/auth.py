"""API key authentication (``Authorization: Bearer lvq_...``) and scopes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from ..errors import ApiError

SCOPES = (
    "pipelines:read",
    "pipelines:write",
    "runs:execute",
    "credentials:write",
    "billing",
    "admin",
)
DEFAULT_SCOPES = (
    "pipelines:read",
    "pipelines:write",
    "runs:execute",
    "credentials:write",
    "billing",
)


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="levqor"'}
    )


def current_user() -> dict:
    return g.levqor_user


def authenticate() -> tuple[dict, dict]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("send an API key as 'Authorization: Bearer lvq_...'")
    state = current_app.extensions["levqor"]
    found = state.store.authenticate_key(token.strip())
    if found is None:
        raise _unauthorized("invalid or revoked API key")
    return found


def require(scope: str | None = None) -> Callable:
    """Decorator: the route needs a valid API key (with ``scope`` when given)."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user, key = authenticate()
            scopes = set(key.get("scopes") or ())
            if scope and scope not in scopes and "admin" not in scopes:
                raise ApiError(
                    403,
                    "insufficient_scope",
                    f"this API key lacks the scope {scope!r}",
                    {"required_scope": scope},
                )
            g.levqor_user, g.levqor_key = user, key
            return fn(*args, **kwargs)

        wrapper.levqor_scope = scope  # type: ignore[attr-defined]
        return wrapper

    return deco
