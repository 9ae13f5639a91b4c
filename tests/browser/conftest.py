"""Fixtures of the browser tests (Chromium + Playwright against `levqor serve`): see
tests/browser_support.py."""

from browser_support import browser, chromium, console, dash, page  # noqa: F401
