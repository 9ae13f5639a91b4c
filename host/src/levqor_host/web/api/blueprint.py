"""The ``api`` blueprint (``/api/v1``) and what its route modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app

from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_host.services import Services

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def state() -> Services:
    """The app's service object."""
    return current_app.extensions["levqor"]


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def iso(v: Any) -> Any:
    """A timestamp as ISO 8601 (other values as they are)."""
    return v.isoformat() if hasattr(v, "isoformat") else v
