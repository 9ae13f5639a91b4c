"""Levqor host: the Flask application, store, executors, scheduler and CLI.

The app is built by :func:`levqor_host.app.create_app`; ``levqor_host.wsgi`` serves it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
