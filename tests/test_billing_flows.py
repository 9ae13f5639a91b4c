"""Billing across distributions: the host's ledger and mail, the levqor-stripe plugin, and the
local fakes of Stripe (levqor_stripe.fake) and Resend (levqor_gmail.fake), over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe
from e2e_support import (
    Client,
    LiveServer,
    backend_env,
    clean_env,
    free_port,
    make_app,
    wait_until_serving,
)
from levqor_kernel import hookimpl
from levqor_kernel.testing.fakeserver import FakeServer, Reply

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


# ------------------------------------------------------------------ local billing, from a fresh install
def _levqor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_local_billing_grants_plan_credits_and_402s_name_the_grant_command(tmp_path):
    """A fresh ``LEVQOR_BILLING=local`` install: the first admin (business plan, no credits
    yet) runs a paid pipeline at once; a user whose credits are spent gets a 402 naming
    ``levqor credits grant``, and running that command lets the next run through."""
    with FakeServer() as api:
        api.route("POST", "/orders", lambda req: Reply(201, {"ok": True}))
        port = free_port()
        data = tmp_path / "data"
        env = clean_env(
            LEVQOR_DATA_DIR=str(data),
            LEVQOR_BILLING="local",
            LEVQOR_PLANS=json.dumps({"pro": {"monthly_credits": 1}}),
            LEVQOR_WRITE_FIRST_KEY="1",
            LEVQOR_SCHEDULER="off",
            LEVQOR_POLL_INTERVAL="0.05",
            LEVQOR_SSRF_ALLOW="127.0.0.1",
            LEVQOR_RATE_LIMITS="off",
            LEVQOR_ADMIN_EMAIL="owner@example.com",
            PYTHONUNBUFFERED="1",
            **backend_env(tmp_path),
        )
        log = tmp_path / "serve.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "levqor_host.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, proc, log)
            doc = {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "order",
                        "connector": "http",
                        "action": "request",
                        "payload": {"method": "POST", "url": api.url + "/orders", "json": {}},
                    }
                ],
            }

            def run(key: str) -> requests.Response:
                c = Client(base, key)
                pid = c.post("/api/v1/pipelines", json={"name": "orders", "pipeline": doc})
                assert pid.status_code == 201, pid.text
                return c.post("/api/v1/run?wait=20", json={"pipeline_id": pid.json()["id"]})

            admin_key = (data / "first-key.txt").read_text().strip()
            info = Client(base, admin_key).get("/api/v1/billing").json()
            assert info["billing"] == "local" and info["plan"]["name"] == "business"
            assert info["balance"] == 50000  # the plan's credits of this month
            r = run(admin_key)
            assert r.status_code in (200, 201) and r.json()["status"] == "succeeded", r.text
            assert Client(base, admin_key).get("/api/v1/billing").json()["balance"] == 49999

            out = _levqor(env, "users", "create", "bo@example.com", "--plan", "pro", "--with-key")
            assert out.returncode == 0, out.stderr
            bo_key = out.stdout.strip().splitlines()[-1]
            assert run(bo_key).json()["status"] == "succeeded"  # the month's one credit
            refused = run(bo_key)
            assert refused.status_code == 402, refused.text
            err = refused.json()["error"]
            assert "levqor credits grant bo@example.com 1" in err["message"]
            assert "buy credits" not in err["message"]
            assert err["details"]["command"] == "levqor credits grant bo@example.com 1"
            # the operator does what the 402 says; the month's grant is not given twice
            out = _levqor(env, *err["details"]["command"].split()[1:])
            assert out.returncode == 0, out.stderr + out.stdout
            assert run(bo_key).json()["status"] == "succeeded"
            out = _levqor(env, "credits", "balance", "bo@example.com", "--lines", "10")
            assert out.stdout.count("subscription") == 1, out.stdout
        finally:
            proc.terminate()
            proc.wait(20)


def test_a_refusal_in_stripe_mode_names_the_billing_page(tmp_path, fake_stripe):
    env = stripe_env(fake_stripe, LEVQOR_BASE_URL="https://levqor.example.com")
    s = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    try:
        _, key = s.user_with_key("payer@example.com", plan="pro")
        c = s.client(key)
        assert c.get("/api/v1/billing").json()["balance"] == 0  # Stripe's invoices grant
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "s",
                    "connector": "http",
                    "action": "request",
                    "payload": {"url": "https://example.com"},
                }
            ],
        }
        pid = c.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc}).json()["id"]
        r = c.post("/api/v1/run", json={"pipeline_id": pid})
        assert r.status_code == 402, r.text
        err = r.json()["error"]
        assert (
            "buy credits or upgrade your plan at https://levqor.example.com/billing"
            in (err["message"])
        )
        assert err["details"]["url"] == "https://levqor.example.com/billing"
        assert "levqor credits" not in err["message"]
    finally:
        s.stop()


# ------------------------------------------------------------------ the low-credit email
class Spend:
    """A test connector: ``spend.small`` costs 5 credits, ``spend.big`` 90; ``spend.together``
    (5 credits) waits until a second run of it is running too, so both finish at once."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=15)

    @hookimpl
    def describe_schema(self):
        action = {"payload": {"type": "object"}, "output": {"type": "object"}, "example": {}}
        return [
            {
                "name": "spend",
                "title": "Spend",
                "description": "test connector",
                "actions": {
                    "small": {**action, "title": "Small", "price": 5},
                    "big": {**action, "title": "Big", "price": 90},
                    "together": {**action, "title": "Together", "price": 5},
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        if action == "together":
            self.barrier.wait()
        return {"ok": True}


def test_low_credit_email_is_sent_once_per_crossing_of_the_threshold(tmp_path):
    from levqor_gmail.fake import FakeResend

    with FakeResend(api_key="re_test_low_credit_0123456") as resend:
        env = {
            "LEVQOR_BILLING": "local",
            "LEVQOR_PLANS": json.dumps({"pro": {"monthly_credits": 0}}),
            "LEVQOR_LOW_CREDIT_THRESHOLD": "20",
            "RESEND_API_KEY": "re_test_low_credit_0123456",
            "LEVQOR_RESEND_API_BASE": resend.url,
            "LEVQOR_MAIL_FROM": "Levqor <noreply@acme.example>",
        }
        s = LiveServer(make_app(tmp_path, env=env, plugins=[("spend", Spend())]))
        try:
            user, key = s.user_with_key("low@acme.example", plan="pro")
            c = s.client(key)
            pids = {
                action: c.post(
                    "/api/v1/pipelines",
                    json={
                        "name": action,
                        "pipeline": {
                            "levqor": 1,
                            "trigger": {"type": "manual"},
                            "steps": [
                                {"id": "s", "connector": "spend", "action": action, "payload": {}}
                            ],
                        },
                    },
                ).json()["id"]
                for action in ("small", "big", "together")
            }

            def run(action: str) -> dict:
                r = c.post("/api/v1/run?wait=20", json={"pipeline_id": pids[action]})
                assert r.status_code in (200, 201), r.text
                assert r.json()["status"] == "succeeded", r.text
                return r.json()

            def warnings() -> list[dict]:
                """Every low-credit send that reached Resend (retries with the same key too)."""
                return [
                    r.json()
                    for r in resend.server.requests_to("/emails", "POST")
                    if "running low" in r.json()["subject"]
                ]

            ledger = s.state.ledger
            ledger.grant(user["id"], 25)  # 25: at or above the threshold
            # two workers settle two runs at once: 25 -> 15 crosses once, one email
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(run, ["together", "together"]))
            wait_for(lambda: len(warnings()) >= 1)
            time.sleep(0.5)
            assert len(warnings()) == 1 and ledger.balance(user["id"]) == 15
            sent = warnings()[0]
            assert sent["to"] == ["low@acme.example"]
            assert "15 credits, below 20" in sent["text"] and "/billing" in sent["text"]
            # still below: no second email
            run("small")
            time.sleep(0.5)
            assert len(warnings()) == 1 and ledger.balance(user["id"]) == 10
            # a top-up above the threshold, then a run that stays at it: nothing
            ledger.grant(user["id"], 100)
            run("big")
            time.sleep(0.5)
            assert len(warnings()) == 1 and ledger.balance(user["id"]) == 20
            # the next crossing sends again, under another idempotency key
            run("small")
            wait_for(lambda: len(warnings()) >= 2)
            time.sleep(0.5)
            assert len(warnings()) == 2 and "15 credits" in warnings()[1]["text"]
            keys = {
                r.header("Idempotency-Key")
                for r in resend.server.requests_to("/emails", "POST")
                if "running low" in r.json()["subject"]
            }
            assert len(keys) == 2
        finally:
            s.stop()


def wait_for(cond, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
