"""Credits, the run gate, refunds, usage, referrals and the analytics dashboard (issue 7).

Real HTTP over loopback against a Levqor app with the levqor-stripe plugin installed (the
billing hooks) in ``LEVQOR_BILLING=local`` mode; the concurrency tests run on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from sqlalchemy import select

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

pytest.importorskip("levqor_stripe")

PRICE = 5


class Work:
    """A test connector: ``work.do`` costs 5 credits and saves 3 minutes; ``work.crash`` has a
    bug (an unexpected exception: the platform's fault)."""

    @hookimpl
    def describe_schema(self):
        action = {"payload": {"type": "object"}, "output": {"type": "object"}, "example": {}}
        return [
            {
                "name": "work",
                "title": "Work",
                "description": "test connector",
                "actions": {
                    "do": {**action, "title": "Do", "price": PRICE, "minutes_saved": 3},
                    "crash": {**action, "title": "Crash", "price": PRICE},
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        if action == "crash":
            raise RuntimeError("bug in the connector")
        return {"ok": True}


def doc(action="do"):
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "s", "connector": "work", "action": action, "payload": {}}],
    }


# plans without monthly credits: a balance is only what a test grants
NO_MONTHLY_CREDITS = '{"pro": {"monthly_credits": 0}, "business": {"monthly_credits": 0}}'


def serve(tmp_path, env=None, **kw):
    app = make_app(
        tmp_path,
        env={"LEVQOR_BILLING": "local", "LEVQOR_PLANS": NO_MONTHLY_CREDITS, **(env or {})},
        plugins=[("work", Work())],
        **kw,
    )
    return LiveServer(app)


@pytest.fixture
def srv(tmp_path):
    s = serve(tmp_path)
    yield s
    s.stop()


def pipeline(client, action="do"):
    r = client.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc(action)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_settled(state, user_id, n=1, timeout=10):
    """Wait until ``n`` runs of the user are final and settled (usage_daily written)."""
    from levqor_host.store.tables import usage_daily

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with state.store.read() as conn:
            jobs = (
                conn.execute(select(usage_daily.c.jobs).where(usage_daily.c.user_id == user_id))
                .scalars()
                .all()
            )
        if sum(jobs) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("run not settled in time")


def fire(client, pid, n=50):
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        return client.post("/api/v1/run", json={"pipeline_id": pid})

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


# ------------------------------------------------------------------ the gate, concurrently
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.services),
]


def _server(request, tmp_path, backend):
    kw = {}
    if backend == "postgresql":
        kw["database"] = {"url": request.getfixturevalue("pg_database_url")}
    return serve(tmp_path, start_workers=False, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fifty_parallel_runs_of_a_free_user_start_exactly_one(request, tmp_path, backend):
    s = _server(request, tmp_path, backend)
    try:
        user, key = s.user_with_key("free@example.com")
        c = s.client(key)
        pid = pipeline(c)
        answers = fire(c, pid)
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] + [402] * 49, codes
        refused = next(r.json() for r in answers if r.status_code == 402)
        assert refused["error"]["code"] == "payment_required"
        assert "1 run(s) a day" in refused["error"]["message"]
        assert "midnight UTC" in refused["error"]["message"]
        assert refused["error"]["details"]["retry_at"].endswith("T00:00:00+00:00")
        items, _ = s.state.store.runs.list(user["id"], limit=100)
        assert len(items) == 1
        assert s.state.ledger.balance(user["id"]) == 0  # the free run is included
    finally:
        s.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fifty_parallel_runs_never_take_a_balance_below_zero(request, tmp_path, backend):
    s = _server(request, tmp_path, backend)
    try:
        user, key = s.user_with_key("pro@example.com", plan="pro")
        s.state.ledger.grant(user["id"], 3 * PRICE + 2)
        c = s.client(key)
        pid = pipeline(c)
        answers = fire(c, pid)
        assert sum(r.status_code == 202 for r in answers) == 3
        assert sum(r.status_code == 402 for r in answers) == 47
        msg = next(r.json() for r in answers if r.status_code == 402)["error"]["message"]
        assert f"costs {PRICE} credits and your balance is 2" in msg
        assert s.state.ledger.balance(user["id"]) == 2
        lines = s.state.ledger.lines(user["id"])
        assert sorted(line["delta"] for line in lines) == [-PRICE] * 3 + [3 * PRICE + 2]
        assert len(s.state.store.runs.list(user["id"], limit=100)[0]) == 3
    finally:
        s.stop()


