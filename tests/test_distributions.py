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
    "import json; from levqor_kernel.plugins import make_plugin_manager; pm = make_plugin_manager(schema_cache_dir=None); "
    "print(json.dumps({'connectors': sorted(pm.catalog.connectors), "
    "'failures': [f.to_dict() for f in pm.failures], "
    "'dists': sorted({c.dist for c in pm.catalog})}))"
)


def pip(venv, *args):
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True)


def probe(venv) -> dict:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
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


def _distributions() -> list:
    return [ROOT / "kernel", ROOT / "host", *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())]


def test_every_distribution_ships_the_one_license_and_a_bounded_kernel_range():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    root_license = (ROOT / "LICENSE").read_text()
    assert "Apache License" in root_license and "Version 2.0" in root_license
    kernel_version = Version(tomllib.loads((ROOT / "kernel" / "pyproject.toml").read_text())["project"]["version"])
    for dist in _distributions():
        project = tomllib.loads((dist / "pyproject.toml").read_text())["project"]
        assert project["license"] == "Apache-2.0", dist.name
        assert (dist / "LICENSE").read_text() == root_license, dist.name
        if project["name"] == "levqor-kernel":
            continue
        (kernel,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "levqor-kernel"]
        bounds = {s.operator for s in kernel.specifier}
        assert ">=" in bounds and "<" in bounds, f"{dist.name}: levqor-kernel needs a compatible range, got {kernel}"
        assert kernel.specifier.contains(kernel_version), f"{dist.name}: {kernel} excludes the kernel {kernel_version}"


@pytest.mark.slow
def test_a_built_wheel_carries_its_license(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT / "plugins" / "levqor-slack")], check=True)
    import zipfile

    (wheel,) = tmp_path.glob("levqor_slack-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in meta
