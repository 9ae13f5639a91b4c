"""The `levqor` command, run as a real subprocess against a data folder."""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import backend_env, clean_env, free_port, wait_until_serving
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


def levqor(
    data: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    base = clean_env()
    # the database of make_app(data.parent) (PostgreSQL when the suite runs on it)
    full = {
        **base,
        "LEVQOR_DATA_DIR": str(data),
        "LEVQOR_SCHEDULER": "off",
        "LEVQOR_POLL_INTERVAL": "0.05",
        **backend_env(data.parent),
        **(env or {}),
    }
    r = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"levqor {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


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


# ---------------------------------------------------------------- a real `levqor serve` beside the CLI
def serve_env(data: Path, **extra: str) -> dict[str, str]:
    """The environment of a `levqor serve` subprocess on ``data`` (and its test's database)."""
    return {
        **clean_env(),
        "LEVQOR_DATA_DIR": str(data),
        "LEVQOR_SCHEDULER": "off",
        "LEVQOR_RATE_LIMITS": "off",
        "LEVQOR_POLL_INTERVAL": "0.05",
        "PYTHONUNBUFFERED": "1",
        **backend_env(data.parent),
        **extra,
    }


@contextlib.contextmanager
def serving(data: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`levqor serve --port PORT` on ``data``, up (``/health`` answers) for the block."""
    log = (data.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, Path(log.name))
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _http_pipeline(url: str) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "send",
                "connector": "http",
                "action": "request",
                "payload": {"method": "POST", "url": url, "json": {"n": "{{ trigger.n }}"}},
            }
        ],
    }


@pytest.mark.parametrize("prod", [False, True], ids=["dev", "prod"])
def test_second_serve_on_a_busy_port_exits_before_claiming_runs(tmp_path, prod):
    """A second `levqor serve` on a port in use fails on the bind, before any worker or the
    scheduler starts: it claims no run and sends no step (no duplicate deliveries)."""
    from e2e_support import make_app, stop_app

    data = tmp_path / "data"
    release = threading.Event()
    with FakeServer() as fake:
        # the first server's only worker holds one run here; the other runs stay queued
        fake.route("POST", "/slow", lambda req: (release.wait(60), {"ok": True})[1])
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        try:
            user = st.store.users.create("owner@example.com", is_admin=True, plan="business")
            p = st.store.pipelines.create(user["id"], "slow", _http_pipeline(f"{fake.url}/slow"))
            port = free_port()
            env = serve_env(data, LEVQOR_WORKERS="1", LEVQOR_SSRF_ALLOW="127.0.0.1")
            with serving(data, port, env):
                run_ids = [st.runs.start(user, p, {"n": n})[0]["id"] for n in range(5)]
                deadline = time.monotonic() + 60
                while not fake.requests and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(fake.requests) == 1  # the first server is busy with one run
                args = ["serve", "--port", str(port)] + (["--prod"] if prod else [])
                second = subprocess.Popen(
                    [sys.executable, "-m", "levqor_host.cli", *args],
                    env=serve_env(data, LEVQOR_SSRF_ALLOW="127.0.0.1"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                out, err = second.communicate(timeout=120)
                time.sleep(0.5)
                assert len(fake.requests) == 1, err  # the second sent nothing
                # ... and claimed nothing (a worker id is host:pid:suffix)
                runs = [st.store.runs.get(user["id"], rid) for rid in run_ids]
                assert not [r for r in runs if f":{second.pid}:" in (r.get("lease_owner") or "")]
                assert second.returncode != 0, out + err
                assert f"127.0.0.1:{port}" in err and "in use" in err, err
                assert "Traceback" not in err, err
                assert sum(r["status"] == "queued" for r in runs) == 4
                release.set()
                finals = [st.runs.wait(user["id"], rid, 60) for rid in run_ids]
            assert [r["status"] for r in finals] == ["succeeded"] * 5
            assert sorted(int(r.json()["n"]) for r in fake.requests) == list(range(5))
        finally:
            release.set()
            stop_app(app)


def test_run_follow_queues_for_the_servers_workers_and_follows_to_the_end(data, tmp_path):
    """`levqor run --follow` queues the run for the server's executor (the step runs there,
    with the server's environment: only the server may reach 127.0.0.1) and prints each step
    transition and the final status; a failed run exits non-zero."""
    with FakeServer() as fake:
        fake.route("POST", "/ok", {"received": True})
        fake.route("POST", "/broken", Reply(400, {"error": "bad request"}))
        for name, path in (("ok", "/ok"), ("broken", "/broken")):
            f = tmp_path / f"{name}.json"
            f.write_text(json.dumps({"name": name, "doc": _http_pipeline(fake.url + path)}))
            levqor(data, "pipelines", "import", str(f))
        # the server looks for queued runs once a second (a CLI that ran the run itself, woken
        # at once, would claim it first)
        env = serve_env(data, LEVQOR_SSRF_ALLOW="127.0.0.1", LEVQOR_POLL_INTERVAL="1")
        with serving(data, free_port(), env) as server:
            r = levqor(data, "run", "ok", "--input", '{"n": 7}', "--follow", check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.splitlines()
            assert "queued" in lines[0]
            assert any("send" in x and "succeeded" in x for x in lines)
            assert lines[-1].endswith("succeeded")
            [req] = fake.requests_to("/ok")
            assert int(req.json()["n"]) == 7
            run_id = lines[0].split()[1]
            from e2e_support import make_app, stop_app

            app = make_app(tmp_path, start_workers=False)
            try:
                run = app.extensions["levqor"].store.runs.get(None, run_id)
            finally:
                stop_app(app)
            assert run["status"] == "succeeded"
            assert f":{server.pid}:" in run["lease_owner"]  # claimed by the server's worker

            r = levqor(data, "run", "broken", "--input", '{"n": 1}', "--follow", check=False)
            assert r.returncode == 1, r.stdout + r.stderr
            assert any("send" in x and "failed" in x for x in r.stdout.splitlines())
            assert r.stdout.splitlines()[-1].endswith("failed")
            assert len(fake.requests_to("/broken")) == 1


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
