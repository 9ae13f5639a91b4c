"""pytest plugin registered by levqor-kernel (entry point ``pytest11: levqor``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fakeserver import FakeServer


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A started :class:`~levqor_kernel.testing.FakeServer` on 127.0.0.1."""
    with FakeServer() as srv:
        yield srv
