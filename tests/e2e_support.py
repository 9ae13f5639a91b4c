"""Shared fixtures for the end-to-end tests."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def require_services() -> bool:
    return os.environ.get("LEVQOR_REQUIRE_SERVICES") == "1"


def extract_files(markdown: str) -> dict[str, str]:
    """Code blocks written as ```lang file=path ... ``` in a markdown page, by path."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^```[\w-]* file=(\S+)\n(.*?)^```\s*$", markdown, re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


@pytest.fixture
def root() -> Path:
    return ROOT
