from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest


def write_dist(
    root: Path, dist: str, ep_name: str, module: str, source: str, version: str = "1.0"
) -> None:
    """Lay out a real installed distribution (dist-info + module) under ``root``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: test plugin\n"
    )
    (info / "entry_points.txt").write_text(f"[levqor]\n{ep_name} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path where tests install throwaway distributions."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in list(sys.modules):
        if name.startswith("lvqtest_"):
            del sys.modules[name]


CONNECTOR_SRC = """
from levqor_kernel import hookimpl

@hookimpl
def describe_schema():
    return [{{
        "name": "{name}",
        "title": "{name} connector",
        "description": "test connector",
        "categories": ["test"],
        "credentials": None,
        "actions": {{"echo": {{
            "title": "Echo",
            "payload": {{"type": "object", "properties": {{"text": {{"type": "string"}}}}, "additionalProperties": False}},
            "output": {{"type": "object"}},
            "example": {{"text": "hi"}},
            "price": 2,
        }}}},
    }}]

@hookimpl
def run_task(connector, action, payload, credentials, context):
    return {{"echo": payload.get("text"), "by": "{name}", "key": context.idempotency_key}}
"""


@pytest.fixture
def make_dist(site):
    """``make_dist(dist, ep_name, module, source=None, version="1.0", connector=None)``."""

    def make(
        dist: str,
        ep_name: str,
        module: str,
        source: str | None = None,
        version: str = "1.0",
        connector: str | None = None,
    ) -> None:
        write_dist(
            site,
            dist,
            ep_name,
            module,
            source or CONNECTOR_SRC.format(name=connector or ep_name),
            version,
        )

    return make


@pytest.fixture
def connector_src() -> str:
    return CONNECTOR_SRC
