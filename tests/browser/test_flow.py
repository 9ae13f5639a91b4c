"""The flow builder in Chromium: steps as connected cards, a chooser of connector and action for a
new step, "+" between cards, collapsing, moving, saving through the API.

Waits are on events (a server answer, an element's state) with generous bounds, never sleeps."""

from __future__ import annotations

import re

import pytest
from browser_support import api_session, shot, sign_in

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]


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


def test_build_a_loop_a_branch_and_an_error_path_by_clicking_then_run_it(page, dash):
    s, headers = api_session(dash)
    r = s.post(
        dash.url + "/api/v1/credentials",
        headers=headers,
        json={
            "name": "flow-slack",
            "connector": "slack",
            "values": {"webhook_url": dash.slack.webhook_url},
        },
    )
    assert r.status_code == 201, r.text
    sign_in(page, dash, "/pipelines/new")
    page.get_by_label("Name", exact=True).fill("orders by size")

    # a loop over the trigger's orders ...
    add_at_end(page, "/steps", kind="for_each")
    each = page.locator('.step-card[data-step-id="each"]')
    items = each.locator('.field[data-pointer="/steps/0/items"] input')
    expect(items).to_have_value("{{ trigger.items }}")
    items.fill("{{ trigger.orders }}")
    # ... whose body is a branch: big orders one way, the others by the default path
    add_at_end(page, "/steps/0/steps", kind="branch")
    route = page.locator('.step-card[data-step-id="route"]')
    expect(route).to_have_attribute("data-pointer", "/steps/0/steps/0")
    big = route.locator('section.path[data-path="paths/0"]')
    big.get_by_label("Path name").fill("big")
    big.get_by_label("Runs when").fill("{{ item.total > 100 }}")
    add_at_end(page, "/steps/0/steps/0/paths/0/steps", connector="core", action="transform")
    page.locator(
        '.field[data-pointer="/steps/0/steps/0/paths/0/steps/0/payload/value"] textarea'
    ).fill('{"big": "{{ item.id }}"}')
    add_at_end(page, "/steps/0/steps/0/default", connector="core", action="transform")
    page.locator('.field[data-pointer="/steps/0/steps/0/default/0/payload/value"] textarea').fill(
        '{"small": "{{ item.id }}"}'
    )
    # then a Slack message with an error path
    add_at_end(page, "/steps", connector="slack", action="post_message")
    notify = page.locator('.step-card[data-step-id="slack"]')
    notify.get_by_label("Step id").fill("notify")
    notify.get_by_label("Credential").select_option("flow-slack")
    page.locator('.field[data-pointer="/steps/1/payload/text"] textarea').fill(
        "{{ steps.each.output | length }} orders"
    )
    notify = page.locator('.step-card[data-pointer="/steps/1"]')
    notify.get_by_label("If it fails").select_option("fallback")
    expect(notify.locator("section.error-path")).to_be_visible()
    add_at_end(page, "/steps/1/on_error", connector="core", action="transform")
    alert = page.locator('.step-card[data-pointer="/steps/1/on_error/0"]')
    alert.get_by_label("Step id").fill("alert")
    page.locator('.field[data-pointer="/steps/1/on_error/0/payload/value"] textarea').fill(
        '{"alerted": "{{ error.message }}"}'
    )
    shot(page, "31-flow-built")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 1")
    expect(page.locator("#problems")).to_be_hidden()
    pid = page.url.rsplit("/", 1)[-1]
    doc = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]
    loop = doc["steps"][0]
    assert loop["type"] == "for_each" and loop["items"] == "{{ trigger.orders }}"
    branch = loop["steps"][0]
    assert branch["type"] == "branch" and branch["paths"][0]["if"] == "{{ item.total > 100 }}"
    assert branch["paths"][0]["steps"][0]["payload"] == {"value": {"big": "{{ item.id }}"}}
    assert branch["default"][0]["id"] == "transform_2"
    assert doc["steps"][1]["on_error"][0]["id"] == "alert"

    # the run: Slack fails for good, the error path runs, the run goes on
    dash.slack.fail_next(404, "no_service")
    page.get_by_label(re.compile("Trigger data")).fill(
        '{"orders": [{"id": "a", "total": 150}, {"id": "b", "total": 20}, {"id": "c", "total": 101}]}'
    )
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    loop_card = page.locator('.run-step[data-step="each"]')
    expect(loop_card.locator(".loop-items > h4")).to_contain_text("Items: 3")
    expect(loop_card.locator('.loop-items > h4 [data-count="succeeded"]')).to_have_text(
        "3 succeeded"
    )
    first = loop_card.locator('.loop-item[data-index="0"]')
    expect(first.locator('.run-step[data-step="each[0].route"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    took = first.locator('.run-step[data-step="each[0].route.paths[0].transform"]')
    expect(took).to_have_attribute("data-status", "succeeded")
    expect(took.locator("xpath=ancestor::section[1]")).to_contain_text("Path 1: big")
    second = loop_card.locator('.loop-item[data-index="1"]')
    expect(
        second.locator('.run-step[data-step="each[1].route.default.transform_2"]')
    ).to_have_attribute("data-status", "succeeded")
    expect(second.locator('.run-step[data-step^="each[1].route.paths"]')).to_have_count(0)
    notify_run = page.locator('.run-step[data-step="notify"]')
    expect(notify_run).to_have_attribute("data-status", "failed")
    fallback = notify_run.locator('section.error-path .run-step[data-step="notify.on_error.alert"]')
    expect(fallback).to_have_attribute("data-status", "succeeded")
    expect(fallback).to_contain_text("alerted")
    shot(page, "32-flow-run")


def test_test_a_step_alone_and_pick_a_field(page, dash):
    s, headers = api_session(dash)
    r = s.post(
        dash.url + "/api/v1/credentials",
        headers=headers,
        json={
            "name": "test-slack",
            "connector": "slack",
            "values": {"webhook_url": dash.slack.webhook_url},
        },
    )
    assert r.status_code == 201, r.text
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "shape", "connector": "core", "action": "transform", "payload": {"value": {"greeting": "Hi {{ trigger.who }}"}}},
            {"id": "notify", "connector": "slack", "action": "post_message", "credential": "test-slack", "payload": {"text": "From the test: "}},
        ],
    }  # fmt: skip
    r = s.post(
        dash.url + "/api/v1/pipelines", headers=headers, json={"name": "test me", "pipeline": doc}
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = s.post(
        dash.url + "/api/v1/run?wait=30",
        headers=headers,
        json={"pipeline_id": pid, "input": {"who": "Ada"}},
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    sent = len(dash.slack.messages)

    sign_in(page, dash, f"/pipelines/{pid}")
    shape = page.locator('.step-card[data-step-id="shape"]')
    shape.get_by_role("button", name="Test this step shape").click()
    panel = shape.locator(".step-test")
    expect(panel.get_by_label("Data from")).to_have_value(
        re.compile(r"^run_")
    )  # the last run's data
    panel.get_by_role("button", name="Run the test").click()
    expect(panel.locator(".test-result")).to_have_attribute("data-status", "succeeded")
    expect(panel.locator(".test-output")).to_contain_text('"greeting": "Hi Ada"')
    expect(panel.locator(".test-input")).to_contain_text("Hi Ada")
    # other trigger data, typed in
    panel.get_by_label("Data from").select_option("")
    panel.get_by_label("Test with trigger data (JSON, optional)").fill('{"who": "Grace"}')
    panel.get_by_role("button", name="Run the test").click()
    expect(panel.locator(".test-output")).to_contain_text("Hi Grace")
    # pinned as sample data: a new version, which the field picker reads
    panel.get_by_role("button", name="Pin this output as sample data").click()
    expect(page.locator("#pl-meta")).to_contain_text("Version 2")
    stored = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]
    assert stored["pinned"] == {"shape": {"value": {"greeting": "Hi Grace"}}}

    # the field picker of the Slack text: the shape step's output, from the last run
    text = page.locator('.field[data-pointer="/steps/1/payload/text"] textarea')
    text.click()
    text.press("End")
    page.locator('.field[data-pointer="/steps/1/payload/text"]').get_by_role(
        "button", name="Insert a field"
    ).click()
    dialog = page.locator("dialog.picker")
    expect(dialog.locator('[data-source="trigger"]')).to_contain_text("Ada")
    expect(dialog.locator('[data-source="shape"]')).to_contain_text("pinned sample")
    expect(dialog.locator('[data-source="shape"]')).to_contain_text("Hi Grace")
    dialog.get_by_label("Search fields").fill("greeting")
    dialog.locator('button[data-ref="{{ steps.shape.output.value.greeting }}"]').click()
    expect(dialog).to_have_count(0)
    expect(text).to_have_value("From the test: {{ steps.shape.output.value.greeting }}")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 3")
    stored = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]
    assert stored["pinned"] == {"shape": {"value": {"greeting": "Hi Grace"}}}  # kept

    # a step that writes upstream says so before it is tested, and tests for real only when asked
    notify = page.locator('.step-card[data-step-id="notify"]')
    notify.get_by_role("button", name="Test this step notify").click()
    ntest = notify.locator(".step-test")
    ntest.get_by_role("button", name="Run the test").click()
    expect(ntest.locator(".notice.warn")).to_contain_text("writes upstream (slack.post_message)")
    assert len(dash.slack.messages) == sent  # nothing sent yet
    ntest.get_by_role("button", name="Test for real").click()
    expect(ntest.locator(".test-result")).to_have_attribute("data-status", "succeeded")
    expect(ntest.locator(".test-warning")).to_contain_text("writes upstream")
    expect(ntest.locator(".test-input")).to_contain_text("From the test: Hi Ada")
    assert {"text": "From the test: Hi Ada"} in dash.slack.messages
    shot(page, "36-step-test")


