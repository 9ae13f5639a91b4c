"""The `levqor` command, run as a real subprocess against a data folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import backend_env, clean_env


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
    user = st.store.get_user_by_email("c@example.com")
    # the http connector may not be installed in every environment: use any connector with credentials
    conn = next((c.name for c in st.pm.catalog if c.credentials is not None), None)
    if conn is None:
        pytest.skip("no installed connector takes credentials")
    st.store.create_credential(user["id"], "k", conn, {"token": "plaintext-secret-value"})
    st.store.close()
    old_key = (data / "secret.key").read_text().strip()
    out = levqor(data, "keys", "rotate").stdout
    assert "re-encrypted" in out
    new_key = (data / "secret.key").read_text().strip()
    assert new_key != old_key
    # the new key reads the credential back
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    assert st.store.get_credential_values(user["id"], "k") == (
        conn,
        {"token": "plaintext-secret-value"},
    )
    st.store.close()
    # start-up with the old key is refused by the canary, not run by run
    r = levqor(data, "db", "upgrade", env={"LEVQOR_SECRET_KEY": old_key}, check=False)
    r2 = levqor(data, "users", "list", env={"LEVQOR_SECRET_KEY": old_key}, check=False)
    assert r2.returncode != 0 and "key" in (r2.stderr + r2.stdout).lower()
    del r
