"""The dashboard end to end in Chromium: sign-in, the AI builder, the step editor, credentials, runs
(live, retry), billing to Stripe Checkout, support, error reports, usage, referrals, marketplace.

Every test checks (in the ``page`` fixture) that the browser reported no Content-Security-Policy
violation and no unexpected script error, and saves screenshots under test-artifacts/browser/."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from browser_support import EMAIL, PASSWORD, shot, sign_in

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

PAGES = [
    "/signin",
    "/",
    "/pipelines/new",
    "/pipelines/pl_x",
    "/runs",
    "/runs/run_x",
    "/credentials",
    "/usage",
    "/billing",
    "/referrals",
    "/marketplace",
]


def plan_answer(text: str = "New arrival: {{ trigger.name }}") -> dict:
    return {
        "explanation": "Posts the name of each arrival to your Slack channel.",
        "pipeline": {
            "levqor": 1,
            "name": "arrivals to Slack",
            "trigger": {"type": "webhook", "wait": True},
            "steps": [
                {
                    "id": "notify",
                    "connector": "slack",
                    "action": "post_message",
                    "credential": "team-slack",
                    "payload": {"text": text},
                }
            ],
        },
    }


def api_session(dash) -> tuple[requests.Session, str]:
    """A signed-in requests session (the same cookie sign-in as the browser) and its CSRF token."""
    s = requests.Session()
    r = s.post(dash.url + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return s, r.json()["csrf_token"]


def wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- sign-in
def test_sign_in_out_and_the_csp_on_every_page(page, dash, console):
    for path in PAGES:
        r = requests.get(dash.url + path, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), path
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        # nothing inline that the CSP would have to allow
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
        assert not re.search(r"\son[a-z]+\s*=", r.text), path
        assert " style=" not in r.text, path
        assert "http://" not in r.text.replace(dash.url, "") and "https://" not in r.text, path

    # a page that needs sign-in sends you to the sign-in page and back
    page.goto("/runs")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fruns$"))
    expect(page.locator("#signin-notice")).to_have_text("Sign in to continue.")
    shot(page, "01-signin")
    # keyboard only, and a wrong password first
    page.get_by_label("Email", exact=True).focus()
    page.keyboard.type(EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    expect(page.locator("#signin-error")).to_have_text("Wrong email or password.")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(dash.url + "/runs")
    expect(page.locator("#who-email")).to_have_text(EMAIL)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["levqor_session"]["httpOnly"] and cookies["levqor_session"]["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/signin\?signed_out=1$"))
    expect(page.locator("#signin-notice")).to_have_text("You are signed out.")
    assert page.request.get("/api/v1/me").status == 401

    # the Supabase token form: this host has no Supabase configured and says what to set
    page.get_by_label("Access token", exact=True).fill("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#token-error")).to_contain_text("SUPABASE_JWT_SECRET")

    # the CSP detector of the page fixture works: an inline handler is refused and seen
    page.evaluate(
        "() => { const d = document.createElement('div');"
        ' d.innerHTML = \'<img src="/nope.png" onerror="window.pwned = 1">\';'
        " document.body.append(d); }"
    )
    wait_for(lambda: console.csp_violations, what="the CSP violation report")
    assert page.evaluate("window.pwned") is None
    console.messages.clear()  # the planted violation is not the dashboard's


# --------------------------------------------------------------------------- the builder
def test_plan_edit_add_credential_and_run_to_success(page, dash):
    sign_in(page, dash)
    page.get_by_role("link", name="New pipeline").click()
    page.wait_for_url(dash.url + "/pipelines/new")
    dash.ai.answer_plan(plan_answer())
    dash.ai.delay_next(0.8)  # long enough to see the spinner
    page.get_by_label("What should happen?").fill("when a webhook arrives, post its name to Slack")
    page.get_by_role("button", name="Plan it").click()
    expect(page.locator("#plan-spinner")).to_be_visible()
    step = page.locator('.step-card[data-step-id="notify"]')
    expect(step).to_be_visible()
    expect(page.locator("#plan-spinner")).to_be_hidden()
    expect(page.locator("#plan-explanation")).to_contain_text("Posts the name")
    expect(page.locator("#warnings")).to_contain_text("team-slack")
    assert page.get_by_label("Name", exact=True).input_value() == "arrivals to Slack"
    # the form comes from the action's JSON Schema: fields, types, examples
    text = step.locator('.field[data-pointer="/steps/0/payload/text"] textarea')
    expect(text).to_have_value("New arrival: {{ trigger.name }}")
    thread = step.locator('.field[data-pointer="/steps/0/payload/thread_ts"] input')
    expect(text).to_have_attribute("placeholder", re.compile(r"^e\.g\. New order"))  # the example
    expect(step.get_by_role("textbox", name="thread_ts")).to_have_count(1)
    # edit the step; a bad value comes back as a 422 problem shown at its field
    text.fill("Hello {{ trigger.name }} from the dashboard")
    thread.fill("not-a-timestamp")
    page.get_by_role("button", name="Save").click()
    err = step.locator('.field[data-pointer="/steps/0/payload/thread_ts"] .field-error')
    expect(err).to_contain_text("does not match")
    expect(thread).to_have_attribute("aria-invalid", "true")
    expect(thread).to_be_focused()
    shot(page, "02-builder-validation")
    thread.fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 1")
    page.wait_for_url(re.compile(r"/pipelines/pl_"))
    pid = page.url.rsplit("/", 1)[-1]
    webhook = page.get_by_label("Webhook URL")
    expect(webhook).to_have_value(re.compile(re.escape(dash.url) + r"/hooks/\S+"))

    # a schedule shows its next fire times; a bad cron is shown at the field
    page.get_by_label("Starts").select_option("schedule")
    cron = page.get_by_label("Cron expression")
    cron.fill("61 * * * *")
    expect(page.locator('.field[data-pointer="/trigger/cron"] .field-error')).to_be_visible()
    cron.fill("0 3 1 1 *")
    page.get_by_label("Time zone").fill("Europe/Paris")
    expect(page.locator("#next-fires li[data-iso]")).to_have_count(5)
    first = page.locator("#next-fires li[data-iso]").first.get_attribute("data-iso")
    assert first.endswith("T03:00:00+01:00"), first
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 2")
    # version history: the difference between version 1 and 2
    page.get_by_label("Compare", exact=True).select_option("1")
    page.get_by_label("with", exact=True).select_option("2")
    page.get_by_role("button", name="Show the difference").click()
    expect(page.locator("#diff .ins")).to_contain_text(['+     "cron": "0 3 1 1 *",'])
    expect(page.locator("#diff .del").first).to_contain_text('"type": "webhook"')
    shot(page, "03-builder")
    # back to the webhook trigger (version 3), the one the plan asked for
    page.get_by_label("Starts").select_option("webhook")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 3")

    # the missing credential: the warning links to the credential form, filled in
    page.get_by_role("link", name="add it now").click()
    page.wait_for_url(re.compile(r"/credentials\?connector=slack&name=team-slack"))
    expect(page.locator("#cred-name")).to_have_value("team-slack")
    secret_input = page.get_by_label(re.compile("Webhook URL"))
    expect(secret_input).to_have_attribute("type", "password")  # writeOnly
    secret_input.fill("not a url")
    page.get_by_role("button", name="Add credential").click()
    expect(page.locator('.field[data-pointer="/values/webhook_url"] .field-error')).to_contain_text(
        "does not match the credential schema"
    )
    secret_input.fill(dash.slack.webhook_url)
    page.get_by_role("button", name="Add credential").click()
    card = page.locator('[data-credential="team-slack"]')
    expect(card).to_be_visible()
    expect(secret_input).to_have_value("")  # never shown again
    assert dash.slack.secret not in page.content()
    card.get_by_role("button", name="Test").click()
    # Slack incoming webhooks have no read-only endpoint: the connector says it cannot check
    expect(card.locator("[role=status]")).to_have_text(
        "connector 'slack' offers no credential check"
    )
    shot(page, "04-credentials")

    # run it and watch the run page reach "succeeded"
    page.goto(f"/pipelines/{pid}")
    page.get_by_label(re.compile("Trigger data")).fill('{"name": "Ada"}')
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-run-status", "succeeded", timeout=60_000)
    step_card = page.locator('.run-step[data-step="notify"]')
    expect(step_card).to_have_attribute("data-status", "succeeded")
    expect(step_card.locator(".attempts")).to_have_text("1")
    expect(step_card).to_contain_text("Output")
    assert {"text": "Hello Ada from the dashboard"} in dash.slack.messages
    assert dash.slack.secret not in page.content()  # the webhook URL is redacted everywhere
    shot(page, "05-run-succeeded")

    # the pipelines list shows the last run's status; the runs list has the run
    page.goto("/")
    expect(page.locator(f'tr[data-pipeline="{pid}"] .last-run [data-status]')).to_have_text(
        "succeeded"
    )
    shot(page, "06-pipelines")
    page.goto("/runs")
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("arrivals to Slack")
    shot(page, "07-runs")


# --------------------------------------------------------------------------- retry
def test_a_failed_run_is_retried_from_the_failed_step(page, dash):
    s, csrf = api_session(dash)
    h = {"X-CSRF-Token": csrf}
    r = s.post(
        dash.url + "/api/v1/credentials",
        headers=h,
        json={
            "name": "retry-slack",
            "connector": "slack",
            "values": {"webhook_url": dash.slack.webhook_url},
        },
    )
    assert r.status_code == 201, r.text
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "shape",
                "connector": "core",
                "action": "transform",
                "payload": {"value": {"greeting": "Hi {{ trigger.who }}"}},
            },
            {
                "id": "notify",
                "connector": "slack",
                "action": "post_message",
                "credential": "retry-slack",
                "payload": {"text": "{{ steps.shape.output.value.greeting }} (retried)"},
            },
        ],
    }
    r = s.post(
        dash.url + "/api/v1/pipelines", headers=h, json={"name": "retry me", "pipeline": doc}
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]

    sign_in(page, dash, f"/pipelines/{pid}")
    dash.slack.fail_next(404, "no_service")  # a permanent failure: no retry inside the run
    page.get_by_label(re.compile("Trigger data")).fill('{"who": "Grace"}')
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    failed_url = page.url
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "failed", timeout=20_000
    )
    expect(page.locator('.run-step[data-step="shape"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    notify = page.locator('.run-step[data-step="notify"]')
    expect(notify).to_have_attribute("data-status", "failed")
    expect(notify.locator(".step-error")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    shot(page, "08-run-failed")

    page.get_by_role("button", name="Retry from the failed step").click()
    page.wait_for_url(lambda u: "/runs/run_" in u and u != failed_url)
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=20_000
    )
    expect(page.locator("#run-facts")).to_contain_text("Retry of")
    assert {"text": "Hi Grace (retried)"} in dash.slack.messages
    shot(page, "09-run-retried")


def test_a_running_run_is_cancelled_from_its_page(page, dash):
    s, csrf = api_session(dash)
    h = {"X-CSRF-Token": csrf}
    r = s.post(
        dash.url + "/api/v1/credentials",
        headers=h,
        json={
            "name": "slow-slack",
            "connector": "slack",
            "values": {"webhook_url": dash.slack.webhook_url},
        },
    )
    assert r.status_code == 201, r.text
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "slow",
                "connector": "slack",
                "action": "post_message",
                "credential": "slow-slack",
                "payload": {"text": "slow one"},
            },
            {"id": "after", "connector": "core", "action": "transform", "payload": {"value": 1}},
        ],
    }
    r = s.post(
        dash.url + "/api/v1/pipelines", headers=h, json={"name": "cancel me", "pipeline": doc}
    )
    assert r.status_code == 201, r.text
    sign_in(page, dash, f"/pipelines/{r.json()['id']}")
    dash.slack.fail_next(200, "ok", delay=15)  # Slack answers slowly: the run stays running, even on a busy machine
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "running")
    expect(page.locator('.run-step[data-step="after"]')).to_have_attribute("data-status", "pending")
    shot(page, "09b-run-running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "cancelled", timeout=60_000
    )
    # the step after the cancel never ran
    expect(page.locator('.run-step[data-step="after"]')).to_have_attribute(
        "data-status", re.compile(r"^(skipped|cancelled)$")
    )
    shot(page, "09c-run-cancelled")
    expect(page.get_by_role("button", name="Retry from the failed step")).to_be_visible()

    # archive the pipeline from the builder (two clicks: the second confirms)
    page.get_by_role("link", name="cancel me").click()
    archive = page.get_by_role("button", name="Archive")
    archive.click()
    page.get_by_role("button", name=re.compile("Really archive")).click()
    page.wait_for_url(dash.url + "/?archived=1")
    expect(page.locator("#checkout-notice")).to_contain_text("archived")
    expect(page.get_by_role("link", name="cancel me")).to_have_count(0)


# --------------------------------------------------------------------------- billing
def test_billing_goes_to_stripe_checkout(page, dash):
    sign_in(page, dash, "/billing")
    expect(page.locator("#plan-name")).to_have_text("Business")
    expect(page.locator("#balance")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator('button[data-plan="business"]')).to_be_disabled()  # the current plan
    shot(page, "10-billing")
    before = len(dash.stripe.sessions)
    page.locator('button[data-pack="starter"]').click()
    page.wait_for_url(re.compile(re.escape(dash.stripe.url) + r"/c/pay/cs_test_\d+$"))
    expect(page.get_by_role("heading", name="Fake Stripe Checkout")).to_be_visible()
    form = dash.stripe.sessions[before]
    assert form["mode"] == "payment" and form["line_items[0][price]"] == "price_starter"
    assert form["success_url"] == dash.url + "/billing?checkout=success"
    shot(page, "11-stripe-checkout")
    page.goto("/billing?checkout=cancelled")
    expect(page.locator("#checkout-notice")).to_contain_text("nothing was charged")


def test_billing_off_state(page, dash, tmp_path):
    """A host without Stripe: the page says billing is off, with no buy button."""
    from e2e_support import LiveServer, make_app
    from levqor_host.security.passwords import hash_password

    srv = LiveServer(make_app(tmp_path, env={"LEVQOR_DEV": "1"}, start_workers=False))
    try:
        u = srv.state.store.users.create("solo@example.com")
        srv.state.store.auth.set_password_hash(u["id"], hash_password("solo-password-123"))
        page.goto(srv.url + "/signin?next=/billing")
        page.get_by_label("Email", exact=True).fill("solo@example.com")
        page.get_by_label("Password", exact=True).fill("solo-password-123")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(srv.url + "/billing")
        expect(page.locator("#billing-off")).to_contain_text("Billing is off")
        expect(page.locator("#billing button")).to_have_count(0)
        shot(page, "12-billing-off")
    finally:
        srv.stop()


# --------------------------------------------------------------------------- support, errors
def test_support_widget_and_script_errors_reach_the_inboxes(page, dash, request):
    request.node.expected_page_errors = ("dashboard-test-boom",)
    sign_in(page, dash, "/marketplace")
    page.get_by_role("button", name="Help").click()
    expect(page.get_by_label("Your email")).to_have_value(EMAIL)
    page.get_by_label("Subject").fill("Dashboard question")
    page.get_by_label("Message").fill("How do I add a schedule?")
    shot(page, "13-support")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#support-done")).to_contain_text("Thanks")
    lines = wait_for(
        lambda: [json.loads(x) for x in dash.jsonl("support.jsonl")], what="support.jsonl"
    )
    assert any(x.get("subject") == "Dashboard question" for x in lines), lines

    # an uncaught script error is reported by the global handler
    page.evaluate("setTimeout(() => { throw new Error('dashboard-test-boom') }, 0)")
    errors = wait_for(
        lambda: [x for x in dash.jsonl("errors.jsonl") if "dashboard-test-boom" in x],
        what="the error report in logs/errors.jsonl",
    )
    e = json.loads(errors[-1])
    assert "/marketplace" in json.dumps(e)
    # and an unhandled promise rejection
    page.evaluate("() => { Promise.reject(new Error('dashboard-test-boom-async')); }")
    wait_for(
        lambda: [x for x in dash.jsonl("errors.jsonl") if "dashboard-test-boom-async" in x],
        what="the rejection report",
    )


# --------------------------------------------------------------------------- the other pages
def test_usage_referrals_marketplace_and_a_phone(page, dash, browser):
    sign_in(page, dash, "/usage")
    expect(page.locator("#totals .stat")).to_have_count(6)
    for cid in ("chart-runs", "chart-steps", "chart-credits", "chart-saving", "chart-tokens"):
        # Chart.js drew on the canvas (it sizes it)
        expect(page.locator(f"#{cid}")).to_have_attribute("height", re.compile(r"^\d+$"))
    expect(page.locator("#admin")).to_be_visible()  # an admin sees the funnel
    expect(page.locator("#funnel-table tbody tr")).to_have_count(4)
    shot(page, "14-usage")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dash.url)
    page.goto("/referrals")
    link = page.get_by_label("Link")
    expect(link).to_have_value(re.compile(r"/\?ref=\w+&utm_source=referral&utm_medium=dashboard"))
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator(".toast")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link.input_value()
    expect(page.locator("#referred")).to_have_text("0")
    shot(page, "15-referrals")

    page.goto("/marketplace")
    cards = page.locator("article.connector")
    expect(cards.first).to_be_visible()
    total = cards.count()
    assert total >= 5
    page.get_by_label("Search connectors").fill("slack")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-connector", "slack")
    page.get_by_label("Search connectors").fill("no-such-connector-anywhere")
    expect(cards).to_have_count(0)
    page.get_by_label("Search connectors").fill("")
    expect(cards).to_have_count(total)
    shot(page, "16-marketplace")

    # phone width: the menu folds, pages stay usable
    phone = browser.new_context(
        base_url=dash.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        p = phone.new_page()
        sign_in(p, dash, "/runs")
        nav = p.locator("#nav")
        expect(nav).to_be_hidden()
        p.get_by_role("button", name="Menu").click()
        expect(nav).to_be_visible()
        p.get_by_role("link", name="Pipelines").click()
        p.wait_for_url(dash.url + "/")
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is wider than the phone: {width}px"
        shot(p, "17-phone-pipelines")
        p.goto("/pipelines/new")
        assert p.evaluate("document.documentElement.scrollWidth") <= 390
        shot(p, "18-phone-builder")
    finally:
        phone.close()


def test_the_builder_buttons_wait_for_the_page_to_be_ready(page, dash):
    """A click on Run now before the page's script has attached its handlers would submit the
    form natively and go nowhere: the buttons stay disabled until the page is ready."""
    s, csrf = api_session(dash)
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "one", "connector": "core", "action": "transform", "payload": {"value": 1}}],
    }
    r = s.post(
        dash.url + "/api/v1/pipelines",
        headers={"X-CSRF-Token": csrf},
        json={"name": "ready", "pipeline": doc},
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    sign_in(page, dash, "/pipelines")
    held = []  # the versions request, answered only when the test lets it go
    versions = re.compile(r".*/api/v1/pipelines/[^/]+/versions.*")

    def hold(route) -> None:
        held.append(route)

    page.route(versions, hold)
    page.goto(f"/pipelines/{pid}")
    expect(page.locator("#run-section")).to_be_visible()  # shown as soon as the pipeline loads
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the builder never asked for the pipeline's versions"
    for button in ("Run now", "Save", "Show the difference"):
        expect(page.get_by_role("button", name=button)).to_be_disabled()
    held[0].continue_()
    page.unroute(versions, hold)
    expect(page.get_by_role("button", name="Run now")).to_be_enabled()
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "succeeded")


def test_sign_out_is_not_overtaken_by_a_poll_answered_401(page, dash):
    """The runs page polls; a poll still in flight when you sign out is answered 401 after the
    sign-out. It must not send the browser to "sign in to continue" instead of "signed out"."""
    sign_in(page, dash, "/runs")
    expect(page.locator("#who-email")).to_have_text(EMAIL)
    polls: list = []
    navs: list = []
    poll_url = re.compile(r".*/api/v1/runs(\?.*)?$")
    signed_out_url = re.compile(r".*/signin\?signed_out=1$")

    def hold_poll(route) -> None:
        polls.append(route)

    def hold_nav(route) -> None:
        navs.append(route)

    def wait_for(items: list, what: str) -> None:
        deadline = time.monotonic() + 30
        while not items and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert items, f"no {what} within 30 s"

    page.route(poll_url, hold_poll)
    wait_for(polls, "poll of the runs list")  # the next poll (every 2.5 s) is held
    page.route(signed_out_url, hold_nav)
    # The click starts a navigation that this test holds, so the click must not wait for it.
    page.get_by_role("button", name="Sign out").click(no_wait_after=True)
    wait_for(navs, "navigation to the signed-out page")  # signed out, the page is leaving
    with page.expect_response(poll_url) as answer:
        polls[0].continue_()  # the poll reaches the server now: the session is gone
    assert answer.value.status == 401
    page.wait_for_timeout(300)  # the page handles that answer
    navs[0].continue_()
    page.unroute(poll_url, hold_poll)
    page.unroute(signed_out_url, hold_nav)
    page.wait_for_url(signed_out_url)
    expect(page.locator("#signin-notice")).to_have_text("You are signed out.")