# ------------------------------------------------------------------ refunds and usage
def test_platform_failure_refunds_and_user_success_is_charged(srv):
    user, key = srv.user_with_key("pro@example.com", plan="pro")
    srv.state.ledger.grant(user["id"], 100)
    c = srv.client(key)
    bad = c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c, "crash")}).json()
    assert bad["status"] == "failed"
    wait_settled(srv.state, user["id"], 1)
    lines = [x for x in srv.state.ledger.lines(user["id"]) if x["run_id"] == bad["id"]]
    assert sorted((x["reason"], x["delta"]) for x in lines) == [("refund", PRICE), ("run", -PRICE)]
    assert srv.state.ledger.balance(user["id"]) == 100

    ok = c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c, "do")}).json()
    assert ok["status"] == "succeeded"
    wait_settled(srv.state, user["id"], 2)
    assert srv.state.ledger.balance(user["id"]) == 100 - PRICE

    dash = c.get("/api/v1/analytics/dashboard?days=7").json()
    today = dash["usage"]["series"][-1]
    assert today["jobs"] == 2 and today["steps"] == 2
    assert today["credits"] == PRICE  # the refunded run cost nothing
    assert today["cost_saving_minutes"] == 3
    assert len(dash["usage"]["series"]) == 7
    assert "admin" not in dash


def test_a_refunded_free_run_gives_the_daily_run_back(srv):
    user, key = srv.user_with_key("free@example.com")
    c = srv.client(key)
    r = c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c, "crash")}).json()
    assert r["status"] == "failed"
    wait_settled(srv.state, user["id"], 1)
    again = c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c, "do")})
    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    third = c.post("/api/v1/run", json={"pipeline_id": pipeline(c, "do")})
    assert third.status_code == 402


def test_unlimited_is_the_default_without_stripe(tmp_path):
    s = LiveServer(make_app(tmp_path, plugins=[("work", Work())]))
    try:
        user, key = s.user_with_key("free@example.com")
        c = s.client(key)
        pid = pipeline(c)
        for _ in range(3):
            assert c.post("/api/v1/run", json={"pipeline_id": pid}).status_code == 202
        info = c.get("/api/v1/billing").json()
        assert info["billing"] == "unlimited" and info["enforced"] is False
        r = c.post("/api/v1/billing/checkout", json={"plan": "pro"})
        assert r.status_code == 503
        assert "STRIPE_SECRET_KEY" in r.json()["error"]["message"]
        assert c.post("/api/v1/billing/portal").status_code == 503
        w = s.client().post("/api/v1/billing/webhook", data=b"{}")
        assert w.status_code == 503 and "STRIPE_WEBHOOK_SECRET" in w.json()["error"]["message"]
    finally:
        s.stop()


def test_price_overrides_from_configuration(tmp_path):
    s = serve(tmp_path, env={"LEVQOR_PRICES": "work.do=2"})
    try:
        user, key = s.user_with_key("pro@example.com", plan="pro")
        s.state.ledger.grant(user["id"], 2)
        c = s.client(key)
        pid = pipeline(c)
        assert c.post("/api/v1/run", json={"pipeline_id": pid}).status_code == 202
        assert c.post("/api/v1/run", json={"pipeline_id": pid}).status_code == 402
    finally:
        s.stop()


# ------------------------------------------------------------------ referrals and analytics
def test_referral_rewards_both_sides_once_after_the_first_success(srv):
    from levqor_host.growth.analytics import record_signup

    st = srv.state
    referrer, rkey = srv.user_with_key("ref@example.com", plan="pro")
    new, nkey = srv.user_with_key("new@example.com", plan="pro")
    st.ledger.grant(new["id"], 50)
    c = srv.client(nkey)
    r = c.post(
        "/api/v1/referrals/claim",
        json={"code": referrer["referral_code"].lower(), "utm_source": "newsletter"},
    )
    assert r.status_code == 201, r.text
    assert (
        c.post("/api/v1/referrals/claim", json={"code": referrer["referral_code"]}).status_code
        == 409
    )
    own = srv.client(rkey).post("/api/v1/referrals/claim", json={"code": referrer["referral_code"]})
    assert own.status_code == 400 and own.json()["error"]["code"] == "self_referral"
    assert c.post("/api/v1/referrals/claim", json={"code": "NOPE2345"}).status_code in (404, 409)

    fail = c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c, "crash")}).json()
    assert fail["status"] == "failed"
    wait_settled(st, new["id"], 1)
    assert st.ledger.balance(referrer["id"]) == 0  # not yet: no success
    for _ in range(2):
        assert (
            c.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(c)}).json()["status"]
            == "succeeded"
        )
    wait_settled(st, new["id"], 3)
    bonus = st.config.growth.referral_bonus
    assert st.ledger.balance(referrer["id"]) == bonus
    assert st.ledger.balance(new["id"]) == 50 - 2 * PRICE + bonus
    info = srv.client(rkey).get("/api/v1/referrals").json()
    assert info["referred_users"] == 1 and info["rewarded"] == 1

    # sign-up path with ?ref=: a self-referral is refused
    third = st.store.users.create("third@example.com")
    from levqor_host.growth.analytics import ReferralError

    with pytest.raises(ReferralError):
        record_signup(st.ledger, third, ref=third["referral_code"])


