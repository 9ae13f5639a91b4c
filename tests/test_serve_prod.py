"""`levqor serve --prod` from an empty data folder: the printed key works, the README's pipeline
runs through a webhook, and with two gunicorn workers a schedule fires exactly once a minute."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest
import requests
from e2e_support import ROOT, clean_env, free_port, wait_until_serving
from levqor_kernel.testing import FakeServer, Reply


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = clean_env()
    env.update({"LEVQOR_DATA_DIR": str(tmp_path / "data"), "LEVQOR_SSRF_ALLOW": "127.0.0.1",
                "GUNICORN_WORKERS": "2", "PYTHONUNBUFFERED": "1", "LEVQOR_POLL_INTERVAL": "0.1"})
    log = tmp_path / "serve.log"
    # the README's first command, exactly (it re-runs the install, which is quick when nothing changed)
    proc = subprocess.Popen([str(ROOT / "scripts" / "start"), "--prod", "--port", str(port)],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc, log, timeout=240)  # the first start installs
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    key = re.search(r"(lvq_\S+)", log.read_text()).group(1)
    yield base, key, log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@pytest.mark.slow
def test_first_start_key_readme_pipeline_and_single_scheduler(server):
    base, key, log = server
    auth = {"Authorization": f"Bearer {key}"}
    assert "Levqor is set up" in log.read_text()
    assert requests.get(base + "/api/v1/pipelines", headers=auth, timeout=10).json() == {"items": []}

    with FakeServer() as warehouse:
        warehouse.route("POST", "/orders", lambda req: Reply(201, {"received": req.json()}))
        # the README's pipeline: webhook -> core.transform -> http
        doc = {"levqor": 1, "trigger": {"type": "webhook", "wait": True}, "steps": [
            {"id": "shape", "connector": "core", "action": "transform",
             "payload": {"value": {"order": "{{ trigger.id }}", "total": "{{ trigger.amount * 1.2 }}"}}},
            {"id": "send", "connector": "http", "action": "request",
             "payload": {"method": "POST", "url": f"{warehouse.url}/orders",
                         "json": {"order": "{{ steps.shape.output.value.order }}",
                                  "total": "{{ steps.shape.output.value.total }}"}}}]}
        r = requests.post(base + "/api/v1/pipelines", headers=auth, json={"name": "orders", "pipeline": doc}, timeout=10)
        assert r.status_code == 201, r.text
        hook = r.json()["webhook_url"]
        out = requests.post(hook, json={"id": "A-1001", "amount": 50}, timeout=30)
        assert out.status_code == 200, out.text
        assert out.json()["status"] == "succeeded"
        [req] = warehouse.requests
        assert req.json() == {"order": "A-1001", "total": 60.0}

    # a schedule every minute, served by two gunicorn workers: exactly one run per minute
    sched = {"levqor": 1, "trigger": {"type": "schedule", "cron": "* * * * *", "timezone": "UTC"}, "steps": [
        {"id": "tick", "connector": "core", "action": "transform", "payload": {"value": "{{ trigger.scheduled_at }}"}}]}
    created = requests.post(base + "/api/v1/pipelines", headers=auth, json={"name": "tick", "pipeline": sched},
                            timeout=10).json()
    now = datetime.now(UTC)
    # the schedulers pick new pipelines up within ~10 s: skip a boundary that is too close
    wait_to = 60 - now.second + (60 if now.second > 45 else 0)
    time.sleep(wait_to)  # the boundary itself: nothing can fire before it

    def fired() -> list:
        return requests.get(base + f"/api/v1/runs?pipeline_id={created['id']}", headers=auth, timeout=10).json()["items"]

    deadline = time.monotonic() + 60  # a busy machine may fire late; a quiet one fires within a second
    while not fired() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a second worker firing the same minute would have done so by now
    runs = fired()
    minutes = {r["input"]["scheduled_at"] for r in runs}
    assert len(runs) == len(minutes) >= 1, runs
    assert all(r["trigger"] == "schedule" for r in runs)
