"""Each connector is its own pip-installable distribution, found through the `levqor` entry points.

In a fresh virtual environment: kernel + slack lists core and slack only; installing all the
connectors lists all seven; uninstalling one removes it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from e2e_support import ROOT

CONNECTORS = {
    "levqor-slack": "slack",
    "levqor-notion": "notion",
    "levqor-sheets": "sheets",
    "levqor-telegram": "telegram",
    "levqor-gmail": "gmail",
    "levqor-http": "http",
}

PROBE = (
    "import json; from levqor_kernel.plugins import make_plugin_manager; pm = make_plugin_manager(); "
    "print(json.dumps({'connectors': sorted(pm.catalog.connectors), "
    "'failures': [f.to_dict() for f in pm.failures], "
    "'dists': sorted({c.dist for c in pm.catalog})}))"
)


def pip(venv, *args):
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True)


def probe(venv) -> dict:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "LEVQOR_CACHE_DIR": ""})
    return json.loads(out.stdout)


@pytest.mark.slow
def test_connectors_install_and_uninstall_as_distributions(tmp_path):
    missing = [d for d in CONNECTORS if not (ROOT / "plugins" / d / "pyproject.toml").exists()]
    assert not missing, f"connector distributions missing: {missing}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, "hatchling")
    pip(venv, "--no-build-isolation", str(ROOT / "kernel"), str(ROOT / "plugins" / "levqor-slack"))
    first = probe(venv)
    assert first["connectors"] == ["core", "slack"], first
    assert first["failures"] == []
    pip(venv, "--no-build-isolation", *[str(ROOT / "plugins" / d) for d in CONNECTORS if d != "levqor-slack"])
    everything = probe(venv)
    assert everything["connectors"] == sorted(["core", *CONNECTORS.values()]), everything
    assert everything["failures"] == []
    assert set(everything["dists"]) == {"levqor-kernel", *CONNECTORS}
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "levqor-notion"], check=True)
    after = probe(venv)
    assert "notion" not in after["connectors"]
    assert after["connectors"] == sorted(["core", *(c for c in CONNECTORS.values() if c != "notion")])
