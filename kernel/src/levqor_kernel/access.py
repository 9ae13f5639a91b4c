"""Who may call a web route: a declaration the route's view function carries.

Every route the host serves, its own and those a plugin adds through ``register_blueprints``,
declares its access with one of these decorators (put it under the Flask route decorator)::

    @bp.post("/checkout")
    @requires("billing")
    def checkout(): ...

The host reads the declaration before the view runs and enforces it (401 without credentials,
403 ``insufficient_scope`` naming the scope); a route that declares nothing is closed. The
kernel only records the declaration (no Flask here), so plugins need not import the host.

* ``requires(scope)``: a signed-in caller (API key, sign-in token or dashboard session) whose
  scopes include ``scope`` (``admin`` includes every scope).
* ``signed_in()``: any signed-in caller, whatever its scopes; only for routes that read the
  caller's own account (the host refuses it on anything but GET).
* ``session_only()``: a dashboard session (cookie and its CSRF token), never an API key or token.
* ``public(reason)``: no credentials; ``reason`` says what protects the route instead (a
  signature, a one-time token, nothing to protect). Public routes are reviewed by a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: the attribute holding the declaration on a view function
ATTRIBUTE = "levqor_access"

Kind = Literal["scope", "signed_in", "session", "public"]


@dataclass(frozen=True)
class Access:
    """One route's declaration: ``kind``, the ``scope`` it needs, why it is ``public``."""

    kind: Kind
    scope: str | None = None
    reason: str | None = None


def _mark(access: Access) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        setattr(fn, ATTRIBUTE, access)
        return fn

    return deco


def requires(scope: str) -> Callable[[F], F]:
    """The route needs a signed-in caller holding ``scope``."""
    if not isinstance(scope, str) or not scope:
        raise ValueError("requires() needs a scope name, such as 'pipelines:read'")
    return _mark(Access("scope", scope=scope))


def signed_in() -> Callable[[F], F]:
    """The route needs a signed-in caller, any scopes (reads of the caller's own account)."""
    return _mark(Access("signed_in"))


def session_only() -> Callable[[F], F]:
    """The route needs the dashboard's session cookie (with its CSRF token on changes)."""
    return _mark(Access("session"))


def public(reason: str) -> Callable[[F], F]:
    """The route answers without credentials; ``reason`` says why that is safe."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("public() needs the reason the route may answer anyone")
    return _mark(Access("public", reason=reason))


def access_of(view: Callable[..., Any] | None) -> Access | None:
    """The declaration ``view`` carries, or None."""
    found = getattr(view, ATTRIBUTE, None)
    return found if isinstance(found, Access) else None
