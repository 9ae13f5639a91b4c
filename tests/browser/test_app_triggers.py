"""The builder's "App event" trigger in Chromium, with a test connector (Tally, from
tests/app_trigger_plugin.py, installed on the server's PYTHONPATH) against its fake: choose the
app, event and account by clicking, fill its settings, Test trigger shows the items upstream,
save, switch the pipeline off and on from its page and the list, and see the trigger's status,
failing included.

Waits are on events (a server answer, an element's state) with generous bounds, never sleeps."""

from __future__ import annotations

import os
import re

import pytest
from app_trigger_plugin import FakeTally, install_dist
from browser_support import api_session, serve_dashboard, shot, sign_in

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def tally():
    with FakeTally() as fake:
        yield fake


@pytest.fixture(scope="module")
def dash(chromium, tmp_path_factory, tally):
    tmp = tmp_path_factory.mktemp("app-triggers")
    site = install_dist(tmp / "site")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PYTHONPATH": path,
        # a polling trigger may be checked every second here, and shows failing after one failure
        "LEVQOR_POLL_MIN_INTERVAL": "1",
        "LEVQOR_TRIGGER_FAIL_AFTER": "1",
    }
    with serve_dashboard(tmp, env) as d:
        yield d


def add_credential(dash, name: str, values: dict) -> None:
    s, headers = api_session(dash)
    r = s.post(
        dash.url + "/api/v1/credentials",
        headers=headers,
        json={"name": name, "connector": "tally", "values": values},
    )
    assert r.status_code == 201, r.text


def test_build_an_app_trigger_by_clicking_test_it_save_and_switch_it_off_and_on(page, dash, tally):
    add_credential(dash, "my-tally", tally.credentials())
    tally.add("orders", "first order")
    tally.add("orders", "second order")
    tally.add("other", "elsewhere")

    sign_in(page, dash, "/pipelines/new")
    page.get_by_label("Name", exact=True).fill("new orders")
    starts = page.get_by_label("Starts")
    expect(starts).to_be_enabled()  # the builder has its catalog and its handlers
    starts.select_option("app")
    app = page.locator("#trigger-app")
    expect(app).to_be_visible()
    # only connectors with triggers are offered (the installed ones: Gmail, Sheets, Telegram...)
    apps = page.get_by_label("App", exact=True)
    expect(apps.locator('option[value="tally"]')).to_have_count(1)
    expect(apps.locator('option[value="core"]')).to_have_count(0)
    apps.select_option("tally")
    event = page.get_by_label("Event")
    # each event says how it starts runs: instant, or how often it is checked
    expect(event.locator('option[value="new_entry"]')).to_have_text("New entry (every 5 min)")
    expect(event.locator('option[value="pushed"]')).to_have_text("Entry pushed (instant)")
    expect(page.get_by_label("Check every (minutes)")).to_have_value("5")
    # the account: the connector's credentials only, and a link to add one
    account = page.get_by_label("Account (credential)")
    expect(account.locator("option")).to_have_text(["choose…", "my-tally"])
    expect(page.locator("#app-add-credential")).to_have_attribute(
        "href", re.compile(r"/credentials\?connector=tally")
    )
    account.select_option("my-tally")
    # the settings form comes from the trigger's config schema
    board = app.locator('.field[data-pointer="/trigger/config/board"]').get_by_label("Board")
    expect(board).to_have_value("main")  # the trigger's example
    board.fill("orders")
    page.get_by_role("button", name="Test trigger").click()
    samples = page.locator("#trigger-samples")
    expect(samples.locator(".sample-item")).to_have_count(2)
    expect(samples).to_contain_text("first order")
    expect(samples).to_contain_text("second order")
    expect(samples).not_to_contain_text("elsewhere")
    assert len(tally.server.requests_to("/boards/orders/entries", "GET")) == 1

    # a step built with the tested item's fields: the picker offers trigger.text
    page.locator('[data-list="/steps"] > .flow-end button').click()
    dialog = page.locator("dialog.chooser")
    dialog.get_by_label("Search actions").fill("note")
    dialog.locator('button[data-connector="tally"][data-action="note"]').click()
    card = page.locator('.step-card[data-step-id="note"]')
    text = card.locator('.field[data-pointer="/steps/0/payload/text"] textarea')
    card.locator('.field[data-pointer="/steps/0/payload/text"] button.pick').click()
    picker = page.locator("dialog.picker")
    expect(picker.locator('[data-source="trigger"]')).to_contain_text("from Test trigger")
    picker.locator('button[data-ref="{{ trigger.text }}"]').click()
    expect(text).to_have_value("{{ trigger.text }}")
    card.get_by_label("Credential").select_option("my-tally")
    shot(page, "60-app-trigger-builder")

    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 1")
    page.wait_for_url(re.compile(r"/pipelines/pl_"))
    pid = page.url.rsplit("/", 1)[-1]
    s, headers = api_session(dash)
    doc = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]
    assert doc["trigger"] == {
        "type": "app",
        "connector": "tally",
        "trigger": "new_entry",
        "credential": "my-tally",
        "config": {"board": "orders"},
        "interval": 300,
    }
    # testing recorded nothing: no run started
    assert s.get(f"{dash.url}/api/v1/runs", params={"pipeline_id": pid}).json()["items"] == []

    # on, with the trigger's status; off and on again from the pipeline's page
    switch = page.get_by_role("switch")
    expect(switch).to_be_checked()
    status = page.locator("#trigger-status")
    expect(status).to_have_attribute("data-state", "active")
    switch.click()
    expect(status).to_have_attribute("data-state", "off")
    expect(switch).not_to_be_checked()
    assert s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["enabled"] is False
    switch.click()
    expect(status).to_have_attribute("data-state", "active")
    assert s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["enabled"] is True

    # the list has the switch and the status too
    page.goto("/")
    row = page.locator(f'tr[data-pipeline="{pid}"]')
    expect(row).to_contain_text("app event")
    row_switch = row.get_by_role("switch")
    expect(row_switch).to_be_checked()
    row_switch.click()
    expect(row.locator(".trigger-status")).to_have_attribute("data-state", "off")
    assert s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["enabled"] is False
    shot(page, "61-app-trigger-list")


