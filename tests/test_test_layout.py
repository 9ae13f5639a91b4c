"""Each distribution's tests run alone: the kernel's tests import no host and no plugin, a
plugin's tests import only the kernel and their own plugin. Tests that need several
distributions live in tests/integration."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from e2e_support import ROOT

PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())


def _package_of(dist: Path) -> set[str]:
    return {p.name for p in (dist / "src").iterdir() if (p / "__init__.py").exists()}


# the top-level modules of each distribution, and the helpers of the cross-distribution tests
HOST = _package_of(ROOT / "host")
PLUGIN_MODULES = {p.name: _package_of(p) for p in PLUGINS}
TEST_HELPERS = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"browser", "security"}


def imported_modules(path: Path) -> set[str]:
    """The top-level names a file imports: import statements anywhere in it, and the string
    given to pytest.importorskip / importlib.import_module / __import__."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in {"importorskip", "import_module", "__import__"} and isinstance(
                node.args[0].value, str
            ):
                found.add(node.args[0].value.split(".")[0])
    return found


def _offences(tests: Path, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(tests.rglob("*.py"))
        for name in sorted(imported_modules(path) & forbidden)
    ]


def test_the_kernels_tests_import_no_host_no_plugin_and_no_cross_distribution_helper():
    forbidden = HOST | TEST_HELPERS | set().union(*PLUGIN_MODULES.values())
    assert _offences(ROOT / "kernel" / "tests", forbidden) == []


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugins_tests_import_only_the_kernel_and_the_plugin(plugin: Path):
    assert (plugin / "tests").is_dir(), f"{plugin.name} has no tests of its own"
    others = set().union(*(m for name, m in PLUGIN_MODULES.items() if name != plugin.name))
    assert _offences(plugin / "tests", HOST | TEST_HELPERS | others) == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import levqor_slack.fake\n"
        "from levqor_host import app\n"
        "def test_x():\n"
        "    from e2e_support import make_app\n"
        "    import pytest\n"
        "    pytest.importorskip('levqor_stripe')\n"
        "from . import sibling\n"
    )
    assert imported_modules(probe) == {
        "levqor_slack",
        "levqor_host",
        "e2e_support",
        "pytest",
        "levqor_stripe",
    }
    assert "levqor_slack" in PLUGIN_MODULES["levqor-slack"] and "levqor_host" in HOST


@pytest.mark.slow
def test_the_kernel_and_a_plugin_pass_their_tests_alone(tmp_path: Path):
    """scripts/test-alone: a fresh environment with only the distribution, its declared
    dependencies and the test tools, then its tests."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["LEVQOR_ALONE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [str(ROOT / "scripts" / "test-alone"), "kernel", "plugins/levqor-slack", "--", "-x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "== scripts/test-alone: kernel passed" in done.stdout
    assert "== scripts/test-alone: plugins/levqor-slack passed" in done.stdout
    # only what the plugin declares: neither the host nor another connector is installed
    listed = subprocess.run(
        [str(tmp_path / "levqor-slack" / "bin" / "python"), "-m", "pip", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "levqor-slack" in listed and "levqor-kernel" in listed
    assert "levqor " not in listed and "flask" not in listed and "levqor-http" not in listed


def test_the_import_contracts_hold():
    """lint-imports (pyproject.toml's [tool.importlinter]), as CI runs it."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = [c["name"] for c in contracts["contracts"]]
    assert len(names) >= 5  # the distributions' arrows and the domain's freedom from Flask
    for name in names:
        assert f"{name} KEPT" in done.stdout, done.stdout
    assert f"{len(names)} kept, 0 broken" in done.stdout, done.stdout
