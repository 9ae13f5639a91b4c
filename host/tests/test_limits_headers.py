"""Rate limits (Flask-Limiter), trusted proxies and security headers, over real HTTP."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from e2e_support import (
    LiveServer,
    backend_env,
    clean_env,
    make_app,
    require_services,
    wait_until_serving,
)
from flask import Blueprint, jsonify
from levqor_kernel import hookimpl
from levqor_kernel.access import public

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BillingRoutes:
    """A plugin adding /api/v1/billing/* the way the billing plugin does (its own blueprint)."""

    @hookimpl
    def register_blueprints(self, app, state):
        bp = Blueprint("test_billing", __name__)

        @bp.get("/api/v1/billing/ping")
        @public("a test route with nothing to protect")
        def ping():
            return jsonify({"ok": True})

        app.register_blueprint(bp)


def serve(tmp_path, **env):
    app = make_app(
        tmp_path,
        env={"LEVQOR_RATE_LIMITS": "on", **env},
        start_workers=False,
        plugins=[("test_billing", BillingRoutes())],
    )
    return LiveServer(app)


@pytest.fixture
def stop():
    servers = []
    yield servers.append
    for s in servers:
        s.stop()


def statuses(fn, n):
    return [fn().status_code for _ in range(n)]


# ---------------------------------------------------------------- headers
def test_security_headers_on_every_response(tmp_path, stop):
    s = serve(tmp_path)
    stop(s)
    _, key = s.user_with_key("h@example.com")
    c = s.client(key)
    responses = [
        s.client().get("/health"),
        s.client().get("/api/v1/openapi.json"),
        s.client().get("/api/v1/me"),  # 401
        c.get("/api/v1/me"),
        c.get("/api/v1/pipelines/pl_nope"),  # 404
        c.get("/no/such/path"),  # 404 outside any blueprint
        c.delete("/api/v1/me"),  # 405
        c.post(
            "/api/v1/pipelines",
            data=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        ),
        s.client().post("/hooks/nope", json={}),
        s.client().get("/auth/link/nope"),
    ]
    for r in responses:
        for name, value in HEADERS.items():
            assert r.headers.get(name) == value, (
                r.request.method,
                r.request.url,
                r.status_code,
                name,
            )
        csp = r.headers["Content-Security-Policy"]
        script = re.search(r"script-src ([^;]+)", csp).group(1)
        assert (
            "'unsafe-inline'" not in csp
            and "'unsafe-eval'" not in csp
            and script.strip() == "'self'"
        )
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert {r.status_code for r in responses} >= {200, 401, 404, 405, 413}


def test_uniform_404s(tmp_path, stop):
    s = serve(tmp_path)
    stop(s)
    _, ka = s.user_with_key("a@example.com")
    _, kb = s.user_with_key("b@example.com")
    a, b = s.client(ka), s.client(kb)
    r = a.post(
        "/api/v1/pipelines",
        json={
            "pipeline": {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {"id": "x", "connector": "core", "action": "transform", "payload": {"value": 1}}
                ],
            }
        },
    )
    pid = r.json()["id"]
    theirs = b.get(f"/api/v1/pipelines/{pid}")
    missing = b.get("/api/v1/pipelines/pl_0000000000000000000000000000beef")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


# ---------------------------------------------------------------- limits
def test_anonymous_callers_are_limited_per_ip_with_headers(tmp_path, stop):
    s = serve(tmp_path, LEVQOR_RATE_LIMIT_IP="3/minute")
    stop(s)
    c = s.client()
    assert statuses(lambda: c.get("/api/v1/pipelines"), 3) == [401, 401, 401]
    r = c.get("/api/v1/pipelines")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "0"
    assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
    # liveness is never limited
    assert statuses(lambda: c.get("/health"), 5) == [200] * 5


def test_retry_after_only_with_429(tmp_path, stop):
    """The rate-limit headers go on every limited answer; Retry-After only on a refusal."""
    s = serve(tmp_path, LEVQOR_RATE_LIMITS_FREE="8/minute", LEVQOR_RATE_LIMIT_IP="3/minute")
    stop(s)
    _, key = s.user_with_key("ra@example.com", plan="free")
    c, anon = s.client(key), s.client()
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "x", "connector": "core", "action": "transform", "payload": {"value": 1}}],
    }
    answers = [
        c.get("/api/v1/me"),
        c.get("/api/v1/pipelines"),
        c.post("/api/v1/pipelines", json={"name": "ra", "pipeline": doc}),
        c.get("/api/v1/runs/nope"),
        c.post("/api/v1/pipelines", json={"pipeline": "not a document"}),
        anon.get("/api/v1/pipelines"),
        anon.get("/health"),
    ]
    assert [r.status_code for r in answers] == [200, 200, 201, 404, 400, 401, 200]
    for r in answers:
        assert "Retry-After" not in r.headers, (r.request.method, r.url, r.status_code)
        assert not any(h.lower().startswith("x-levqor-limiter") for h in r.headers)
    assert answers[0].headers["X-RateLimit-Limit"] == "8"
    assert statuses(lambda: c.get("/api/v1/me"), 4) == [200, 200, 200, 429]
    r = c.get("/api/v1/me")
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60


def test_per_plan_tiers_for_api_keys(tmp_path, stop):
    s = serve(
        tmp_path,
        LEVQOR_RATE_LIMITS_FREE="3/minute",
        LEVQOR_RATE_LIMITS_PRO="5/minute",
        LEVQOR_RATE_LIMIT_IP="1/minute",
    )
    stop(s)
    _, free = s.user_with_key("free@example.com", plan="free")
    _, pro = s.user_with_key("pro@example.com", plan="pro")
    _, other = s.user_with_key("other@example.com", plan="free")
    f, p = s.client(free), s.client(pro)
    r = f.get("/api/v1/pipelines")
    assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "2"
    assert statuses(lambda: f.get("/api/v1/pipelines"), 3) == [200, 200, 429]
    assert statuses(lambda: p.get("/api/v1/pipelines"), 6) == [200] * 5 + [429]
    # the limit is per user: another free user is not affected, nor by the tight per-IP limit
    assert statuses(lambda: s.client(other).get("/api/v1/me"), 3) == [200, 200, 200]


@pytest.mark.parametrize("name", ["LEVQOR_RATE_LIMIT_USER_DEFAULT", "LEVQOR_RATE_LIMIT_GLOBAL"])
def test_a_plan_without_a_tier_gets_the_per_user_default(tmp_path, stop, name):
    # LEVQOR_RATE_LIMIT_GLOBAL is the old, deprecated name of LEVQOR_RATE_LIMIT_USER_DEFAULT
    s = serve(tmp_path, **{name: "2/minute", "LEVQOR_RATE_LIMIT_IP": "1/minute"})
    stop(s)
    _, first = s.user_with_key("team1@example.com", plan="team")
    _, second = s.user_with_key("team2@example.com", plan="team")
    _, pro = s.user_with_key("pro@example.com", plan="pro")
    assert statuses(lambda: s.client(first).get("/api/v1/me"), 3) == [200, 200, 429]
    # per user, not global; and a plan with its own tier keeps it
    assert statuses(lambda: s.client(second).get("/api/v1/me"), 2) == [200, 200]
    assert statuses(lambda: s.client(pro).get("/api/v1/me"), 3) == [200, 200, 200]


def test_sign_in_is_limited_tighter(tmp_path, stop):
    from levqor_host.security.passwords import hash_password

    s = serve(
        tmp_path,
        LEVQOR_RATE_LIMIT_SIGNIN="2/minute",
        LEVQOR_RATE_LIMIT_IP="50/minute",
        LEVQOR_DEV="1",
    )
    stop(s)
    u = s.state.store.users.create("op@example.com")
    s.state.store.auth.set_password_hash(u["id"], hash_password("correct horse battery"))
    c = s.client()

    def attempt(pw="guess guess guess"):
        return c.post("/api/v1/auth/login", json={"email": "op@example.com", "password": pw})

    assert statuses(attempt, 2) == [401, 401]
    r = attempt("correct horse battery")  # even the right password waits now
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert c.get("/auth/link/whatever").status_code == 429


def test_billing_paths_are_limited_by_prefix(tmp_path, stop):
    s = serve(tmp_path, LEVQOR_RATE_LIMIT_BILLING="2/minute")
    stop(s)
    _, key = s.user_with_key("bill@example.com")
    c = s.client(key)
    assert statuses(lambda: c.get("/api/v1/billing/ping"), 3) == [200, 200, 429]
    assert c.get("/api/v1/pipelines").status_code == 200


def test_webhooks_are_limited_per_token(tmp_path, stop):
    s = serve(tmp_path, LEVQOR_RATE_LIMIT_WEBHOOK="2/minute")
    stop(s)
    c = s.client()
    assert statuses(lambda: c.post("/hooks/token-a", json={}), 3) == [404, 404, 429]
    assert c.post("/hooks/token-b", json={}).status_code == 404


def test_forwarded_for_is_only_trusted_behind_configured_proxies(tmp_path, stop):
    untrusted = serve(tmp_path / "a", LEVQOR_RATE_LIMIT_IP="2/minute")
    stop(untrusted)
    c = untrusted.client()
    codes = [
        c.get("/api/v1/me", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 429]  # spoofed addresses do not give fresh buckets
    trusted = serve(tmp_path / "b", LEVQOR_RATE_LIMIT_IP="2/minute", LEVQOR_TRUSTED_PROXIES="1")
    stop(trusted)
    c = trusted.client()
    codes = [
        c.get("/api/v1/me", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 401]  # one trusted proxy: its X-Forwarded-For names the client
    same = [
        c.get("/api/v1/me", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
        for _ in range(3)
    ]
    assert same == [401, 401, 429]
    # a client behind the proxy cannot pick its address by prepending its own entries
    spoof = [
        c.get("/api/v1/me", headers={"X-Forwarded-For": f"10.9.9.{i}, 198.51.100.8"}).status_code
        for i in range(3)
    ]
    assert spoof == [401, 401, 429]


def test_limits_can_be_turned_off(tmp_path, stop):
    s = serve(tmp_path, LEVQOR_RATE_LIMITS="off", LEVQOR_RATE_LIMIT_IP="1/minute")
    stop(s)
    r = s.client().get("/api/v1/me")
    assert statuses(lambda: s.client().get("/api/v1/me"), 5) == [401] * 5
    assert "X-RateLimit-Limit" not in r.headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEVQOR_RATE_LIMIT_USER_DEFAULT", "lots"),
        ("LEVQOR_RATE_LIMIT_GLOBAL", "lots"),
        ("LEVQOR_RATE_LIMITS_PRO", "5 per fortnight"),
        ("LEVQOR_RATE_LIMIT_STORAGE", "mongodb://x"),
        ("LEVQOR_JWT_ALGORITHMS", "none"),
        ("LEVQOR_TRUSTED_PROXIES", "-1"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(name, value):
    from levqor_host.config import Config

    with pytest.raises(ValueError, match=name):
        Config.from_env({name: value})


# ---------------------------------------------------------------- shared storage, two workers
def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.services
def test_two_gunicorn_workers_share_the_limit_through_redis(tmp_path):
    if not _redis_up():
        if require_services():
            pytest.fail("Redis is not running on 127.0.0.1:6379 (LEVQOR_REQUIRE_SERVICES=1)")
        pytest.skip("start Redis on 127.0.0.1:6379 to run this test")
    port = _free_port()
    env = clean_env()
    env.update(
        {
            "LEVQOR_DATA_DIR": str(tmp_path / "data"),
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2",
            "GUNICORN_KEEPALIVE": "0",
            "LEVQOR_SCHEDULER": "off",
            "LEVQOR_EXECUTOR": "off",
            "LEVQOR_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379/0",
            "LEVQOR_RATE_LIMIT_PREFIX": f"levqor-test-{uuid.uuid4().hex}",
            "LEVQOR_RATE_LIMITS_BUSINESS": "8/minute",
            "PYTHONUNBUFFERED": "1",
            **backend_env(tmp_path),  # PostgreSQL when the suite runs on it
        }
    )
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--prod", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc, log)
        key = re.search(r"(lvq_\S+)", log.read_text()).group(1)
        codes, remaining = [], []
        for _ in range(12):  # a fresh connection each time: gunicorn spreads them over its workers
            r = requests.get(
                base + "/api/v1/pipelines",
                timeout=10,
                headers={"Authorization": f"Bearer {key}", "Connection": "close"},
            )
            codes.append(r.status_code)
            remaining.append(r.headers.get("X-RateLimit-Remaining"))
        assert codes == [200] * 8 + [429] * 4, (codes, log.read_text()[-2000:])
        assert remaining[:8] == [str(n) for n in range(7, -1, -1)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
