"""The connector SDK: `levqor connector new` and `levqor connector check`, as an author runs them."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from e2e_support import clean_env
from levqor_host import hookspecs as host_hookspecs
from levqor_host.scaffold import Names, ScaffoldError, default_parent, find_repo, scaffold

ROOT = Path(__file__).resolve().parents[2]


def levqor(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    base = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        cwd=cwd,
        env={**base, "LEVQOR_CACHE_DIR": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def layered_venv(path: Path) -> Path:
    """A fresh venv (no pip of its own) that also sees this test venv's packages.

    Installing into it never touches the shared .venv, and its site-packages is a real site
    dir, so an editable install's .pth file works exactly as in an author's own venv.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    py = path / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_levqor_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return py


def test_new_then_pip_install_e_then_pytest_then_levqor_plugins(tmp_path):
    out = levqor("connector", "new", "zebra-notes", "--dir", str(tmp_path), "--author", "Ada")
    assert out.returncode == 0, out.stderr
    proj = tmp_path / "levqor-zebra-notes"
    assert f"created {proj}" in out.stdout
    files = {str(p.relative_to(proj)) for p in proj.rglob("*") if p.is_file()}
    assert {
        "pyproject.toml",
        "README.md",
        ".gitignore",
        "src/levqor_zebra_notes/__init__.py",
        "tests/test_zebra_notes.py",
    } <= files
    pp = (proj / "pyproject.toml").read_text()
    assert 'zebra_notes = "levqor_zebra_notes"' in pp and '"levqor"' in pp
    from levqor_kernel import __version__

    major, minor = __version__.split(".")[:2]  # this kernel's major version, from this minor on
    assert f'dependencies = ["levqor-kernel>={major}.{minor},<{int(major) + 1}"]' in pp and "hatchling" in pp
    assert "ConnectorContract" in (proj / "tests" / "test_zebra_notes.py").read_text()

    py = layered_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(proj),
        ],
        check=True,
        env=env,
    )
    r = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout  # the contract kit + three fake-server tests
    listed = subprocess.run(
        [str(py), "-m", "levqor_host.cli", "plugins", "--json"],
        env={**env, "LEVQOR_CACHE_DIR": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    z = plugins["zebra_notes"]
    assert z["distribution"] == "levqor-zebra-notes" and z["version"] == "0.1.0"
    assert z["connectors"] == ["zebra_notes"] and "run_task" in z["hooks"]
    # editable: a change to the source is live without reinstalling
    init = proj / "src" / "levqor_zebra_notes" / "__init__.py"
    init.write_text(init.read_text().replace('"title": "Zebra Notes"', '"title": "Zebra Notes 2"'))
    probe = subprocess.run(
        [str(py), "-c", "import levqor_zebra_notes as m; print(m.describe_schema()[0]['title'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "Zebra Notes 2"


def test_names_and_refusals(tmp_path):
    n = Names.from_arg("levqor-acme-notes")
    assert (n.name, n.dist, n.module, n.title, n.env) == (
        "acme_notes",
        "levqor-acme-notes",
        "levqor_acme_notes",
        "Acme Notes",
        "LEVQOR_ACME_NOTES_API_BASE",
    )
    for bad in ("", "1abc", "Acme!", "a b", "x" * 60, "a--b", "../evil"):
        with pytest.raises(ScaffoldError):
            Names.from_arg(bad)
    scaffold("acme", tmp_path)
    with pytest.raises(ScaffoldError, match="already exists"):
        scaffold("acme", tmp_path)
    r = levqor("connector", "new", "Bad Name!", "--dir", str(tmp_path))
    assert r.returncode != 0 and "not a usable connector name" in r.stderr


def test_default_location_is_plugins_inside_a_checkout_else_the_current_folder(tmp_path):
    assert find_repo(ROOT / "host" / "src") == ROOT
    assert default_parent(ROOT / "docs") == ROOT / "plugins"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    assert default_parent(elsewhere) == elsewhere
    r = levqor("connector", "new", "okapi", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "levqor-okapi" / "src" / "levqor_okapi" / "__init__.py").is_file()


def test_check_prints_what_an_author_must_fix(tmp_path):
    proj = scaffold("wombat", tmp_path)
    pp = proj / "pyproject.toml"
    pp.write_text(
        pp.read_text()
        .replace('keywords = ["levqor", "levqor-connector", "wombat"]', 'keywords = ["wombat"]')
        .replace('name = "levqor-wombat"', 'name = "wombat-connector"')
    )
    init = proj / "src" / "levqor_wombat" / "__init__.py"
    src = init.read_text()
    src = re.sub(r'\n\s*"kernel": "[^"]*",', "", src)  # no supported kernel versions
    # swallow every upstream error: the connector no longer fails closed
    src = src.replace(
        "    resp = context.http.request(", "    try:\n        resp = context.http.request("
    )
    src = src.replace(
        "        detail=_error_message,\n    )\n",
        '        detail=_error_message,\n    )\n    except Exception:\n        return {"id": "?"}\n',
    )
    init.write_text(src)
    r = levqor("connector", "check", str(proj))
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "should start with 'levqor-'" in out
    assert 'add "levqor" to keywords' in out
    assert "does not declare the kernel versions it supports" in out
    assert "401 fails closed with a credential error: returned" in out
    assert "503 is retryable: returned" in out
    assert "the project's contract tests fail" in out
    # and nothing about what is right
    assert "depend on levqor-kernel" not in out and "entry point" not in out


def test_every_host_hook_has_a_section_in_the_connector_guide():
    docs = (ROOT / "docs" / "connectors.md").read_text()
    specs = [
        n
        for n, f in inspect.getmembers(host_hookspecs, inspect.isfunction)
        if hasattr(f, "levqor_spec")
    ]
    assert sorted(specs) == ["register_blueprints", "register_commands", "register_dashboard_pages"]
    for name in specs:
        assert f"### `{name}`" in docs, f"host hookspec {name} has no section in docs/connectors.md"


def run_project_tests(proj: Path) -> subprocess.CompletedProcess:
    """The generated project's own tests, imported from its src/ (as `pip install -e` would)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(proj / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_new_with_triggers_and_oauth_then_pip_install_e_then_pytest(tmp_path):
    out = levqor(
        "connector", "new", "yak-feed", "--dir", str(tmp_path), "--author", "Ada",
        "--trigger", "polling", "--trigger", "instant", "--oauth",
    )
    assert out.returncode == 0, out.stderr
    proj = tmp_path / "levqor-yak-feed"
    files = {str(p.relative_to(proj)) for p in proj.rglob("*") if p.is_file()}
    assert {
        "src/levqor_yak_feed/__init__.py",
        "src/levqor_yak_feed/fake.py",
        "tests/test_yak_feed.py",
        "tests/test_yak_feed_triggers.py",
        "tests/test_yak_feed_oauth.py",
    } <= files
    assert not [f for f in files if "__LQ_" in (proj / f).read_text() or "#[" in (proj / f).read_text()]
    py = layered_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(proj)],
        check=True,
        env=env,
    )
    r = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # the base contract + 3 tests, 3 polling and 4 instant trigger checks, 4 OAuth2 checks + 1 test
    assert "16 passed" in r.stdout
    for check in (
        "TestNewItem::test_levqor_contract_polling_baseline_and_new_items",
        "TestItemCreated::test_levqor_contract_instant_deliveries",
        "TestOAuth::test_levqor_contract_oauth_bearer",
    ):
        assert f"PASSED tests/test_yak_feed_{'oauth' if 'OAuth' in check else 'triggers'}.py::{check}" in r.stdout
    listed = subprocess.run(
        [str(py), "-m", "levqor_host.cli", "plugins", "--json"],
        env={**env, "LEVQOR_CACHE_DIR": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    y = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}["yak_feed"]
    assert {"poll_trigger", "register_trigger", "unregister_trigger", "receive_delivery",
            "oauth_credentials"} <= set(y["hooks"])
    r = levqor("connector", "check", str(proj), "--json")
    report = json.loads(r.stdout)
    assert report["ok"] and report["notes"] == [], report


@pytest.mark.parametrize(
    "options,files,passed",
    [
        (["--trigger", "polling"], {"fake.py", "test_{n}_triggers.py"}, "7 passed"),
        (["--trigger", "instant"], {"fake.py", "test_{n}_triggers.py"}, "8 passed"),
        (["--oauth"], {"fake.py", "test_{n}_oauth.py"}, "9 passed"),
        ([], set(), "4 passed"),
    ],
)
def test_each_option_alone_generates_a_package_that_passes_its_tests(tmp_path, options, files, passed):
    proj = scaffold("gnu", tmp_path, triggers=[o for o in options if o != "--trigger" and o != "--oauth"],
                    oauth="--oauth" in options)
    made = {p.name for p in proj.rglob("*.py")}
    optional = {"fake.py", "test_gnu_triggers.py", "test_gnu_oauth.py"}
    assert made & optional == {f.format(n="gnu") for f in files}
    init = (proj / "src" / "levqor_gnu" / "__init__.py").read_text()
    assert ("def poll_trigger" in init) == ("polling" in options)
    assert ("def receive_delivery" in init) == ("instant" in options)
    assert ('"oauth2": OAUTH2' in init) == ("--oauth" in options)
    r = run_project_tests(proj)
    assert r.returncode == 0, r.stdout + r.stderr
    assert passed in r.stdout


@pytest.mark.parametrize(
    "before,after,caught",
    [
        # the cursor never moves
        ('state={"after": after})', 'state={"after": 0})', "the state (cursor) advances"),
        # the signature is checked only when there is one
        ('if not secret or not hmac.compare_digest(delivery.header("X-Signature") or "", expected):',
         'if delivery.header("X-Signature") and not hmac.compare_digest(delivery.header("X-Signature"), expected):',
         "a delivery without its headers and query raises SignatureError: it was accepted"),
        # one item per delivery instead of one per event
        ("        for e in events\n", "        for e in events[:1]\n", "gives 3 items: it gave 1 items"),
        # a connected account (OAuth2) refused before any call: no bearer token goes out
        ('return bearer(credentials)', 'raise CredentialError("no")', "made no request to the fake"),
    ],
)
def test_the_generated_tests_catch_a_broken_trigger_or_oauth(tmp_path, before, after, caught):
    proj = scaffold("ibex", tmp_path, triggers=["polling", "instant"], oauth=True)
    init = proj / "src" / "levqor_ibex" / "__init__.py"
    src = init.read_text()
    assert src.count(before) == 1, before
    init.write_text(src.replace(before, after))
    r = run_project_tests(proj)
    assert r.returncode == 1, r.stdout + r.stderr
    assert caught in r.stdout


def test_unknown_trigger_kinds_are_refused(tmp_path):
    with pytest.raises(ScaffoldError, match="unknown trigger kind 'cron'"):
        scaffold("acme", tmp_path, triggers=["cron"])
    r = levqor("connector", "new", "acme", "--dir", str(tmp_path), "--trigger", "cron")
    assert r.returncode != 0 and "'cron' is not one of 'polling', 'instant'" in r.stderr
