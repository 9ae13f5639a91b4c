"""The issue's "done when": a connector written only from docs/connectors.md, built as a wheel,
installed into a fresh venv beside the host (both from ./kernel and ./host, not editable), shows
up in `levqor plugins`, in GET /api/v1/marketplace of a `levqor serve` of that venv, in the static
site from `levqor marketplace build`, and runs in a pipeline against a local fake of its API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from e2e_support import ROOT, extract_files, free_port, wait_until_serving
from levqor_kernel.testing import FakeServer, Reply


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k not in drop}
    return {**env, "LEVQOR_CACHE_DIR": "", **extra}


def run(*args: str | Path, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{args} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_tutorial_wheel_in_a_fresh_venv_is_listed_marketed_and_runs(tmp_path):
    # 1. the tutorial's files, exactly as the page shows them
    files = extract_files((ROOT / "docs" / "connectors.md").read_text())
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    proj = tmp_path / "levqor-acme"
    # 2. the wheel, as `python -m build` makes it for publishing
    run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--outdir",
        tmp_path / "dist",
        proj,
        env=clean_env(),
    )
    [wheel] = (tmp_path / "dist").glob("levqor_acme-0.1.0-py3-none-any.whl")
    # 3. a fresh venv with the host and kernel from this checkout, then the wheel beside them
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, "hatchling", env=clean_env())
    run(*pip, "--no-build-isolation", ROOT / "kernel", ROOT / "host", env=clean_env())
    run(*pip, wheel, env=clean_env())
    for dist in ("levqor-acme", "levqor-kernel", "levqor"):
        shown = run(py, "-m", "pip", "show", dist, env=clean_env()).stdout
        assert f"Location: {venv}" in shown and "Editable project location" not in shown, shown

    # 4. levqor plugins lists it
    out = json.loads(run(bin_ / "levqor", "plugins", "--json", env=clean_env()).stdout)
    acme = next(p for p in out["plugins"] if p["name"] == "acme")
    assert acme["distribution"] == "levqor-acme" and acme["version"] == "0.1.0"
    assert acme["connectors"] == ["acme"] and out["failures"] == []

    # the scaffold's templates ship inside the host's wheel
    run(bin_ / "levqor", "connector", "new", "okapi", "--dir", tmp_path / "new", env=clean_env())
    assert (tmp_path / "new" / "levqor-okapi" / "tests" / "test_okapi.py").is_file()
    run(bin_ / "levqor", "connector", "new", "okapi-feed", "--dir", tmp_path / "new", "--trigger", "polling",
        "--trigger", "instant", "--oauth", env=clean_env())
    for rel in ("src/levqor_okapi_feed/fake.py", "tests/test_okapi_feed_triggers.py", "tests/test_okapi_feed_oauth.py"):
        assert (tmp_path / "new" / "levqor-okapi-feed" / rel).is_file(), rel

    # 5. the static site
    site = tmp_path / "market"
    run(bin_ / "levqor", "marketplace", "build", site, env=clean_env())
    index = json.loads((site / "index.json").read_text())
    entry = next(c for c in index["connectors"] if c["name"] == "acme")
    assert entry["distribution"] == "levqor-acme" and entry["author"] == "Ada Author"
    page = (site / "connectors" / "acme.html").read_text()
    assert "Acme Notes" in page and "pip install levqor-acme" in page

    # 6. a server of that venv: the marketplace JSON, then a pipeline against a fake Acme
    with FakeServer() as acme_api:
        acme_api.route(
            "POST",
            "/v1/notes",
            lambda req: Reply(201, {"id": "n-" + req.json()["title"], "url": "https://acme/n"}),
        )
        port = free_port()
        data = tmp_path / "data"
        log = tmp_path / "serve.log"
        proc = subprocess.Popen(
            [str(bin_ / "levqor"), "serve", "--port", str(port)],
            env=clean_env(
                LEVQOR_DATA_DIR=str(data),
                LEVQOR_WRITE_FIRST_KEY="1",
                LEVQOR_SCHEDULER="off",
                LEVQOR_POLL_INTERVAL="0.05",
                LEVQOR_ACME_API_BASE=acme_api.url,  # the operator's trusted base URL
                PYTHONUNBUFFERED="1",
            ),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, proc, log)
            market = requests.get(base + "/api/v1/marketplace", timeout=10).json()
            m = next(c for c in market["connectors"] if c["name"] == "acme")
            assert (m["distribution"], m["version"], m["license"], m["homepage"]) == (
                "levqor-acme",
                "0.1.0",
                "MIT",
                "https://example.org/levqor-acme",
            )
            assert m["kernel"] == ">=0.1,<1" and m["price"] == {"min": 1, "max": 1}
            assert [f["name"] for f in m["credentials"]] == ["token", "api_base"]
            assert m["actions"][0]["name"] == "create_note"

            key = Path(data, "first-key.txt").read_text().strip()
            auth = {"Authorization": f"Bearer {key}"}
            r = requests.post(
                base + "/api/v1/credentials",
                headers=auth,
                timeout=10,
                json={
                    "name": "acme-main",
                    "connector": "acme",
                    "values": {"token": "tok-secret-123"},
                },
            )
            assert r.status_code == 201, r.text
            doc = {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "note",
                        "connector": "acme",
                        "action": "create_note",
                        "credential": "acme-main",
                        "payload": {
                            "title": "{{ trigger.order }}",
                            "body": "{{ trigger.customer }} paid",
                        },
                    }
                ],
            }
            r = requests.post(
                base + "/api/v1/pipelines",
                headers=auth,
                timeout=10,
                json={"name": "acme notes", "pipeline": doc},
            )
            assert r.status_code == 201, r.text
            r = requests.post(
                base + "/api/v1/run?wait=20",
                headers=auth,
                timeout=30,
                json={"pipeline_id": r.json()["id"], "input": {"order": "A7", "customer": "Bo"}},
            )
            assert r.status_code in (200, 201, 202), r.text
            result = r.json()
            assert result["status"] == "succeeded", result
            assert result["steps"][0]["output"] == {"id": "n-A7", "url": "https://acme/n"}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        [req] = acme_api.requests
        assert req.json() == {"title": "A7", "body": "Bo paid"}
        assert req.header("Authorization") == "Bearer tok-secret-123"
        assert req.header("Idempotency-Key", "").endswith(":note")


@pytest.mark.slow
def test_connector_check_works_in_a_fresh_venv_for_a_scaffold_and_for_slack(tmp_path):
    # a fresh venv with the kernel, the host and levqor-slack from this checkout (not editable):
    # whatever `levqor connector check` needs comes from their declared dependencies
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, "hatchling", env=clean_env())
    run(
        *pip,
        "--no-build-isolation",
        ROOT / "kernel",
        ROOT / "host",
        ROOT / "plugins" / "levqor-slack",
        env=clean_env(),
    )
    run(py, "-c", "import pytest", env=clean_env())  # declared, not installed by hand

    run(bin_ / "levqor", "connector", "new", "okapi", "--dir", tmp_path / "new", env=clean_env())
    r = run(
        bin_ / "levqor",
        "connector",
        "check",
        tmp_path / "new" / "levqor-okapi",
        "--json",
        env=clean_env(),
    )
    report = json.loads(r.stdout)
    assert report["ok"], report
    assert any("pytest -k levqor_contract" in c for c in report["checks"])
    # with a polling and an instant trigger and OAuth2: the trigger and OAuth2 kits run too
    run(bin_ / "levqor", "connector", "new", "okapi-feed", "--dir", tmp_path / "new", "--trigger", "polling",
        "--trigger", "instant", "--oauth", env=clean_env())
    r = run(bin_ / "levqor", "connector", "check", tmp_path / "new" / "levqor-okapi-feed", "--json", env=clean_env())
    report = json.loads(r.stdout)
    assert report["ok"] and report["notes"] == [], report

    # levqor-slack's credential is the target URL: its endpoint_field points it at the fake,
    # so the network checks run instead of being skipped
    r = run(bin_ / "levqor", "connector", "check", "levqor-slack", "--json", env=clean_env())
    report = json.loads(r.stdout)
    assert report["ok"] and report["notes"] == [], report
    for title in ("401 fails closed", "429 with Retry-After", "503 is retryable", "a timeout"):
        assert any(title in c for c in report["checks"]), (title, report["checks"])
