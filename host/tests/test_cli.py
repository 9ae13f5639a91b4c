"""The `levqor` command, run as a real subprocess against a data folder."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import backend_env, clean_env, free_port, levqor, serve_env, serving

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    levqor(d, "db", "upgrade")
    levqor(d, "users", "create", "admin@example.com", "--admin")
    return d


def test_plugins_lists_installed_plugins_as_json(data):
    out = json.loads(levqor(data, "plugins", "--json").stdout)
    names = {p["name"] for p in out["plugins"]}
    assert "core" in names
    core = next(p for p in out["plugins"] if p["name"] == "core")
    assert core["distribution"] == "levqor-kernel" and "run_task" in core["hooks"]
    assert "failures" in out
    text = levqor(data, "plugins").stdout
    assert "core" in text and "connectors:" in text


def test_users_and_keys(data):
    out = levqor(data, "users", "create", "dev@example.com", "--with-key").stdout
    key = out.strip().splitlines()[-1]
    assert key.startswith("lvq_")
    listed = levqor(data, "users", "list").stdout
    assert "dev@example.com" in listed and "admin@example.com" in listed
    k2 = levqor(
        data, "keys", "create", "--user", "dev@example.com", "--scope", "pipelines:read"
    ).stdout.strip()
    assert k2.startswith("lvq_") and k2 != key
    keys = levqor(data, "keys", "list", "--user", "dev@example.com").stdout.splitlines()
    assert len(keys) == 2 and all(k2 not in line for line in keys)  # only prefixes are shown
    key_id = next(
        line.split()[0] for line in keys if "pipelines:read" in line and "runs:execute" not in line
    )
    assert "revoked" in levqor(data, "keys", "revoke", key_id, "--user", "dev@example.com").stdout
    assert "revoked" in levqor(data, "keys", "list", "--user", "dev@example.com").stdout
    assert levqor(data, "users", "create", "dev@example.com", check=False).returncode != 0


def test_pipelines_import_export_and_run_follow(data, tmp_path):
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "hello",
                "connector": "core",
                "action": "transform",
                "payload": {"value": "hi {{ trigger.who }}"},
            },
            {
                "id": "check",
                "connector": "core",
                "action": "filter",
                "payload": {
                    "conditions": [
                        {"left": "{{ steps.hello.output.value }}", "op": "contains", "right": "hi"}
                    ]
                },
            },
        ],
    }
    f = tmp_path / "hello.json"
    f.write_text(json.dumps({"name": "hello", "doc": doc}))
    pid = levqor(data, "pipelines", "import", str(f)).stdout.split()[0]
    assert "hello" in levqor(data, "pipelines", "list").stdout
    exported = json.loads(levqor(data, "pipelines", "export", pid).stdout)
    assert exported["doc"] == doc
    with serving(data, free_port(), serve_env(data)):
        out = levqor(data, "run", "hello", "--input", '{"who": "Ann"}', "--follow").stdout
    assert "hello" in out and "succeeded" in out.splitlines()[-1]
    lines = [json.loads(x) for x in (data / "data" / "jobs.jsonl").read_text().splitlines()]
    assert lines[-1]["status"] == "succeeded" and lines[-1]["pipeline_id"] == pid
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [{"id": "x", "connector": "ghost", "action": "a", "payload": {}}],
            }
        )
    )
    r = levqor(data, "pipelines", "import", str(bad), check=False)
    assert r.returncode != 0 and "/steps/0/connector" in r.stderr
    r = levqor(data, "run", pid, "--input", "{nope", check=False)
    assert r.returncode != 0 and "not JSON" in r.stderr


def test_vault_key_rotation_and_canary(data, tmp_path):
    from e2e_support import make_app

    # store a credential with the current key
    levqor(data, "users", "create", "c@example.com")
    app = make_app(tmp_path, start_workers=False)  # same data folder: tmp_path / "data"
    st = app.extensions["levqor"]
    user = st.store.users.get_by_email("c@example.com")
    # the vault encrypts whatever a credential holds: no connector needs to be installed
    conn = "http"
    st.store.credentials.create(user["id"], "k", conn, {"token": "plaintext-secret-value"})
    st.store.close()
    old_key = (data / "secret.key").read_text().strip()
    out = levqor(data, "keys", "rotate").stdout
    assert "re-encrypted" in out
    new_key = (data / "secret.key").read_text().strip()
    assert new_key != old_key
    # the new key reads the credential back
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    assert st.store.credentials.values(user["id"], "k") == (
        conn,
        {"token": "plaintext-secret-value"},
    )
    st.store.close()
    # start-up with the old key is refused by the canary, not run by run
    r = levqor(data, "db", "upgrade", env={"LEVQOR_SECRET_KEY": old_key}, check=False)
    r2 = levqor(data, "users", "list", env={"LEVQOR_SECRET_KEY": old_key}, check=False)
    assert r2.returncode != 0 and "key" in (r2.stderr + r2.stdout).lower()
    del r


def test_run_follow_without_a_worker_says_so(data, tmp_path):
    f = tmp_path / "t.json"
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1}}],
    }
    f.write_text(json.dumps(doc))
    levqor(data, "pipelines", "import", str(f))
    r = levqor(data, "run", "t", "--follow", "--timeout", "3", check=False)
    assert r.returncode != 0
    assert "still queued" in r.stderr and "levqor worker" in r.stderr


# ---------------------------------------------------------------- pipelines import: shapes and duplicates
def _names_and_ids(data: Path) -> list[tuple[str, str, str]]:
    """(id, version, name) of each pipeline `levqor pipelines list` shows."""
    out = []
    for line in levqor(data, "pipelines", "list").stdout.splitlines():
        pid, version, name = line.split(maxsplit=2)
        out.append((pid, version, name))
    return out


def test_pipelines_import_accepts_every_shape_and_refuses_silent_duplicates(data, tmp_path):
    def doc(value: str) -> dict:
        return {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "t", "connector": "core", "action": "transform", "payload": {"value": value}}
            ],
        }

    bare = tmp_path / "bare-one.json"
    bare.write_text(json.dumps(doc("bare")))
    api_shape = tmp_path / "api.json"  # what the README sends to POST /api/v1/pipelines
    api_shape.write_text(json.dumps({"name": "orders", "pipeline": doc("api")}))
    out = levqor(data, "pipelines", "import", str(bare), str(api_shape)).stdout
    assert "bare-one" in out and "orders" in out
    listed = _names_and_ids(data)
    assert sorted(n for _, _, n in listed) == ["bare-one", "orders"]
    orders_id = next(i for i, _, n in listed if n == "orders")

    # an export of an existing pipeline is refused, naming it; nothing is written
    exported = tmp_path / "orders-export.json"
    levqor(data, "pipelines", "export", orders_id, "-o", str(exported))
    r = levqor(data, "pipelines", "import", str(exported), check=False)
    assert r.returncode != 0 and orders_id in r.stderr
    assert "--update" in r.stderr and "--new" in r.stderr
    # the same name without an id (the README's shape) is a duplicate too
    r = levqor(data, "pipelines", "import", str(api_shape), check=False)
    assert r.returncode != 0 and orders_id in r.stderr
    assert len(_names_and_ids(data)) == 2

    # --update saves the file as a new version of that pipeline
    changed = json.loads(exported.read_text())
    changed["doc"] = doc("changed")
    exported.write_text(json.dumps(changed))
    out = levqor(data, "pipelines", "import", "--update", str(exported)).stdout
    assert orders_id in out and "v2" in out
    assert (orders_id, "v2", "orders") in _names_and_ids(data)
    shown = json.loads(levqor(data, "pipelines", "export", orders_id).stdout)
    assert shown["doc"] == doc("changed") and shown["version"] == 2

    # --new imports a deliberate copy; then `run orders` is ambiguous and lists both ids
    copy_id = levqor(data, "pipelines", "import", "--new", str(exported)).stdout.split()[0]
    assert copy_id != orders_id and len(_names_and_ids(data)) == 3
    r = levqor(data, "run", "orders", check=False)
    assert r.returncode != 0 and orders_id in r.stderr and copy_id in r.stderr
    r = levqor(data, "pipelines", "import", "--new", "--update", str(exported), check=False)
    assert r.returncode == 2 and "--new" in r.stderr

    # not a pipeline in any known shape, or one bad file among good ones: nothing is imported
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"name": "x", "steps_list": []}))
    r = levqor(data, "pipelines", "import", str(stray), check=False)
    assert r.returncode == 1 and "not a pipeline document" in r.stderr
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps({"name": "fresh", "pipeline": doc("fresh")}))
    r = levqor(data, "pipelines", "import", str(fresh), str(stray), check=False)
    assert r.returncode == 1 and "fresh" not in {n for _, _, n in _names_and_ids(data)}


# ---------------------------------------------------------------- start-up cost
def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(r.stdout.split())


HEAVY = set(
    "flask werkzeug sqlalchemy alembic pluggy jsonschema requests cryptography "
    "levqor_kernel gunicorn celery".split()
)


@pytest.mark.parametrize(
    "code",
    [
        "import levqor_host.cli",
        "from levqor_host.cli import main\nmain(['--help'], standalone_mode=False)",
        "from levqor_host.cli import main\nmain(['--version'], standalone_mode=False)",
    ],
    ids=["import", "--help", "--version"],
)
def test_the_command_group_imports_nothing_heavy(code):
    """The console script's module (levqor_host.cli:main) loads no Flask, SQLAlchemy, plugin
    manager or plugin, and no command's module: `levqor --help` lists the commands from the
    table in levqor_host.cli, and each command imports what it needs when it runs."""
    loaded = _modules_after(code)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert not {m for m in loaded if m.startswith("levqor_") and not m.startswith("levqor_host")}
    assert {m for m in loaded if m.startswith("levqor_host")} <= {
        "levqor_host",
        "levqor_host.cli",
        "levqor_host.cli.group",
    }


def test_only_the_cli_imports_click_and_nothing_imports_the_cli():
    """The commands are the wiring: domain, web and store modules import neither click nor
    the CLI (the planner, backups and the marketplace are called by their commands)."""
    src = Path(__file__).resolve().parents[1] / "src" / "levqor_host"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] == "click" or name.startswith("levqor_host.cli"):
                    offenders.append(f"{rel}:{node.lineno} imports {name}")
    assert offenders == []


def test_commands_that_only_read_the_database_load_no_web_app_and_no_plugin(data):
    env = {**clean_env(), "LEVQOR_DATA_DIR": str(data), **backend_env(data.parent)}
    for args in (["pipelines", "list"], ["users", "list"], ["keys", "list"]):
        loaded = _modules_after(
            f"from levqor_host.cli import main\nmain({args!r}, standalone_mode=False)", env
        )
        assert "sqlalchemy" in loaded
        assert not {m for m in loaded if m.split(".")[0] in ("flask", "pluggy")}
        # of the kernel, at most the cron parser (the configuration checks LEVQOR_BACKUP_CRON)
        assert {m for m in loaded if m.startswith("levqor_kernel")} <= {
            "levqor_kernel",
            "levqor_kernel.cron",
        }


def test_help_lists_every_command_from_the_table_with_its_own_help():
    import click
    from click.testing import CliRunner
    from levqor_host import cli

    out = CliRunner().invoke(cli.main, ["--help"]).output
    for name in cli.COMMANDS:
        assert f"  {name} " in out
    for name in (
        "serve worker run pipelines plan backup restore marketplace connector users keys plugins"
    ).split():
        assert name in cli.COMMANDS
    # what --help lists for a command imported on use is the command's own help
    for group in (cli.main, cli.main.get_command(None, "users")):
        for name, (_, text) in group.lazy_commands.items():
            real = group.get_command(None, name)
            assert click.Command(name, help=text).get_short_help_str(
                200
            ) == real.get_short_help_str(200)
    users = CliRunner().invoke(cli.main, ["users", "--help"]).output
    assert "set-password" in users and "login-link" in users
    r = CliRunner().invoke(cli.main, ["no-such-command"])
    assert r.exit_code == 2 and "No such command" in r.output


def test_plugin_commands_load_on_use_and_never_replace_a_built_in(tmp_path):
    """An installed plugin's `register_commands` adds `levqor hello` (found when used); its
    `run` and `plan` are ignored with a warning: built-in commands keep their names."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "levqor_shadow.py").write_text(
        "import click\n"
        "from levqor_kernel import hookimpl\n\n\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    for name in ('hello', 'run', 'plan'):\n"
        "        cli.add_command(click.Command(name, callback=lambda n=name: click.echo(n + '!')))\n"
    )
    info = site / "levqor_shadow-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: levqor-shadow\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[levqor]\nshadow = levqor_shadow\n")
    env = {"PYTHONPATH": str(site), "LEVQOR_DATA_DIR": str(tmp_path / "data")}
    r = levqor(tmp_path / "data", "hello", env=env)
    assert r.stdout == "hello!\n"
    assert "'run' is ignored" in r.stderr and "'plan' is ignored" in r.stderr
    r = levqor(tmp_path / "data", "plan", "--help", env=env)
    assert "DESCRIPTION" in r.stdout  # the built-in, imported on use
    listed = json.loads(levqor(tmp_path / "data", "plugins", "--json", env=env).stdout)
    [shadow] = [p for p in listed["plugins"] if p["name"] == "shadow"]
    assert shadow["commands"] == ["hello", "plan", "run"]
