"""levqor-stripe in the host (host and plugin together): against a local fake of the Stripe
API, and webhook deliveries signed with Stripe's real scheme (replayed, shuffled, stale and forged)."""

from __future__ import annotations

import json
import random
import time
from urllib.parse import parse_qs

import pytest
import stripe
from e2e_support import LiveServer, make_app
from levqor_stripe.fake import FakeStripe

SK = "sk_test_levqor_fake_123"
WHSEC = "whsec_test_levqor"


@pytest.fixture
def fake():
    with FakeStripe(SK) as f:
        yield f


@pytest.fixture
def srv(tmp_path, fake):
    env = {
        "STRIPE_SECRET_KEY": SK,
        "STRIPE_WEBHOOK_SECRET": WHSEC,
        "LEVQOR_STRIPE_API_BASE": fake.url,
        "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
        "LEVQOR_STRIPE_PRICE_BUSINESS": "price_biz",
        "LEVQOR_CREDIT_PACKS": json.dumps({"small": {"credits": 1000, "price_id": "price_small"}}),
    }
    s = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    yield s
    s.stop()


def deliver(srv, event: dict, *, secret=WHSEC, timestamp=None, tamper=False):
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    if tamper:
        payload = payload.replace('"credits": "1000"', '"credits": "999999"')
    return srv.client().post(
        "/api/v1/billing/webhook",
        data=payload.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def ev(eid, etype, obj, created):
    return {
        "id": eid,
        "object": "event",
        "type": etype,
        "created": created,
        "data": {"object": obj},
    }


# ------------------------------------------------------------------ checkout and portal
def test_checkout_and_portal_through_the_stripe_api(srv, fake):
    user, key = srv.user_with_key("buyer@example.com")
    c = srv.client(key)
    info = c.get("/api/v1/billing").json()
    assert info["billing"] == "stripe" and info["plan"]["name"] == "free"
    assert info["plan"]["runs_per_day"] == 1
    r = c.post("/api/v1/billing/checkout", json={"plan": "pro"})
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith("https://checkout.stripe.com/")
    form = fake.sessions[-1]
    assert form["mode"] == "subscription" and form["client_reference_id"] == user["id"]
    assert form["line_items[0][price]"] == "price_pro"
    assert form["metadata[levqor_user_id]"] == user["id"]
    assert form["subscription_data[metadata][plan]"] == "pro"
    assert form["customer_email"] == "buyer@example.com"

    r = c.post("/api/v1/billing/checkout", json={"pack": "small"})
    assert r.status_code == 201 and fake.sessions[-1]["mode"] == "payment"
    assert fake.sessions[-1]["metadata[credits]"] == "1000"
    assert c.post("/api/v1/billing/checkout", json={"plan": "free"}).status_code == 422
    assert c.post("/api/v1/billing/checkout", json={"plan": "gold"}).status_code == 404
    assert c.post("/api/v1/billing/checkout", json={}).status_code == 400
    assert srv.client().post("/api/v1/billing/checkout", json={"plan": "pro"}).status_code == 401

    assert c.post("/api/v1/billing/portal").status_code == 409  # no customer yet
    deliver(
        srv,
        ev(
            "evt_c1",
            "checkout.session.completed",
            {
                "id": "cs_test_1",
                "object": "checkout.session",
                "mode": "subscription",
                "client_reference_id": user["id"],
                "customer": "cus_1",
                "subscription": "sub_1",
                "payment_status": "paid",
                "metadata": {"levqor_user_id": user["id"], "plan": "pro"},
                "amount_total": 1900,
                "currency": "usd",
            },
            int(time.time()),
        ),
    )
    p = c.post("/api/v1/billing/portal")
    assert p.status_code == 200 and p.json()["url"].startswith("https://billing.stripe.com/")
    assert parse_qs(fake.requests_to("/v1/billing_portal/sessions")[-1].body.decode())[
        "customer"
    ] == ["cus_1"]
    # the next checkout reuses the customer
    c.post("/api/v1/billing/checkout", json={"pack": "small"})
    assert fake.sessions[-1]["customer"] == "cus_1"


@pytest.fixture
def dev_srv(tmp_path, fake):
    """Like srv, with LEVQOR_DEV=1: plain-HTTP cookies (no Secure flag, no __Host- prefix)."""
    env = {
        "STRIPE_SECRET_KEY": SK,
        "LEVQOR_STRIPE_API_BASE": fake.url,
        "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
        "LEVQOR_DEV": "1",
    }
    s = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    yield s
    s.stop()


def test_a_dashboard_session_opens_billing_through_the_hosts_sign_in(dev_srv, fake):
    """The plugin authenticates with state.authenticate(): the session cookie works, and a
    change without the CSRF token is refused by the host's own check."""
    from levqor_host.security.passwords import hash_password

    srv = dev_srv
    user = srv.state.store.users.create("cookie@example.com")
    srv.state.store.auth.set_password_hash(user["id"], hash_password("correct horse battery"))
    browser = srv.client()
    login = browser.post(
        "/api/v1/auth/login",
        json={"email": "cookie@example.com", "password": "correct horse battery"},
    )
    assert login.status_code == 200, login.text
    csrf = login.json()["csrf_token"]
    info = browser.get("/api/v1/billing")
    assert info.status_code == 200, info.text
    assert info.json()["plan"]["name"] == "free"
    r = browser.post("/api/v1/billing/checkout", json={"plan": "pro"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert fake.sessions == []
    r = browser.post(
        "/api/v1/billing/checkout", json={"plan": "pro"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 201, r.text
    assert fake.sessions[-1]["client_reference_id"] == user["id"]
    # signed out: the host's 401 shape
    anon = srv.client().get("/api/v1/billing")
    assert anon.status_code == 401 and anon.json()["error"]["code"] == "unauthorized"
    # an API key without the billing scope: the host's 403 naming it
    _, narrow = srv.user_with_key("narrow@example.com", scopes=["pipelines:read"])
    r = srv.client(narrow).post("/api/v1/billing/checkout", json={"plan": "pro"})
    assert r.status_code == 403 and r.json()["error"]["details"] == {"required_scope": "billing"}


def test_stripe_errors_are_reported_without_the_key(tmp_path, fake):
    env = {
        "STRIPE_SECRET_KEY": "sk_test_wrong",
        "STRIPE_WEBHOOK_SECRET": WHSEC,
        "LEVQOR_STRIPE_API_BASE": fake.url,
        "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
    }
    s = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    try:
        _, key = s.user_with_key("a@example.com")
        r = s.client(key).post("/api/v1/billing/checkout", json={"plan": "pro"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "stripe_error"
        assert "sk_test_wrong" not in r.text
    finally:
        s.stop()


# ------------------------------------------------------------------ webhooks
def _subscription_story(uid, t0):
    return [
        ev(
            "evt_1",
            "checkout.session.completed",
            {
                "id": "cs_1",
                "object": "checkout.session",
                "mode": "subscription",
                "client_reference_id": uid,
                "customer": "cus_9",
                "subscription": "sub_9",
                "payment_status": "paid",
                "metadata": {"levqor_user_id": uid, "plan": "pro"},
                "amount_total": 1900,
                "currency": "usd",
            },
            t0,
        ),
        ev(
            "evt_2",
            "invoice.paid",
            {
                "id": "in_1",
                "object": "invoice",
                "customer": "cus_9",
                "amount_paid": 1900,
                "currency": "usd",
                "parent": {
                    "subscription_details": {"metadata": {"levqor_user_id": uid, "plan": "pro"}}
                },
                "lines": {"data": [{"pricing": {"price_details": {"price": "price_pro"}}}]},
            },
            t0 + 1,
        ),
        ev(
            "evt_3",
            "customer.subscription.updated",
            {
                "id": "sub_9",
                "object": "subscription",
                "customer": "cus_9",
                "status": "active",
                "metadata": {"levqor_user_id": uid},
                "items": {"data": [{"price": {"id": "price_biz"}}]},
            },
            t0 + 2,
        ),
        ev(
            "evt_4",
            "invoice.paid",
            {
                "id": "in_2",
                "object": "invoice",
                "customer": "cus_9",
                "amount_paid": 9900,
                "currency": "usd",
                "parent": {"subscription_details": {"metadata": {"levqor_user_id": uid}}},
                "lines": {"data": [{"price": {"id": "price_biz"}}]},
            },
            t0 + 3,
        ),
        ev(
            "evt_5",
            "invoice.payment_failed",
            {
                "id": "in_3",
                "object": "invoice",
                "customer": "cus_9",
                "amount_due": 9900,
                "currency": "usd",
            },
            t0 + 4,
        ),
        ev(
            "evt_6",
            "customer.subscription.deleted",
            {
                "id": "sub_9",
                "object": "subscription",
                "customer": "cus_9",
                "status": "canceled",
                "metadata": {"levqor_user_id": uid},
                "items": {"data": [{"price": {"id": "price_biz"}}]},
            },
            t0 + 5,
        ),
    ]


def _state_of(srv, uid):
    st = srv.state
    return (
        st.store.users.get(uid)["plan"],
        st.ledger.balance(uid),
        sorted((x["reason"], x["delta"]) for x in st.ledger.lines(uid)),
    )


def test_webhooks_in_order_replayed_and_shuffled_end_in_the_same_state(srv):
    t0 = int(time.time()) - 60
    a, _ = srv.user_with_key("a@example.com")
    story = _subscription_story(a["id"], t0)
    plans = []
    for e in story:
        r = deliver(srv, e)
        assert r.status_code == 200, r.text
        plans.append(srv.state.store.users.get(a["id"])["plan"])
    assert plans == ["pro", "pro", "business", "business", "business", "free"]
    expected = _state_of(srv, a["id"])
    assert expected == ("free", 5000 + 50000, [("subscription", 5000), ("subscription", 50000)])
    assert srv.state.ledger.account(a["id"])["status"] == "canceled"

    # every delivery again: nothing changes
    for e in story:
        r = deliver(srv, e)
        assert r.status_code == 200 and r.json()["duplicate"] is True
    assert _state_of(srv, a["id"]) == expected

    # the same story for other users, shuffled and with duplicates, ends the same way
    rng = random.Random(7)
    for n in range(3):
        u, _ = srv.user_with_key(f"shuffle{n}@example.com")
        events = _subscription_story(u["id"], t0)
        for e in events:
            e["id"] += f"_{n}"
            obj = e["data"]["object"]
            for k in ("id", "customer", "subscription"):
                if isinstance(obj.get(k), str):
                    obj[k] += f"_{n}"
        deliveries = events + rng.sample(events, 3)
        rng.shuffle(deliveries)
        for e in deliveries:
            assert deliver(srv, e).status_code == 200
        assert _state_of(srv, u["id"]) == expected, n


def test_credit_pack_purchase_and_forged_or_stale_signatures(srv):
    u, key = srv.user_with_key("pack@example.com")
    pack = ev(
        "evt_pack",
        "checkout.session.completed",
        {
            "id": "cs_pack",
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": u["id"],
            "customer": "cus_p",
            "payment_status": "paid",
            "metadata": {"levqor_user_id": u["id"], "pack": "small", "credits": "1000"},
            "amount_total": 900,
            "currency": "eur",
        },
        int(time.time()),
    )
    stale = deliver(srv, pack, timestamp=int(time.time()) - 301)
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_signature"
    forged = deliver(srv, pack, secret="whsec_someone_else")
    assert forged.status_code == 400
    tampered = deliver(srv, pack, tamper=True)
    assert tampered.status_code == 400
    unsigned = srv.client().post(
        "/api/v1/billing/webhook",
        data=json.dumps(pack),
        headers={"Content-Type": "application/json"},
    )
    assert unsigned.status_code == 400
    assert srv.state.ledger.balance(u["id"]) == 0  # nothing changed
    assert srv.state.ledger.account(u["id"]) is None

    ok = deliver(srv, pack)
    assert ok.status_code == 200 and ok.json()["credits"] == 1000
    assert deliver(srv, pack).json()["duplicate"] is True
    # the same session in another event id does not pay twice either
    pack2 = {**pack, "id": "evt_pack_again"}
    assert deliver(srv, pack2).status_code == 200
    assert srv.state.ledger.balance(u["id"]) == 1000
    info = srv.client(key).get("/api/v1/billing").json()
    assert info["balance"] == 1000 and info["has_customer"] is True


def test_credits_cli(tmp_path):
    from click.testing import CliRunner
    from levqor_host.cli import main

    env = {
        "LEVQOR_DATA_DIR": str(tmp_path / "d"),
        "LEVQOR_BILLING": "local",
        "LEVQOR_EXECUTOR": "off",
        "DATABASE_URL": "",
    }
    runner = CliRunner()
    r = runner.invoke(main, ["users", "create", "ops@example.com"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["credits", "grant", "ops@example.com", "25"], env=env)
    assert r.exit_code == 0, r.output
    assert "balance 25" in r.output
    r = runner.invoke(main, ["credits", "grant", "--", "ops@example.com", "-30"], env=env)
    assert r.exit_code != 0 and "below zero" in r.output
    r = runner.invoke(main, ["credits", "balance", "ops@example.com", "--lines", "5"], env=env)
    assert r.exit_code == 0 and "25 credits" in r.output and "+25  grant" in r.output
    r = runner.invoke(main, ["credits", "balance", "nobody@example.com"], env=env)
    assert r.exit_code != 0
    # sign-up with a referral code and UTM fields
    code = None
    r = runner.invoke(main, ["users", "list"], env=env)
    assert "ops@example.com" in r.output
    from levqor_host.app import create_app
    from levqor_host.config import Config

    app = create_app(Config.from_env({**env}), start_workers=False, start_scheduler=False)
    st = app.extensions["levqor"]
    code = st.store.users.get_by_email("ops@example.com")["referral_code"]
    st.store.close()
    r = runner.invoke(
        main,
        ["users", "create", "friend@example.com", "--ref", code, "--utm-source", "blog"],
        env=env,
    )
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    app = create_app(Config.from_env({**env}), start_workers=False, start_scheduler=False)
    st = app.extensions["levqor"]
    from levqor_host.store.tables import referrals
    from sqlalchemy import select

    with st.store.read() as conn:
        rows = conn.execute(select(referrals)).all()
    st.store.close()
    assert len(rows) == 1 and rows[0].code == code
