"""One config: the host's config module is the only reader of the environment in the host and
the kernel, and docs/configuration.md lists exactly what it reads, by section, with its default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from e2e_support import ROOT
from levqor_host.config import EnvReader, read

CONFIG_MODULE = ROOT / "host" / "src" / "levqor_host" / "config.py"
ENV_FUNCTIONS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(path: Path) -> list[str]:
    """``os.environ``, ``os.getenv`` and their kin, used or imported, as ``line: code``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENV_FUNCTIONS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append(f"{node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{node.lineno}: from os import {a.name}" for a in node.names if a.name in ENV_FUNCTIONS]
    return found


@pytest.mark.parametrize("tree", ["host/src", "kernel/src"])
def test_only_the_config_module_reads_the_environment(tree):
    offenders = {
        str(p.relative_to(ROOT)): reads
        for p in sorted((ROOT / tree).rglob("*.py"))
        if p != CONFIG_MODULE and (reads := environment_reads(p))
    }
    assert offenders == {}, "read the setting in levqor_host/config.py and hand it in"


def test_the_scan_finds_every_form_of_environment_read(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nfrom os import getenv, path\n"
        "a = os.environ['X']\nb = os.getenv('Y')\nc = getenv('Z')\nd = os.path.join('a')\n"
    )
    assert environment_reads(src) == ["2: from os import getenv", "3: os.environ", "4: os.getenv"]
    assert environment_reads(CONFIG_MODULE)  # the one reader reads it


# ---------------------------------------------------------------------- docs/configuration.md
def _documented(section_title: str) -> dict[str, list[str]]:
    """The rows of one table of docs/configuration.md: variable -> its other cells."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    body = text.split(f"## {section_title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        m = re.match(r"\| `([A-Z_<>]+)` \|(.*)\|$", line)
        if m:
            assert m[1] not in rows, f"{m[1]} is listed twice"
            rows[m[1]] = [c.strip() for c in m[2].split("|")]
    return rows


def _shown(default: object) -> str | None:
    """How a default reads in the table; None when the row words it (unset, derived)."""
    if default is None or default == "" or (isinstance(default, str) and len(default) > 40):
        return None
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def test_every_variable_the_host_reads_is_documented_with_its_section_and_default():
    reader = EnvReader({})
    read(reader)
    rows = _documented("Read by the host")
    assert set(rows) == set(reader.reads), "docs/configuration.md and config.py differ"
    for name, (section, default) in reader.reads.items():
        doc_section, doc_default, meaning = rows[name]
        assert doc_section == section, name
        assert meaning, name
        shown = _shown(default)
        assert shown is None or doc_default.startswith(shown), (name, doc_default, shown)


def test_every_plugin_variable_documented_is_read_by_a_plugin_or_the_kernel():
    sources = "\n".join(
        p.read_text()
        for tree in (ROOT / "plugins", ROOT / "kernel" / "src")
        for p in tree.rglob("*.py")
        if "tests" not in p.parts
    )
    for name in _documented("Read by plugins and connectors"):
        prefix = name.split("<", 1)[0]
        assert prefix in sources, f"{name} is documented but no plugin reads it"
