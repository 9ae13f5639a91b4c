"""The flow builder in Chromium: steps as connected cards, a chooser of connector and action for a
new step, "+" between cards, collapsing, moving, saving through the API.

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


def api_session(dash) -> tuple[requests.Session, dict]:
    """A signed-in requests session (the browser's cookie sign-in) and its CSRF header."""
    s = requests.Session()
    r = s.post(dash.url + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return s, {"X-CSRF-Token": r.json()["csrf_token"]}


def choose(page, *, kind: str | None = None, connector: str = "", action: str = "") -> None:
    """Pick a construct or an action in the open chooser."""
    dialog = page.locator("dialog.chooser")
    expect(dialog).to_be_visible()
    if kind:
        dialog.locator(f'button[data-kind="{kind}"]').click()
    else:
        dialog.get_by_label("Search actions").fill(action)
        dialog.locator(f'button[data-connector="{connector}"][data-action="{action}"]').click()
    expect(dialog).to_have_count(0)


def add_at_end(page, list_pointer: str, **what) -> None:
    page.locator(f'[data-list="{list_pointer}"] > .flow-end button').click()
    choose(page, **what)


def test_the_chooser_adds_actions_anywhere_and_cards_move_and_fold(page, dash):
    sign_in(page, dash, "/pipelines/new")
    add_at_end(page, "/steps", connector="core", action="transform")
    first = page.locator('.step-card[data-step-id="transform"]')
    expect(first).to_have_attribute("data-pointer", "/steps/0")
    # the payload form comes from the action's schema: Transform data has its "value" field
    value = first.locator('.field[data-pointer="/steps/0/payload/value"] textarea')
    value.fill('{"greeting": "Hi {{ trigger.who }}"}')
    # a step added before it, by the "+" between cards; a closed chooser adds nothing
    page.get_by_role("button", name="Add a step before transform").click()
    page.locator("dialog.chooser").get_by_role("button", name="Close").click()
    expect(page.locator(".step-card")).to_have_count(1)
    page.get_by_role("button", name="Add a step before transform").click()
    choose(page, connector="core", action="transform")
    second = page.locator('.step-card[data-step-id="transform_2"]')
    expect(second).to_have_attribute("data-pointer", "/steps/0")
    expect(second.locator("h3")).to_be_focused()
    second.get_by_label("Step id").fill("shape")
    second.get_by_label("Step id").press("Tab")
    shape = page.locator('.step-card[data-step-id="shape"]')
    shape.locator('.field[data-pointer="/steps/0/payload/value"] textarea').fill('{"n": 1}')
    page.get_by_role("button", name="Move step shape down").click()
    expect(shape).to_have_attribute("data-pointer", "/steps/1")
    # a card folds to its summary
    page.get_by_role("button", name="Collapse transform").click()
    expect(first.locator(".card-body")).to_be_hidden()
    expect(first.locator("h3")).to_contain_text("Core: Transform data")
    page.get_by_role("button", name="Expand transform").click()
    expect(first.locator(".card-body")).to_be_visible()
    # a duplicate id is caught before saving
    at_1 = page.locator('.step-card[data-pointer="/steps/1"]')
    at_1.get_by_label("Step id").fill("transform")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#problems")).to_contain_text("is taken by /steps/0")
    at_1.get_by_label("Step id").fill("shape")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 1")
    page.wait_for_url(re.compile(r"/pipelines/pl_"))
    shot(page, "30-flow-builder")
    pid = page.url.rsplit("/", 1)[-1]
    s, _ = api_session(dash)
    steps = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]["steps"]
    assert [(x["id"], x["connector"], x["action"]) for x in steps] == [
        ("transform", "core", "transform"),
        ("shape", "core", "transform"),
    ]
    assert steps[0]["payload"] == {"value": {"greeting": "Hi {{ trigger.who }}"}}
