"""Fixtures of the tests in tests/ (helpers live in e2e_support.py)."""

from e2e_support import release_after_test  # noqa: F401 - autouse: a test's databases go after it
