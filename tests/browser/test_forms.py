"""Generated forms in Chromium: a credential of several kinds (Email: Resend or Gmail API) chosen
by title, what the marketplace says of it, and the builder's webhook URL.

Waits are on events (a server answer, an element's state) with generous bounds, never sleeps."""

from __future__ import annotations

import re

import pytest
import requests
from browser_support import EMAIL, PASSWORD, shot, sign_in

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

WAIT = 30_000  # ms: CI machines are busy
RESEND_KEY = "re_dashboard_variant_5d4c3b2a"
GOOGLE_TOKEN = "ya29.dashboard-variant-never-sent"


def api_session(dash) -> tuple[requests.Session, dict]:
    """A signed-in requests session (the browser's cookie sign-in) and its CSRF header."""
    s = requests.Session()
    r = s.post(dash.url + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return s, {"X-CSRF-Token": r.json()["csrf_token"]}


def test_email_credential_is_a_choice_between_resend_and_gmail(page, dash):
    from levqor_gmail.fake import FakeResend

    with FakeResend(api_key=RESEND_KEY, restricted=False) as resend:
        sign_in(page, dash, "/credentials?connector=gmail")
        form = page.locator("#cred-fields")
        kind = form.get_by_role("group", name="Kind of credential")
        expect(kind).to_be_visible(timeout=WAIT)
        # a choice by each variant's title, not a bare JSON box
        # Resend and Gmail API (an access token); the connected account is Connect's, not pasted
        expect(kind.get_by_role("radio")).to_have_count(2)
        expect(kind.get_by_role("radio", name=re.compile("Connect"))).to_have_count(0)
        resend_choice = kind.get_by_role("radio", name="Resend", exact=True)
        gmail_choice = kind.get_by_role("radio", name="Gmail API", exact=True)
        expect(form.locator("textarea")).to_have_count(0)
        expect(form.get_by_label(re.compile("JSON"))).to_have_count(0)

        # Gmail API first: its one field, secret; Resend's fields are not on the page
        gmail_choice.check()
        expect(gmail_choice).to_be_checked()
        token = form.get_by_label(re.compile("Google OAuth access token"))
        expect(token).to_be_visible()
        expect(token).to_have_attribute("type", "password")  # writeOnly
        expect(form).to_contain_text("scope gmail.send")  # the variant's description
        expect(form.get_by_label(re.compile("Resend API key"))).to_have_count(0)
        token.fill(GOOGLE_TOKEN)

        # then Resend: its fields replace Gmail's
        resend_choice.check()
        expect(resend_choice).to_be_checked()
        expect(gmail_choice).not_to_be_checked()
        expect(form.get_by_label(re.compile("Google OAuth access token"))).to_have_count(0)
        key = form.get_by_label(re.compile("Resend API key"))
        expect(key).to_have_attribute("type", "password")
        key.fill(RESEND_KEY)
        form.get_by_label(re.compile("API base URL")).fill(resend.url)
        page.locator("#cred-name").fill("team-mail")
        shot(page, "20-credential-variants")

        with page.expect_response(
            lambda r: r.url == dash.url + "/api/v1/credentials" and r.request.method == "POST",
            timeout=WAIT,
        ) as answer:
            page.get_by_role("button", name="Add credential").click()
        assert answer.value.status == 201, answer.value.text()
        # only the chosen variant's fields were sent
        sent = answer.value.request.post_data_json
        assert sent == {
            "name": "team-mail",
            "connector": "gmail",
            "values": {"resend_api_key": RESEND_KEY, "api_base": resend.url},
        }
        card = page.locator('[data-credential="team-mail"]')
        expect(card).to_be_visible(timeout=WAIT)
        expect(key).to_have_value("")  # never shown again
        assert RESEND_KEY not in page.content() and GOOGLE_TOKEN not in page.content()

        # the API has it, and testing it reaches Resend with that key (so both fields are stored)
        s, csrf = api_session(dash)
        items = s.get(dash.url + "/api/v1/credentials", timeout=30).json()["items"]
        cred = next(c for c in items if c["name"] == "team-mail")
        assert cred["connector"] == "gmail"
        r = s.post(f"{dash.url}/api/v1/credentials/{cred['id']}/test", headers=csrf, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True and r.json()["details"]["transport"] == "resend", r.json()
        seen = [q for q in resend.requests if q.path == "/domains"]
        assert seen and seen[-1].header("Authorization") == f"Bearer {RESEND_KEY}"
        # and from the page
        card.get_by_role("button", name="Test").click()
        expect(card.locator("[role=status]")).to_contain_text("works", timeout=WAIT)
        s.delete(f"{dash.url}/api/v1/credentials/{cred['id']}", headers=csrf, timeout=30)


def test_a_plain_credential_form_has_no_choice(page, dash):
    sign_in(page, dash, "/credentials?connector=telegram")
    form = page.locator("#cred-fields")
    expect(form.get_by_label(re.compile("Bot token"))).to_be_visible(timeout=WAIT)
    expect(form.get_by_role("radio")).to_have_count(0)


def test_a_connected_account_is_made_by_connect_not_pasted(page, dash):
    # Slack: an incoming webhook or a Slack app; the app's token comes from Connect only
    sign_in(page, dash, "/credentials?connector=slack")
    form = page.locator("#cred-fields")
    expect(form.get_by_label(re.compile("Webhook URL"))).to_be_visible(timeout=WAIT)
    expect(form.get_by_role("radio")).to_have_count(0)
    expect(form.get_by_label(re.compile("access token", re.I))).to_have_count(0)


def test_the_marketplace_lists_each_kind_of_email_credential(page, dash):
    page.goto("/marketplace")
    card = page.locator('article.connector[data-connector="gmail"]')
    expect(card).to_be_visible(timeout=WAIT)
    expect(card).not_to_contain_text("No credentials needed")
    expect(card.locator("[data-variant]")).to_have_count(3)  # and the account Connect makes
    expect(card.locator('[data-variant="Resend"]')).to_contain_text(
        "resend_api_key (secret), api_base"
    )
    expect(card.locator('[data-variant="Gmail API"]')).to_contain_text(
        "google_access_token (secret)"
    )
    # a connector without a credential still says so
    expect(page.locator('article.connector[data-connector="core"]')).to_contain_text(
        "No credentials needed"
    )


def test_the_builder_shows_no_webhook_url_for_a_pipeline_no_webhook_starts(page, dash):
    s, csrf = api_session(dash)
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "shape", "connector": "core", "action": "transform", "payload": {"value": 1}}
        ],
    }
    r = s.post(
        dash.url + "/api/v1/pipelines",
        headers=csrf,
        json={"name": "by hand", "pipeline": doc},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.json()["webhook_url"] is None
    sign_in(page, dash, f"/pipelines/{pid}")
    expect(page.locator("#save-status")).to_have_text("saved as version 1", timeout=WAIT)
    # the page has attached its handlers once it enables its buttons (data-wait-ready)
    expect(page.get_by_role("button", name="Save")).to_be_enabled(timeout=WAIT)
    # switched to a webhook but not saved yet: no URL (the saved version answers no webhook)
    page.get_by_label("Starts").select_option("webhook")
    url = page.locator("#webhook-url")
    expect(url).to_be_visible()
    expect(url).to_have_value("")
    expect(url).to_have_attribute("placeholder", "save the pipeline to get its URL")
    # saved as a webhook pipeline: the URL it shows starts a run
    with page.expect_response(
        lambda a: a.url == f"{dash.url}/api/v1/pipelines/{pid}" and a.request.method == "PUT",
        timeout=WAIT,
    ) as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 200, answer.value.text()
    expect(url).to_have_value(re.compile(re.escape(dash.url) + r"/hooks/\S+$"), timeout=WAIT)
    hit = requests.post(url.input_value(), json={}, timeout=30)
    assert hit.status_code == 202, hit.text
