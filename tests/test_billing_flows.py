"""Billing across distributions: the host's ledger and mail, the levqor-stripe plugin, and the
local fakes of Stripe (levqor_stripe.fake) and Resend (levqor_gmail.fake), over real HTTP."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import stripe
from e2e_support import LiveServer, make_app
from levqor_kernel.testing.fakeserver import Reply

pytest.importorskip("levqor_stripe")

from levqor_stripe.fake import FakeStripe  # noqa: E402

SK = "sk_test_levqor_fake_123"
WHSEC = "whsec_test_levqor"


@pytest.fixture
def fake_stripe():
    with FakeStripe(SK) as f:
        yield f


def stripe_env(fake: FakeStripe, **extra: str) -> dict[str, str]:
    return {
        "STRIPE_SECRET_KEY": SK,
        "STRIPE_WEBHOOK_SECRET": WHSEC,
        "LEVQOR_STRIPE_API_BASE": fake.url,
        "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
        **extra,
    }


def signed(event: dict, secret: str = WHSEC) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery signed with Stripe's scheme."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


# ------------------------------------------------------------------ Stripe answers that are not Stripe's
NOT_STRIPE = [
    pytest.param(
        Reply(
            502,
            "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
            {"Content-Type": "text/html"},
        ),
        id="proxy-html-502",
    ),
    pytest.param(Reply(503, {"message": "upstream unavailable"}), id="json-5xx-without-error"),
    pytest.param(Reply(400, {"detail": "bad"}), id="json-4xx-without-error"),
    pytest.param(Reply(200, {"ok": True}), id="json-200-without-a-session"),
    pytest.param(
        Reply(200, "<html>captive portal</html>", {"Content-Type": "text/html"}), id="html-200"
    ),
    pytest.param(Reply(200, [1, 2]), id="json-200-list"),
]


@pytest.mark.parametrize("reply", NOT_STRIPE)
def test_checkout_and_portal_answer_502_when_stripe_answers_a_non_stripe_body(
    tmp_path, fake_stripe, reply
):
    s = LiveServer(make_app(tmp_path, env=stripe_env(fake_stripe), start_workers=False))
    try:
        user, key = s.user_with_key("buyer@example.com")
        c = s.client(key)
        # the client retries once on 5xx: the proxy answers both times
        fake_stripe.queue("POST", "/v1/checkout/sessions", reply, reply)
        r = c.post("/api/v1/billing/checkout", json={"plan": "pro"})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "stripe_error"
        assert "nginx" not in r.text and "captive" not in r.text and SK not in r.text
        # nothing was recorded for the failed checkout
        with s.state.store.read() as conn:
            from levqor_host.store.tables import events
            from sqlalchemy import func, select

            started = conn.execute(
                select(func.count()).where(events.c.type == "checkout_started")
            ).scalar_one()
        assert started == 0
        # the portal, for a customer, too
        with s.state.ledger.transaction() as tx:
            tx.save_account(user["id"], "stripe", customer_id="cus_1")
        fake_stripe.reset()
        fake_stripe.queue("POST", "/v1/billing_portal/sessions", reply, reply)
        r = c.post("/api/v1/billing/portal", json={})
        assert r.status_code == 502 and r.json()["error"]["code"] == "stripe_error", r.text
        # once Stripe answers again, checkout works
        fake_stripe.reset()
        r = c.post("/api/v1/billing/checkout", json={"plan": "pro"})
        assert r.status_code == 201 and r.json()["url"].startswith("https://checkout.stripe.com/")
    finally:
        s.stop()


# ------------------------------------------------------------------ webhook deliveries and the limits
def test_a_burst_of_signed_webhooks_is_not_throttled_but_forgeries_are(tmp_path, fake_stripe):
    env = stripe_env(
        fake_stripe,
        LEVQOR_RATE_LIMITS="on",
        LEVQOR_RATE_LIMIT_BILLING="10/minute",
        LEVQOR_RATE_LIMIT_IP="20/minute",
    )
    s = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    try:
        now = int(time.time())

        def deliver(i: int, secret: str = WHSEC):
            event = {
                "id": f"evt_burst_{i}",
                "object": "event",
                "type": "customer.created",
                "created": now,
                "data": {"object": {"id": f"cus_{i}", "object": "customer"}},
            }
            body, headers = signed(event, secret)
            return s.client().post("/api/v1/billing/webhook", data=body, headers=headers)

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(deliver, range(30)))
        assert [r.status_code for r in answers] == [200] * 30, [r.text for r in answers]
        # forged signatures from one address are limited after LEVQOR_RATE_LIMIT_BILLING
        forged = [deliver(100 + i, "whsec_someone_else").status_code for i in range(12)]
        assert forged[:10] == [400] * 10 and forged[10:] == [429, 429], forged
        # signed-in billing requests keep their per-user limit
        _, key = s.user_with_key("limits@example.com")
        codes = [s.client(key).get("/api/v1/billing").status_code for _ in range(11)]
        assert codes[:10] == [200] * 10 and codes[10] == 429
    finally:
        s.stop()
