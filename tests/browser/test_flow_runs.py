"""The run page of flow runs in Chromium: a run waiting for an approval is approved (and another
rejected) from its page; a sub-pipeline's run and its parent link to each other.

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


def create(s, headers, dash, name: str, steps: list) -> str:
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": steps}
    r = s.post(
        dash.url + "/api/v1/pipelines", headers=headers, json={"name": name, "pipeline": doc}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_run(s, headers, dash, pid: str, data: dict) -> str:
    r = s.post(dash.url + "/api/v1/run", headers=headers, json={"pipeline_id": pid, "input": data})
    assert r.status_code in (200, 201, 202), r.text
    return r.json().get("run_id") or r.json()["id"]


APPROVAL = [
    {
        "id": "ok",
        "type": "wait",
        "approval": {"message": "Ship order {{ trigger.order }}?", "timeout": 3600},
    },
    {
        "id": "ship",
        "connector": "core",
        "action": "transform",
        "payload": {"value": {"shipped": "{{ trigger.order }}"}},
    },
]


def test_a_waiting_run_is_approved_and_another_rejected_from_the_run_page(page, dash):
    s, headers = api_session(dash)
    pid = create(s, headers, dash, "ship after approval", APPROVAL)
    run_id = start_run(s, headers, dash, pid, {"order": "A-17"})
    sign_in(page, dash, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "waiting", timeout=60_000
    )
    wait = page.locator("#wait")
    expect(wait).to_be_visible()
    expect(page.locator("#approval-message")).to_have_text("Ship order A-17?")
    expect(page.locator("#approval-expires")).to_contain_text("rejected")
    expect(page.locator('.run-step[data-step="ok"]')).to_have_attribute("data-status", "waiting")
    expect(page.locator('.run-step[data-step="ship"]')).to_have_attribute("data-status", "pending")
    shot(page, "33-run-waiting")
    page.get_by_label("Comment (optional)").fill("looks right")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    expect(wait).to_be_hidden()
    ok = page.locator('.run-step[data-step="ok"]')
    expect(ok).to_have_attribute("data-status", "succeeded")
    expect(ok).to_contain_text('"approved": true')
    expect(ok).to_contain_text("looks right")
    ship = page.locator('.run-step[data-step="ship"]')
    expect(ship).to_have_attribute("data-status", "succeeded")
    expect(ship).to_contain_text("A-17")
    shot(page, "34-run-approved")

    # a second run, rejected: the approval step fails with Rejected, the step after is skipped
    run_2 = start_run(s, headers, dash, pid, {"order": "B-2"})
    page.goto(f"/runs/{run_2}")
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "waiting", timeout=60_000
    )
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "failed", timeout=60_000
    )
    expect(page.locator('.run-step[data-step="ok"]')).to_have_attribute("data-status", "failed")
    expect(page.locator('.run-step[data-step="ok"] .step-error')).to_contain_text("Rejected")
    expect(page.locator('.run-step[data-step="ship"]')).to_have_attribute("data-status", "skipped")
    # deciding again is refused
    r = s.post(f"{dash.url}/api/v1/runs/{run_2}/approve", headers=headers, json={})
    assert r.status_code == 409, r.text


def test_a_sub_pipeline_run_and_its_parent_link_to_each_other(page, dash):
    s, headers = api_session(dash)
    child = create(
        s, headers, dash, "the child",
        [{"id": "double", "connector": "core", "action": "transform", "payload": {"value": "{{ trigger.n * 2 }}"}}],
    )  # fmt: skip
    parent = create(
        s, headers, dash, "the parent",
        [{"id": "call", "type": "pipeline", "pipeline": child, "input": {"n": "{{ trigger.n }}"}}],
    )  # fmt: skip
    run_id = start_run(s, headers, dash, parent, {"n": 21})
    sign_in(page, dash, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    call = page.locator('.run-step[data-step="call"]')
    expect(call).to_have_attribute("data-status", "succeeded")
    links = page.locator("#child-runs a")
    expect(links).to_have_count(1)
    shot(page, "35-run-parent")
    links.first.click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    assert run_id not in page.url
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "succeeded")
    expect(page.locator("#run-facts")).to_contain_text("the child")
    expect(page.locator("#parent-run")).to_contain_text("call")
    page.locator("#parent-run a").click()
    page.wait_for_url(re.compile(re.escape(run_id) + "$"))


def test_a_loops_items_are_paged_with_counts_by_status(page, dash):
    s, headers = api_session(dash)
    pid = create(
        s, headers, dash, "many items",
        [
            {
                "id": "each", "type": "for_each", "items": "{{ trigger.rows }}", "on_item_error": "collect",
                "steps": [
                    {"id": "check", "if": "{{ item > 2 }}", "connector": "core", "action": "transform", "payload": {"value": "{{ item }}"}}
                ],
            }
        ],
    )  # fmt: skip
    run_id = start_run(s, headers, dash, pid, {"rows": list(range(30))})
    sign_in(page, dash, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    loop = page.locator('.run-step[data-step="each"] .loop-items')
    expect(loop.locator("> h4")).to_contain_text("Items: 30")
    expect(loop.locator('> h4 [data-count="succeeded"]')).to_have_text("27 succeeded")
    expect(loop.locator('> h4 [data-count="skipped"]')).to_have_text("3 skipped")
    items = loop.locator(".loop-item")
    expect(items).to_have_count(20)  # the first page
    expect(
        loop.locator('.loop-item[data-index="0"] .run-step[data-step="each[0].check"]')
    ).to_have_attribute("data-status", "skipped")
    loop.get_by_role("button", name=re.compile("Show more items")).click()
    expect(items).to_have_count(30)
    expect(loop.locator('.loop-item[data-index="29"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    expect(loop.get_by_role("button", name=re.compile("Show more items"))).to_have_count(0)
    shot(page, "39-loop-items")
