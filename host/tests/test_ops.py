"""Operations over real HTTP: health that breaks when a dependency breaks, metrics, JSON logs,
the error and support inboxes, Sentry and Resend delegation against local fakes."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from e2e_support import (
    LiveServer,
    backend_env,
    drop_postgres_database,
    make_app,
    on_celery,
    skip_under_celery,
    skip_unless_sqlite,
    wait_until_serving,
)
from fake_sentry import FakeSentry
from flask import Blueprint
from levqor_kernel import hookimpl
from levqor_kernel.access import public
from levqor_kernel.errors import PermanentError

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

PLANTED = "sk_live_PLANTEDsecret0123456789abcdef"


class Flaky:
    """A test plugin: a connector that fails on demand and a route that raises."""

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "flaky",
                "title": "Flaky",
                "description": "test connector",
                "actions": {
                    "go": {
                        "title": "Go",
                        "payload": {"type": "object", "properties": {"fail": {}}},
                        "output": {"type": "object"},
                        "example": {"fail": False},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        if payload.get("fail"):
            raise PermanentError("flaky failed as asked")
        return {"ok": True}

    @hookimpl
    def register_blueprints(self, app, state):
        bp = Blueprint("flaky_test", __name__)

        @bp.get("/flaky/boom")
        @public("a test route that fails on purpose")
        def boom():
            raise RuntimeError(f"exploded for carol@example.com with {PLANTED}")

        app.register_blueprint(bp)


class Broken:
    """A plugin whose description raises: the host records it as failed."""

    @hookimpl
    def describe_schema(self):
        raise RuntimeError("cannot describe myself")


def flaky_doc(fail: bool, notify: bool = False) -> dict:
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "s1", "connector": "flaky", "action": "go", "payload": {"fail": fail}}],
    }
    if notify:
        doc["notify_on_failure"] = True
    return doc


@pytest.fixture
def live(tmp_path):
    servers = []

    def _make(env=None, plugins=None, **kw):
        s = LiveServer(
            make_app(
                tmp_path / f"app{len(servers)}",
                env=env,
                plugins=plugins if plugins is not None else [("flaky", Flaky())],
                **kw,
            )
        )
        servers.append(s)
        return s

    yield _make
    for s in servers:
        if s.state.mailer is not None:
            s.state.mailer.close()
        s.stop()


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def health(srv):
    r = srv.client().get("/api/v1/ops/health")
    return r.status_code, r.json()


# ------------------------------------------------------------------------------ health
def test_everything_healthy_then_the_database_file_is_removed(live):
    srv = live(start_scheduler=True)
    wait_for(lambda: srv.state.scheduler.is_leader)
    status, body = health(srv)
    assert status == 200, body
    assert body["status"] == "ok" and body["failing"] == []
    c = body["checks"]
    dialect = srv.state.store.dialect  # sqlite, or postgresql when the suite runs on it
    assert c["database"]["ok"] and c["database"]["dialect"] == dialect
    assert c["executor"]["queue_depth"] == 0
    if on_celery():  # a web host on Celery: no worker threads here, the broker answers
        assert c["executor"]["in_this_process"] is False and c["executor"]["broker"]["ok"]
    else:
        assert c["executor"]["threads_alive"] == c["executor"]["threads"]
    assert c["scheduler"]["is_leader"] and c["scheduler"]["next_backup"].endswith("T00:00:00+00:00")
    assert {"core", "flaky"} <= {p["name"] for p in c["plugins"]["loaded"]}
    assert c["disk"]["free_bytes"] > 0 and c["backup"]["latest"] is None

    if srv.state.executor is not None:
        srv.state.executor.stop(1.0)  # quiet workers before the database goes
    srv.state.scheduler.stop()
    if dialect == "sqlite":
        db = srv.state.config.data_dir / "levqor.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        gone = "missing"
    else:  # PostgreSQL: the database is dropped under the running host
        drop_postgres_database(srv.state.store.url)
        gone = "does not exist"
    status, body = health(srv)
    assert status == 503 and "database" in body["failing"]
    assert gone in body["checks"]["database"]["error"], body["checks"]["database"]
    # liveness and uptime never touch the database
    assert srv.client().get("/health").status_code == 200
    up = srv.client().get("/ops/uptime").json()
    assert up["status"] == "up" and up["uptime_seconds"] > 0 and up["started_at"]


@skip_unless_sqlite("a SQLite write lock held by another connection fails the write probe")
def test_a_locked_database_fails_the_write_probe(live):
    srv = live(start_scheduler=True)
    wait_for(lambda: srv.state.scheduler.is_leader)
    assert health(srv)[0] == 200
    other = sqlite3.connect(srv.state.config.data_dir / "levqor.db", timeout=1)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        status, body = health(srv)
        assert status == 503 and body["failing"] == ["database"]
        assert "locked" in body["checks"]["database"]["error"]
    finally:
        other.rollback()
        other.close()
    assert health(srv)[0] == 200


@skip_under_celery(
    "stops the embedded executor's worker threads, which a web host on Celery does not have "
    "(the broker in health: tests/test_scale_faults.py)"
)
def test_stopped_executor_and_missing_scheduler_leader(live):
    srv = live(start_scheduler=True)
    wait_for(lambda: srv.state.scheduler.is_leader)
    srv.state.executor.stop(1.0)
    status, body = health(srv)
    assert status == 503 and body["failing"] == ["executor"]
    assert "stopped" in body["checks"]["executor"]["error"]
    assert "executor" in body["message"]
    srv.state.scheduler.stop()  # releases the leader lock: nobody fires cron triggers
    status, body = health(srv)
    assert set(body["failing"]) == {"executor", "scheduler"}
    assert "leader" in body["checks"]["scheduler"]["error"]


def test_queue_depth_and_oldest_queued_run(live):
    srv = live(
        start_workers=False, start_scheduler=True, env={"LEVQOR_HEALTH_MAX_QUEUE_AGE": "0.3"}
    )
    wait_for(lambda: srv.state.scheduler.is_leader)
    user, key = srv.user_with_key("q@example.com")
    c = srv.client(key)
    p = c.post("/api/v1/pipelines", json={"name": "q", "pipeline": flaky_doc(False)}).json()
    for _ in range(3):
        assert c.post("/api/v1/run", json={"pipeline_id": p["id"]}).status_code == 202
    time.sleep(0.4)
    status, body = health(srv)
    ex = body["checks"]["executor"]
    assert ex["queue_depth"] == 3 and ex["in_this_process"] is False
    assert ex["oldest_queued_age_seconds"] >= 0.3
    assert status == 503 and "waited" in ex["error"]
    metrics = srv.client().get("/metrics").text
    assert 'levqor_queue_depth{state="queued"} 3.0' in metrics


def test_failed_plugin_and_low_disk(live):
    srv = live(
        plugins=[("flaky", Flaky()), ("broken", Broken())],
        start_scheduler=True,
        env={"LEVQOR_HEALTH_MIN_FREE_MB": str(10**12)},
    )
    wait_for(lambda: srv.state.scheduler.is_leader)
    status, body = health(srv)
    assert status == 503 and set(body["failing"]) == {"plugins", "disk"}
    failed = body["checks"]["plugins"]["failed"]
    assert [f["name"] for f in failed] == ["broken"] and "cannot describe" in failed[0]["error"]
    assert "below LEVQOR_HEALTH_MIN_FREE_MB" in body["checks"]["disk"]["error"]


# ------------------------------------------------------------------------------ metrics
def test_metrics_count_requests_runs_and_need_the_token(live):
    srv = live(env={"LEVQOR_METRICS_TOKEN": "scrape-token-123"})
    user, key = srv.user_with_key("m@example.com")
    c = srv.client(key)
    p = c.post("/api/v1/pipelines", json={"name": "m", "pipeline": flaky_doc(False)}).json()
    assert (
        c.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"]}).json()["status"] == "succeeded"
    )
    c.get("/api/v1/runs/nope")
    anon = srv.client()
    r = anon.get("/metrics")
    assert r.status_code == 401 and "LEVQOR_METRICS_TOKEN" in r.json()["error"]["message"]
    assert anon.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = anon.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert "levqor_runs_started_total 1.0" in text
    assert 'levqor_runs_finished_total{status="succeeded"} 1.0' in text
    assert 'levqor_step_duration_seconds_count{connector="flaky"} 1.0' in text
    assert (
        'levqor_http_requests_total{method="POST",route="/api/v1/pipelines",status="201"} 1.0'
        in text
    )
    assert (
        'levqor_http_requests_total{method="GET",route="/api/v1/runs/<run_id>",status="404"} 1.0'
        in text
    )
    assert 'levqor_http_requests_total{method="GET",route="/metrics",status="401"} 2.0' in text
    assert "levqor_queue_depth" in text and "levqor_database_up 1.0" in text
    # the counter issue 4's limits use
    srv.state.metrics.rate_limited.labels("ip")  # exists with a scope label
    assert "levqor_rate_limited_total" in text


def test_support_rate_limit_is_counted(live):
    srv = live(
        env={
            "LEVQOR_RATE_LIMITS": "on",
            "LEVQOR_SUPPORT_RATE_LIMIT": "2/hour",
            "LEVQOR_RATE_LIMIT_IP": "100/minute",
        }
    )
    c = srv.client()
    msg = {"email": "dan@example.com", "subject": "hi", "message": "hello"}
    assert [c.post("/api/v1/support", json=msg).status_code for _ in range(2)] == [202, 202]
    r = c.post("/api/v1/support", json=msg)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "2/hour" in r.json()["error"]["message"]
    text = c.get("/metrics").text
    assert 'levqor_rate_limited_total{scope="support"} 1.0' in text
    lines = (srv.state.config.logs_dir / "support.jsonl").read_text().splitlines()
    assert len(lines) == 2


# ------------------------------------------------------------------------------ errors inbox
def test_frontend_error_reports_are_scrubbed_and_limited(live):
    srv = live()
    c = srv.client()
    r = c.post(
        "/api/v1/errors",
        json={
            "message": f"TypeError for erin@example.com token={PLANTED}",
            "stack": "at render (app.js:1:2)\nBearer lvq_abcdefgh_0123456789abcdefghijklmnop",
            "url": "https://levqor.test/runs?email=erin@example.com&key=abc#frag",
            "user_agent": "Mozilla/5.0",
            "release": "dash@1.2.3",
        },
    )
    assert r.status_code == 201, r.text
    text = (srv.state.config.logs_dir / "errors.jsonl").read_text()
    entry = json.loads(text.splitlines()[-1])
    assert entry["id"] == r.json()["id"] and entry["source"] == "frontend"
    assert entry["release"] == "dash@1.2.3" and entry["request_id"]
    for leaked in ("erin@example.com", PLANTED, "lvq_abcdefgh_0123", "key=abc", "frag"):
        assert leaked not in text
    assert entry["url"] == "https://levqor.test/runs?email=***&key=***"
    assert c.post("/api/v1/errors", json={"stack": "x"}).status_code == 400
    assert c.post("/api/v1/errors", json={"message": "x", "extra": 1}).status_code == 400
    assert c.post("/api/v1/errors", json={"message": "x" * 2001}).status_code == 400
    big = c.post(
        "/api/v1/errors",
        data=json.dumps({"message": "x", "stack": "y" * 40000}),
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413


def test_server_exceptions_land_in_the_error_inbox_and_it_can_break(live):
    srv = live()
    r = srv.client().get("/flaky/boom", headers={"X-Request-ID": "req-boom-1"})
    assert r.status_code == 500 and r.headers["X-Request-ID"] == "req-boom-1"
    assert PLANTED not in r.text
    path = srv.state.config.logs_dir / "errors.jsonl"
    entry = json.loads(path.read_text().splitlines()[-1])
    assert entry["source"] == "server" and entry["type"] == "RuntimeError"
    assert entry["request_id"] == "req-boom-1" and entry["route"] == "GET /flaky/boom"
    assert PLANTED not in path.read_text() and "carol@example.com" not in path.read_text()
    assert "exploded" in entry["message"]
    c = srv.client()
    assert c.get("/api/v1/errors/health").status_code == 200
    # break the inbox for real: the file's place is taken by a folder
    path.rename(path.with_name("old.jsonl"))
    path.mkdir()
    r = c.get("/api/v1/errors/health")
    assert r.status_code == 503 and r.json()["failing"] == ["inbox"]
    assert "not writable" in r.json()["checks"]["inbox"]["error"]
    r = c.post("/api/v1/errors", json={"message": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "inbox_unavailable"


def test_sentry_receives_frontend_reports_and_server_exceptions(live):
    import sentry_sdk

    with FakeSentry() as sentry:
        srv = live(env={"SENTRY_DSN": sentry.dsn})
        try:
            c = srv.client()
            assert not sentry_sdk.get_client().options["send_default_pii"]
            assert c.get("/api/v1/errors/health").json()["checks"]["sentry"]["configured"] is True
            c.post("/api/v1/errors", json={"message": "dashboard crashed for frank@example.com"})
            c.get("/flaky/boom")
            sentry_sdk.flush(5)
            wait_for(lambda: len(sentry.events) >= 2)
            blob = json.dumps(sentry.events)
            assert "frank@example.com" not in blob and PLANTED not in blob
            assert "carol@example.com" not in blob
            front = [e for e in sentry.events if e.get("tags", {}).get("source") == "frontend"]
            assert front and "dashboard crashed for [email]" in json.dumps(front[0])
            server = [e for e in sentry.events if e.get("exception")]
            assert server[0]["exception"]["values"][-1]["type"] == "RuntimeError"
            assert server[0]["release"].startswith("levqor@")
            assert all("user" not in e or not e["user"].get("ip_address") for e in sentry.events)
        finally:
            sentry_sdk.init()  # the SDK client is process-wide: switch it off for later tests
            from levqor_host import observability

            observability._sentry_dsn = None


# ------------------------------------------------------------------------------ support + email
RESEND_KEY = "re_test_support_0123456789"


@pytest.fixture
def resend():
    """levqor-gmail's fake of the Resend API, which the host's mail speaks too. The host does
    not depend on levqor-gmail: without it (scripts/test-alone host) the mail tests skip."""
    fake = pytest.importorskip("levqor_gmail.fake", reason="levqor-gmail holds the Resend fake")
    with fake.FakeResend(api_key=RESEND_KEY) as server:
        yield server


def mail_env(resend):
    return {
        "RESEND_API_KEY": RESEND_KEY,
        "LEVQOR_RESEND_API_BASE": resend.url,
        "RECEIVING_EMAIL": "help@acme.example",
        "LEVQOR_MAIL_FROM": "Levqor <noreply@acme.example>",
    }


def test_support_messages_are_kept_and_forwarded_and_failures_show(live, resend):
    srv = live(env=mail_env(resend))
    c = srv.client()
    msg = {
        "email": "gina@example.com",
        "subject": "Webhook question",
        "message": "How do I sign?",
    }
    r = c.post("/api/v1/support", json=msg)
    assert r.status_code == 202 and r.json()["forward"] == "sent"
    sent = resend.emails[-1]["body"]
    assert sent["to"] == ["help@acme.example"] and sent["reply_to"] == "gina@example.com"
    assert (
        sent["subject"] == "[Levqor support] Webhook question" and "How do I sign?" in sent["text"]
    )
    assert c.get("/api/v1/support/health").status_code == 200
    # Resend is down: the message is kept, health names forwarding
    for _ in range(3):
        resend.fail_next(500)
    r = c.post("/api/v1/support", json={**msg, "subject": "second"})
    assert r.status_code == 202 and r.json()["forward"] == "failed"
    inbox = [
        json.loads(x)
        for x in (srv.state.config.logs_dir / "support.jsonl").read_text().splitlines()
    ]
    assert [m["subject"] for m in inbox] == ["Webhook question", "second"]
    h = c.get("/api/v1/support/health")
    assert h.status_code == 503 and h.json()["failing"] == ["forwarding"]
    assert h.json()["checks"]["forwarding"]["unforwarded"] == 1
    assert "500" in h.json()["checks"]["forwarding"]["error"]
    assert c.post("/api/v1/support", json={**msg, "subject": "third"}).json()["forward"] == "sent"
    assert c.get("/api/v1/support/health").status_code == 200
    # bad input
    assert c.post("/api/v1/support", json={**msg, "email": "nope"}).status_code == 400
    assert c.post("/api/v1/support", json={"email": "a@b.co", "subject": "x"}).status_code == 400
    assert c.post("/api/v1/support", json={**msg, "message": "m" * 10001}).status_code in (
        400,
        413,
    )
    # the logs never name the sender
    assert (
        "gina@example.com" not in (srv.state.config.logs_dir / "support-forward.jsonl").read_text()
    )


def test_support_without_delegation_and_unwritable_inbox(live):
    srv = live()
    c = srv.client()
    h = c.get("/api/v1/support/health").json()
    assert (
        h["checks"]["forwarding"]["configured"] is False
        and "RECEIVING_EMAIL" in h["checks"]["forwarding"]["note"]
    )
    r = c.post("/api/v1/support", json={"email": "h@example.com", "subject": "s", "message": "m"})
    assert r.json()["forward"] == "not_configured"
    logs = srv.state.config.logs_dir
    (logs / "support.jsonl").unlink()
    (logs / "support.jsonl").mkdir()
    h = c.get("/api/v1/support/health")
    assert h.status_code == 503 and h.json()["failing"] == ["inbox"]


def test_welcome_and_run_failure_emails(live, resend):
    srv = live(env=mail_env(resend))
    user, key = srv.user_with_key("ivy@acme.example")
    wait_for(lambda: any(e["body"]["subject"] == "Welcome to Levqor" for e in resend.emails))
    welcome = resend.emails[0]
    assert welcome["body"]["to"] == ["ivy@acme.example"]
    assert welcome["headers"].get("Idempotency-Key") == f"welcome:{user['id']}"
    c = srv.client(key)
    quiet = c.post("/api/v1/pipelines", json={"name": "quiet", "pipeline": flaky_doc(True)}).json()
    loud = c.post(
        "/api/v1/pipelines", json={"name": "loud", "pipeline": flaky_doc(True, notify=True)}
    ).json()
    assert (
        c.post("/api/v1/run?wait=10", json={"pipeline_id": quiet["id"]}).json()["status"]
        == "failed"
    )
    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": loud["id"]}).json()
    assert run["status"] == "failed"
    wait_for(lambda: any("failed" in e["body"]["subject"] for e in resend.emails))
    time.sleep(0.3)
    failures = [e for e in resend.emails if "failed" in e["body"]["subject"]]
    assert len(failures) == 1 and '"loud"' in failures[0]["body"]["subject"]
    assert run["id"] in failures[0]["body"]["text"]
    # the low-credit warning: tests/test_billing_flows.py (it needs a billing plugin)
    assert (
        'levqor_emails_total{kind="welcome",outcome="sent"} 1.0'
        in srv.client().get("/metrics").text
    )


def test_failure_email_details_link_opens_the_dashboards_run_page(live, resend):
    srv = live(env=mail_env(resend))
    _, key = srv.user_with_key("jo@acme.example")
    c = srv.client(key)
    loud = c.post(
        "/api/v1/pipelines", json={"name": "loud", "pipeline": flaky_doc(True, notify=True)}
    ).json()
    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": loud["id"]}).json()
    assert run["status"] == "failed"
    wait_for(lambda: any("failed" in e["body"]["subject"] for e in resend.emails))
    text = next(e for e in resend.emails if "failed" in e["body"]["subject"])["body"]["text"]
    link = re.search(r"^Details: (\S+)$", text, re.M).group(1)
    base = srv.state.config.base_url
    assert link == f"{base}/runs/{run['id']}"
    # the link is the dashboard's run page (HTML for a browser), not the JSON API
    page = c.get(link.removeprefix(base), headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert run["id"] in page.text


# ------------------------------------------------------------------------------ logs (a real process)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _levqor_env(tmp_path, **extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
    }
    env.update(
        {
            "LEVQOR_DATA_DIR": str(tmp_path / "data"),
            "LEVQOR_RATE_LIMITS": "off",
            "LEVQOR_ADMIN_EMAIL": "owner@example.com",
            **backend_env(tmp_path),  # PostgreSQL when the suite runs on it (executor: embedded)
            **extra,
        }
    )
    return env


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_until_serving(url, proc, timeout=timeout)


def test_logs_are_json_lines_with_request_ids_and_no_personal_data(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--port", str(port)],
        env=_levqor_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        r = requests.get(
            url + "/api/v1/runs",
            headers={"X-Request-ID": "trace-abc-123", "Authorization": f"Bearer {PLANTED}"},
        )
        assert r.status_code == 401 and r.headers["X-Request-ID"] == "trace-abc-123"
        r = requests.get(url + "/ops/uptime", headers={"X-Request-ID": "bad id with spaces"})
        generated = r.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        requests.post(
            url + "/api/v1/support",
            json={"email": "jo@example.com", "subject": "s", "message": "m"},
        )
        requests.post(url + "/hooks/SECRET-TOKEN-abcdef", json={})
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    lines = [x for x in err.splitlines() if x.strip()]
    parsed = [json.loads(x) for x in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg", "request_id"} <= set(p) for p in parsed)
    access = [p for p in parsed if p.get("event") == "request"]
    by_id = {p["request_id"]: p for p in access}
    assert (
        by_id["trace-abc-123"]["route"] == "/api/v1/runs"
        and by_id["trace-abc-123"]["status"] == 401
    )
    assert by_id[generated]["route"] == "/ops/uptime"
    assert any(p["route"] == "/hooks/<token>" for p in access)
    for leaked in (PLANTED, "jo@example.com", "owner@example.com", "SECRET-TOKEN", "127.0.0.1 -"):
        assert leaked not in err


def _get_retry(url: str) -> requests.Response:
    """A GET on a fresh connection; retried when it lands on a worker that is being recycled."""
    for _ in range(50):
        try:
            return requests.get(url, headers={"Connection": "close"}, timeout=30)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise AssertionError(f"{url} unreachable")


@pytest.mark.slow
def test_gunicorn_workers_share_one_metrics_view(tmp_path):
    port = _free_port()
    mp = tmp_path / "prom"
    # every worker is recycled after 5 requests: the counts of dead workers must stay merged too
    env = _levqor_env(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(mp),
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="1",
        GUNICORN_MAX_REQUESTS="5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--prod", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc, 60)
        pids = set()
        for _ in range(40):
            pids.add(_get_retry(url + "/ops/uptime").json()["pid"])
        assert len(pids) >= 4  # served by at least four worker processes
        totals = []
        for _ in range(4):
            text = _get_retry(url + "/metrics").text
            m = re.search(
                r'levqor_http_requests_total\{method="GET",route="/ops/uptime",status="200"\} (\S+)',
                text,
            )
            totals.append(float(m.group(1)))
        assert totals == [40.0] * 4  # whichever worker answers, the counts of both are merged
        assert list(mp.glob("*.db"))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
