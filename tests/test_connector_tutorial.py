"""docs/connectors.md cannot drift: its tutorial is built, installed, tested and run here."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from e2e_support import ROOT, extract_files
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import Runner, RunRequest
from levqor_kernel.testing import FakeServer, Reply


def test_tutorial_connector_builds_installs_passes_its_tests_and_runs(tmp_path, monkeypatch):
    files = extract_files((ROOT / "docs" / "connectors.md").read_text())
    assert {
        "levqor-acme/pyproject.toml",
        "levqor-acme/src/levqor_acme/__init__.py",
        "levqor-acme/tests/test_acme.py",
    } <= set(files)
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(tmp_path / "levqor-acme"),
        ],
        check=True,
    )
    # the package's own tests, exactly as its author runs them
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "levqor-acme" / "tests"),
        ],
        cwd=tmp_path / "levqor-acme",
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout

    # discovered through its entry point and run in a pipeline
    monkeypatch.syspath_prepend(str(site))
    pm = make_plugin_manager(allow=["acme"])
    info = pm.catalog.get("acme")
    assert info is not None and info.dist == "levqor-acme" and info.version == "0.1.0"
    with FakeServer() as srv:
        srv.route(
            "POST",
            "/v1/notes",
            lambda req: Reply(201, {"id": "n-" + req.json()["title"], "url": "u"}),
        )
        doc = {
            "levqor": 1,
            "trigger": {"type": "webhook"},
            "steps": [
                {
                    "id": "note",
                    "connector": "acme",
                    "action": "create_note",
                    "credential": "acme-main",
                    "payload": {"title": "{{ trigger.order }}", "body": "x"},
                }
            ],
        }
        runner = Runner(pm, env={"LEVQOR_ACME_API_BASE": srv.url})
        res = runner.run(
            RunRequest(f"run{time.time_ns()}", doc, {"order": "A7"}),
            credentials=lambda name, c: (
                {"token": "tok-secret-123"} if name == "acme-main" else None
            ),
        )
        assert res.status == "succeeded", res.error
        assert res.outputs["note"] == {"id": "n-A7", "url": "u"}
        assert srv.requests[0].header("Authorization") == "Bearer tok-secret-123"
