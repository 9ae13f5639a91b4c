"""Levqor host: the Flask application, store, executor, scheduler and CLI."""

from __future__ import annotations

__version__ = "0.1.0"


def create_app(config=None):
    """Build a Levqor Flask application (see :func:`levqor_host.app.create_app`)."""
    from levqor_host.app import create_app as _c

    return _c(config)


__all__ = ["__version__", "create_app"]