def test_a_failing_trigger_says_so_on_its_page_and_in_the_list(page, dash, tally):
    add_credential(dash, "wrong-key", {"api_base": tally.url, "key": "not-the-key"})
    s, headers = api_session(dash)
    doc = {
        "levqor": 1,
        "trigger": {
            "type": "app",
            "connector": "tally",
            "trigger": "new_entry",
            "credential": "wrong-key",
            "config": {"board": "orders"},
            "interval": 1,
        },
        "steps": [{"id": "note", "connector": "tally", "action": "note", "credential": "wrong-key",
                   "payload": {"text": "{{ trigger.text }}"}}],
    }  # fmt: skip
    r = s.post(
        f"{dash.url}/api/v1/pipelines", headers=headers, json={"name": "bad key", "pipeline": doc}
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    sign_in(page, dash, f"/pipelines/{pid}")
    status = page.locator("#trigger-status")
    # the poller checks it within a second or two; the page shows the state it loaded with
    for _ in range(60):
        if (
            s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["trigger_status"]["status"]
            == "failing"
        ):
            break
        page.wait_for_timeout(500)
    page.reload()
    expect(status).to_have_attribute("data-state", "failing")
    expect(status).to_contain_text("Trigger failing: ")
    expect(status).to_contain_text("Tally refused the API key")
    page.goto("/")
    row = page.locator(f'tr[data-pipeline="{pid}"]')
    expect(row.locator(".trigger-status")).to_contain_text("Trigger failing: ")
    shot(page, "62-app-trigger-failing")


def test_the_marketplace_lists_triggers_and_their_kinds(page, dash):
    page.goto("/marketplace")
    card = page.locator('article.connector[data-connector="tally"]')
    expect(card).to_be_visible()
    card.locator("details.triggers summary").click()
    expect(card.locator('[data-trigger="new_entry"] [data-kind]')).to_have_text("polling")
    expect(card.locator('[data-trigger="pushed"] [data-kind]')).to_have_text("instant")
    expect(card.locator(".connect")).to_have_count(0)  # no OAuth2 option