def test_events_store_emails_only_as_keyed_hashes(tmp_path):
    s = serve(tmp_path, env={"LEVQOR_ANALYTICS_SECRET": "analytics-secret-1"})
    try:
        from levqor_host.growth.analytics import record_signup
        from levqor_host.store.tables import events

        u = s.state.store.users.create("Person@Example.com")
        record_signup(
            s.state.ledger, u, utm={"utm_source": "x", "utm_medium": "y", "utm_campaign": "z"}
        )
        with s.state.store.read() as conn:
            row = conn.execute(select(events).where(events.c.type == "signup")).one()
        expected = hmac.new(
            b"analytics-secret-1", b"person@example.com", hashlib.sha256
        ).hexdigest()
        assert row.email_hash == expected
        assert row.email_hash != hashlib.sha256(b"person@example.com").hexdigest()
        assert "example.com" not in repr(row.props)
        assert row.props == {"utm_source": "x", "utm_medium": "y", "utm_campaign": "z"}
    finally:
        s.stop()


def test_admin_dashboard_funnel_and_active_users(srv):
    st = srv.state
    admin, akey = srv.user_with_key(
        "admin@example.com",
        is_admin=True,
        plan="business",
        scopes=["pipelines:read", "pipelines:write", "runs:execute", "admin"],
    )
    st.ledger.grant(admin["id"], 100)
    a = srv.client(akey)
    assert (
        a.post("/api/v1/run?wait=10", json={"pipeline_id": pipeline(a)}).json()["status"]
        == "succeeded"
    )
    _, k2 = srv.user_with_key("u2@example.com")
    pipeline(srv.client(k2))
    srv.user_with_key("u3@example.com")
    with st.ledger.transaction() as tx:
        tx.event("checkout_completed", admin["id"], props={"amount": 1900, "currency": "usd"})
    wait_settled(st, admin["id"], 1)
    dash = a.get("/api/v1/analytics/dashboard").json()
    funnel = {f["step"]: f for f in dash["admin"]["funnel"]}
    assert funnel["signed_up"]["users"] == 3
    assert funnel["created_pipeline"]["users"] == 2
    assert funnel["ran_pipeline"]["users"] == 1
    assert funnel["paid"]["users"] == 1
    assert funnel["created_pipeline"]["rate_from_previous"] == round(2 / 3, 4)
    assert funnel["ran_pipeline"]["rate_from_previous"] == 0.5
    assert dash["admin"]["active_users"]["day"] == 1
    assert dash["admin"]["revenue"]["amount_by_currency"] == {"usd": 1900}
    assert dash["admin"]["events"]["pipeline_created"] == 2
    assert a.get("/api/v1/analytics/dashboard?days=0").status_code == 400


def test_a_loop_is_charged_for_the_items_that_ran_and_an_untaken_branch_is_free(srv):
    """The run reserves each action step once; its settlement charges every priced step that
    ran (here 3 of 4 items take the priced path), never taking the balance below zero."""
    user, key = srv.user_with_key("loop@example.com", plan="pro")
    srv.state.ledger.grant(user["id"], 100)
    c = srv.client(key)
    loop_doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "each",
                "type": "for_each",
                "items": "{{ trigger.n }}",
                "steps": [
                    {
                        "id": "route",
                        "type": "branch",
                        "paths": [{"if": "{{ item > 0 }}", "steps": [{"id": "s", "connector": "work", "action": "do", "payload": {}}]}],
                    }
                ],
            }
        ],
    }
    pid = c.post("/api/v1/pipelines", json={"name": "loop", "pipeline": loop_doc}).json()["id"]
    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"n": [0, 1, 2, 3]}}).json()
    assert run["status"] == "succeeded", run
    wait_settled(srv.state, user["id"], 1)
    assert srv.state.ledger.balance(user["id"]) == 100 - 3 * PRICE
    lines = [x["delta"] for x in srv.state.ledger.lines(user["id"]) if x["run_id"] == run["id"]]
    assert sorted(lines) == [-2 * PRICE, -PRICE]  # the reservation, then the items beyond it
    # a balance too small for every item: charged down to zero, never below
    srv.state.ledger.grant(user["id"], -(100 - 3 * PRICE) + PRICE + 2)
    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"n": [1, 1, 1]}}).json()
    assert run["status"] == "succeeded"
    wait_settled(srv.state, user["id"], 2)
    assert srv.state.ledger.balance(user["id"]) == 0
