"""A referral link followed before a first sign-in through a one-time login link (no Supabase) is claimed."""

from __future__ import annotations

import re
import time

import pytest
import requests
from browser_support import EMAIL, PASSWORD

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]  # the module starts its own server


def referrals(session: requests.Session, dash) -> dict:
    return session.get(dash.url + "/api/v1/referrals", timeout=30).json()


def wait_for(pred, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_referral_link_then_a_login_link_records_the_referral(page, dash):
    admin = requests.Session()
    assert admin.post(dash.url + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}).ok
    code = admin.get(dash.url + "/api/v1/me", timeout=30).json()["referral_code"]
    assert referrals(admin, dash)["referred_users"] == 0

    # the visitor follows the referral link (the dashboard sends them on to sign in) ...
    page.goto(f"/?ref={code}&utm_source=referral")
    page.wait_for_url(re.compile(r"/signin"))
    # ... has no way to sign up without Supabase, so the operator creates the account and a login link
    dash.cli("users", "create", "referred@example.com")
    link = re.search(r"https?://\S+/auth/link/\S+", dash.cli("users", "login-link", "referred@example.com")).group(0)
    page.goto(link)
    expect(page.locator("#who-email")).to_have_text("referred@example.com", timeout=30_000)

    # the dashboard claims the remembered code in the background once the user is known
    wait_for(lambda: referrals(admin, dash)["referred_users"] == 1, what="the referral to be recorded")
    visitor = page.request.get("/api/v1/referrals").json()
    assert visitor["referred_by_code"] == code
