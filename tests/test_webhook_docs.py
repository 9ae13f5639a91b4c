"""docs/webhooks.md cannot drift: its Python and shell signing examples are run against a live host."""

from __future__ import annotations

import subprocess
import sys

import pytest
from e2e_support import ROOT, LiveServer, clean_env, extract_files, make_app


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path, executor={"workers": 1}))
    yield s
    s.stop()


def signed_hook(srv) -> tuple[dict, str, str, object]:
    _, key = srv.user_with_key("docs@example.com")
    alice = srv.client(key)
    doc = {"levqor": 1, "trigger": {"type": "webhook", "require_signature": True}, "steps": [
        {"id": "shape", "connector": "core", "action": "transform",
         "payload": {"value": {"order": "{{ trigger.order }}", "amount": "{{ trigger.amount }}"}}}]}
    r = alice.post("/api/v1/pipelines", json={"name": "signed", "pipeline": doc})
    assert r.status_code == 201, r.text
    p = r.json()
    secret = alice.post(f"/api/v1/pipelines/{p['id']}/webhook-secret").json()["secret"]
    # the answer's URL names the configured public address; the test server listens elsewhere
    return p, srv.url + "/hooks/" + p["webhook_url"].split("/hooks/")[1], secret, alice


def run_example(tmp_path, files: dict[str, str], name: str, url: str, secret: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(files[name])
    cmd = [sys.executable, str(path)] if name.endswith(".py") else ["bash", "-eu", str(path)]
    return subprocess.run(cmd, env=clean_env(LEVQOR_HOOK_URL=url, LEVQOR_HOOK_SECRET=secret),
                          capture_output=True, text=True, timeout=60)


def test_the_signing_examples_are_accepted_and_deduplicated(tmp_path, srv):
    files = extract_files((ROOT / "docs" / "webhooks.md").read_text())
    assert {"sign_webhook.py", "sign_webhook.sh"} <= set(files)
    p, url, secret, alice = signed_hook(srv)
    for name in ("sign_webhook.py", "sign_webhook.sh"):
        r = run_example(tmp_path, files, name, url, secret)
        assert r.returncode == 0, name + r.stdout + r.stderr
        printed = r.stdout.replace(" ", "").replace("'", '"')  # a dict printed by Python, or curl's JSON
        assert '"created":True' in printed or '"created":true' in printed, r.stdout
    # the shell example sends a fixed delivery id: the second send starts nothing new
    again = run_example(tmp_path, files, "sign_webhook.sh", url, secret)
    assert again.returncode == 0 and '"created":false' in again.stdout.replace(" ", ""), again.stdout
    runs = alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"]
    assert len(runs) == 2
    for run in runs:
        done = srv.state.runs.wait(None, run["id"], 30)
        assert done["status"] == "succeeded"
        assert done["steps"][0]["output"] == {"value": {"order": "A-1001", "amount": 50}}


def test_the_examples_fail_with_a_wrong_secret(tmp_path, srv):
    files = extract_files((ROOT / "docs" / "webhooks.md").read_text())
    p, url, _, alice = signed_hook(srv)
    for name in ("sign_webhook.py", "sign_webhook.sh"):
        r = run_example(tmp_path, files, name, url, "whsec_not-the-secret")
        assert r.returncode != 0, name
        assert "401" in r.stderr + r.stdout or "invalid_signature" in r.stdout, r.stdout + r.stderr
    assert alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"] == []