def test_every_construct_is_added_and_edited_by_clicking(page, dash):
    s, headers = api_session(dash)
    child_doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "twice", "connector": "core", "action": "transform", "payload": {"value": "{{ trigger.n * 2 }}"}}
        ],
    }  # fmt: skip
    r = s.post(
        dash.url + "/api/v1/pipelines",
        headers=headers,
        json={"name": "doubler", "pipeline": child_doc},
    )
    assert r.status_code == 201, r.text
    child = r.json()["id"]
    sign_in(page, dash, "/pipelines/new")
    page.get_by_label("Name", exact=True).fill("every construct")

    add_at_end(page, "/steps", kind="parallel")
    fan = page.locator('.step-card[data-step-id="fan"]')
    fan.get_by_label("Paths at once").fill("2")
    fan.locator('section.path[data-path="paths/1"]').get_by_label(
        "its failure fails the step"
    ).uncheck()
    add_at_end(page, "/steps/0/paths/0/steps", connector="core", action="transform")
    page.locator('.field[data-pointer="/steps/0/paths/0/steps/0/payload/value"] textarea').fill(
        '"a"'
    )
    add_at_end(page, "/steps/0/paths/1/steps", connector="core", action="transform")
    page.locator('.field[data-pointer="/steps/0/paths/1/steps/0/payload/value"] textarea').fill(
        '"b"'
    )

    add_at_end(page, "/steps", kind="wait")
    pause = page.locator('.step-card[data-step-id="pause"]')
    pause.get_by_label("Seconds").fill("1")

    add_at_end(page, "/steps", kind="approval")
    approval = page.locator('.step-card[data-step-id="approval"]')
    approval.get_by_label("Message to the approver").fill("Go on?")
    approval.get_by_label("Timeout (seconds)").fill("600")
    approval.get_by_label("When it times out").select_option("approve")
    approval.get_by_role("textbox", name="Run only if (optional)").fill("false")  # skipped

    add_at_end(page, "/steps", kind="pipeline")
    call = page.locator('.step-card[data-step-id="child"]')
    call.get_by_label("Pipeline", exact=True).select_option(child)
    call.get_by_role("textbox", name="Input (JSON, templates allowed)").fill('{"n": 21}')

    add_at_end(page, "/steps", kind="stop")
    done = page.locator('.step-card[data-step-id="done"]')
    done.get_by_role("textbox", name="Message").fill("all done")
    done.get_by_role("textbox", name="Output (JSON, templates allowed)").fill(
        '{"answer": "{{ steps.child.output.output.value }}"}'
    )
    # a step the stop makes unreachable, moved up above it and back down
    add_at_end(page, "/steps", connector="core", action="transform")
    page.get_by_role("button", name="Move step transform_3 up").click()
    page.get_by_role("button", name="Move step transform_3 down").click()
    page.locator('.field[data-pointer="/steps/5/payload/value"] textarea').fill("1")

    # the pipeline's failure steps and error pipeline
    add_at_end(page, "/on_failure", connector="core", action="transform")
    page.locator('.field[data-pointer="/on_failure/0/payload/value"] textarea').fill(
        '"{{ error.message }}"'
    )
    page.get_by_label("Error pipeline").select_option(child)
    shot(page, "37-every-construct")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-status")).to_have_text("saved as version 1")
    pid = page.url.rsplit("/", 1)[-1]
    doc = s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]
    fan_doc, pause_doc, appr, call_doc, stop, after = doc["steps"]
    assert fan_doc["concurrency"] == 2 and fan_doc["paths"][1]["required"] is False
    assert "required" not in fan_doc["paths"][0]
    assert pause_doc == {"id": "pause", "type": "wait", "seconds": 1}
    assert appr["if"] is False
    assert appr["approval"] == {"message": "Go on?", "timeout": 600, "on_timeout": "approve"}
    assert call_doc["pipeline"] == child and call_doc["input"] == {"n": 21}
    assert stop["status"] == "succeeded" and stop["message"] == "all done"
    assert stop["output"] == {"answer": "{{ steps.child.output.output.value }}"}
    assert after["id"] == "transform_3"
    assert doc["on_failure"][0]["payload"] == {"value": "{{ error.message }}"}
    assert doc["error_pipeline"] == child

    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    fan_run = page.locator('.run-step[data-step="fan"]')
    expect(fan_run.locator(".run-path")).to_have_count(2)
    expect(fan_run.locator('.run-step[data-step="fan.paths[1].transform_2"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    expect(page.locator('.run-step[data-step="approval"]')).to_have_attribute(
        "data-status", "skipped"
    )
    expect(page.locator('.run-step[data-step="done"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    expect(page.locator('.run-step[data-step="transform_3"]')).to_have_attribute(
        "data-status", "skipped"
    )
    expect(page.locator("#child-runs a")).to_have_count(1)
    expect(page.locator("#run-facts")).to_contain_text('"answer": 42')
    shot(page, "38-every-construct-run")
