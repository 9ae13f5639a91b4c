"""docs/pipelines.md cannot drift: every example in it is validated and run, and the outcome the
page states for it (in the ``<!-- example: name {...} -->`` comment before its block) is checked.

The comment's JSON says: ``trigger`` (the trigger data), ``status`` (the run's), ``steps``
({path: status} of some step records), ``outputs`` ({path: output}, objects compared by the keys
given), ``output`` (the run's output), ``error`` and ``wait`` (keys of the run's error and wait),
and ``host`` (also run it through a real host over loopback). The wait, approval,
sub-pipeline and error-pipeline examples are run through a host by tests of their own (they
need a decision, a child pipeline or an alerting pipeline). The ``shop-api`` credential of the
examples points at a local fake API (:func:`shop_api`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from e2e_support import ROOT, LiveServer, make_app
from levqor_kernel.pipeline import STEP_TYPES, step_type, validate_pipeline, walk_steps
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file again on PostgreSQL and Celery (its hosts start workers)
pytestmark = [pytest.mark.backends, pytest.mark.workers]

PAGE = (ROOT / "docs" / "pipelines.md").read_text()
MARKED = re.compile(r"<!-- example: (\w+) (\{.*?\}) -->\n```json\n(.*?)^```", re.S | re.M)
EXAMPLES: dict[str, tuple[dict, dict]] = {
    m.group(1): (json.loads(m.group(2)), json.loads(m.group(3))) for m in MARKED.finditer(PAGE)
}
ON_HOST = [name for name, (expect, _doc) in EXAMPLES.items() if expect.get("host")]


def matches(expected: Any, actual: Any) -> bool:
    """``actual`` has what ``expected`` says (objects: the keys given; lists: item by item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


def check(expect: dict, status: str, steps: dict, outputs: dict, rest: dict) -> None:
    assert status == expect["status"], (status, rest.get("error"))
    for path, want in expect.get("steps", {}).items():
        assert steps.get(path) == want, (path, steps)
    for path, want in expect.get("outputs", {}).items():
        assert path in outputs and matches(want, outputs[path]), (path, outputs.get(path))
    for key in ("output", "error", "wait"):
        if key in expect:
            assert matches(expect[key], rest.get(key)), (key, rest.get(key))


def shop_api(srv: FakeServer) -> None:
    """The API the examples' ``shop-api`` credential points at."""
    srv.route("POST", "/v1/orders", lambda r: Reply(201, {"id": "ord_" + r.json()["order"]}))
    srv.route("POST", "/v1/contacts", lambda r: Reply(200, {"contact": r.json()["email"]}))
    srv.route("POST", "/v1/audit", lambda r: Reply(503, {"error": "audit log is down"}))
    srv.route("POST", "/v1/charges", lambda r: Reply(402, {"error": "card declined"}))
    srv.route(
        "POST",
        "/v1/shipments",
        lambda r: (
            Reply(422, {"error": "unknown sku"})
            if r.json()["sku"] == "missing"
            else Reply(201, {"shipment": r.json()["sku"]})
        ),
    )


@pytest.fixture(scope="module")
def shop():
    with FakeServer() as srv:
        shop_api(srv)
        yield srv


@pytest.fixture(scope="module")
def runner():
    r = Runner(make_plugin_manager(), env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"}, sleep=lambda s: None)
    yield r
    r.close()


def test_the_page_shows_every_construct_and_marks_every_complete_document():
    assert len(EXAMPLES) >= 15
    kinds, features = set(), set()
    for _expect, doc in EXAMPLES.values():
        features |= {k for k in ("on_failure", "error_pipeline") if k in doc}
        for step, _depth in walk_steps([*doc["steps"], *doc.get("on_failure", [])]):
            kinds.add(step_type(step))
            if "if" in step:
                features.add("if")
            if "approval" in step:
                features.add("approval")
            if step.get("on_error") == "continue" or isinstance(step.get("on_error"), list):
                features.add(f"on_error {type(step['on_error']).__name__}")
            for key in ("concurrency", "max_items", "on_item_error"):
                if key in step:
                    features.add(key)
    # the agent step has its own guide, docs/ai-steps.md, run by tests/test_ai_steps_docs.py
    assert kinds == set(STEP_TYPES) - {"agent"}
    assert features >= {
        "if",
        "approval",
        "on_error str",
        "on_error list",
        "on_failure",
        "error_pipeline",
        "concurrency",
        "max_items",
        "on_item_error",
    }
    # a complete document on the page is an example the test runs
    for block in re.findall(r"^```json\n(.*?)^```", PAGE, re.S | re.M):
        try:
            doc = json.loads(block)
        except ValueError:
            continue
        assert "levqor" not in doc or doc in [d for _e, d in EXAMPLES.values()], block[:200]
    assert {"branch", "for_each", "paths"} <= set(ON_HOST)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_validates_and_runs_as_the_page_says(name, runner, shop):
    expect, doc = EXAMPLES[name]
    assert [str(p) for p in validate_pipeline(doc, runner.pm.catalog)] == []
    rec = ListRecorder()
    res = runner.run(
        RunRequest(f"run_{name}", doc, expect.get("trigger", {})),
        recorder=rec,
        credentials=lambda cname, connector: (
            {"api_base": shop.url, "headers": {"Authorization": "Bearer sk_test_docs_0001"}}
            if cname == "shop-api"
            else None
        ),
    )
    steps = {e["step"]: e["status"] for k, e in rec.events if k == "step_finished"}
    rest = {"output": res.output, "error": res.error, "wait": res.wait}
    check(expect, res.status, steps, res.outputs, rest)


@pytest.fixture
def host(tmp_path):
    srv = LiveServer(make_app(tmp_path, executor={"workers": 2}))
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", ON_HOST)
def test_the_example_runs_through_a_host(name, host):
    expect, doc = EXAMPLES[name]
    _user, key = host.user_with_key("docs@example.com")
    client = host.client(key)
    r = client.post("/api/v1/pipelines", json={"name": name, "pipeline": doc})
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/run?wait=30",
        json={"pipeline_id": r.json()["id"], "input": expect.get("trigger", {})},
    )
    assert r.status_code == 200, r.text
    run = r.json()
    full = host.state.store.runs.get(None, run["id"])
    rows = {s["step_id"]: s for s in full["steps"]}
    steps = {p: s["status"] for p, s in rows.items()}
    outputs = {p: s["output"] for p, s in rows.items() if s["status"] == "succeeded"}
    check(expect, run["status"], steps, outputs, {"error": run.get("error")})


# ---------------------------------------------------------------- waits and sub-pipelines on a host

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def waits_host(tmp_path):
    srv = LiveServer(make_app(tmp_path, executor={"workers": 2, "wait_sweep_seconds": 0.3}))
    yield srv
    srv.stop()


def until(client, run_id: str, statuses, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < end, f"run {run_id} stayed {run['status']}"
        time.sleep(0.05)


def create(client, name: str, doc: dict) -> str:
    r = client.post("/api/v1/pipelines", json={"name": name, "pipeline": doc})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start(client, pipeline_id: str, data: dict) -> str:
    r = client.post("/api/v1/run", json={"pipeline_id": pipeline_id, "input": data})
    assert r.status_code == 202, r.text
    return r.json()["run_id"]


def rows(host, run_id: str) -> dict:
    return {s["step_id"]: s for s in host.state.store.runs.get(None, run_id)["steps"]}


def test_the_timed_wait_example_waits_on_a_host_holding_no_worker(waits_host):
    expect, doc = EXAMPLES["wait_time"]
    _user, key = waits_host.user_with_key("docs@example.com")
    c = waits_host.client(key)
    rid = start(c, create(c, "wait", doc), expect["trigger"])
    run = until(c, rid, ("waiting",))
    assert run["wait"]["kind"] == "time" and run["wait"]["step"] == "pause" and run["wait"]["until"]
    assert rows(waits_host, rid)["welcome"]["status"] == "succeeded"
    executor = waits_host.state.executor  # None on Celery: the workers are another process's
    assert executor is None or executor.active_runs == []


def test_the_approval_example_approved_by_the_api_and_rejected_by_its_signed_link(waits_host):
    expect, doc = EXAMPLES["approval"]
    _user, key = waits_host.user_with_key("docs@example.com")
    c = waits_host.client(key)
    pid = create(c, "refund", doc)
    rid = start(c, pid, expect["trigger"])
    run = until(c, rid, ("waiting",))
    assert run["wait"]["kind"] == "approval"
    assert run["wait"]["message"] == "Refund 1200 EUR to ACME?"
    r = c.post(f"/api/v1/runs/{rid}/approve", json={"comment": "fine"})
    assert r.status_code == 200, r.text
    assert c.post(f"/api/v1/runs/{rid}/approve", json={}).status_code == 409  # decided once
    run = until(c, rid, FINAL)
    assert run["status"] == "succeeded", run
    got = rows(waits_host, rid)
    assert matches(
        {"approved": True, "by": "docs@example.com", "comment": "fine"}, got["ok"]["output"]
    )
    assert got["refund"]["output"] == {"value": {"refund": 1200, "by": "docs@example.com"}}

    rid = start(c, pid, expect["trigger"])
    run = until(c, rid, ("waiting",))
    link = urlsplit(run["reject_url"])
    path = f"{link.path}?{link.query}"
    assert (
        requests.get(waits_host.url + path, timeout=10).status_code == 200
    )  # shows, decides nothing
    assert (
        requests.post(waits_host.url + path, data={"comment": "no"}, timeout=10).status_code == 200
    )
    assert requests.post(waits_host.url + path, timeout=10).status_code == 410  # one time
    run = until(c, rid, FINAL)
    assert run["status"] == "succeeded" and run["output"] == {"refunded": False}, run
    got = rows(waits_host, rid)
    assert got["ok"]["status"] == "failed" and got["ok"]["error"]["code"] == "rejected"
    assert got["ok.on_error.refused"]["status"] == "succeeded"


def test_the_sub_pipeline_example_calls_its_child_on_a_host(waits_host):
    expect, doc = EXAMPLES["sub_pipeline"]
    _user, key = waits_host.user_with_key("docs@example.com")
    c = waits_host.client(key)
    child = create(
        c,
        "enrich",
        {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "lookup",
                    "connector": "core",
                    "action": "transform",
                    "payload": {"value": {"company": "ACME", "email": "{{ trigger.email }}"}},
                }
            ],
        },
    )
    doc = json.loads(json.dumps(doc).replace("pl_enrich_customer", child))
    rid = start(c, create(c, "greet", doc), expect["trigger"])
    run = until(c, rid, FINAL)
    assert run["status"] == "succeeded", run
    got = rows(waits_host, rid)
    assert got["greet"]["output"] == {"value": "Hello Ada from ACME"}
    [kid] = run["children"]
    kid_run = c.get(f"/api/v1/runs/{kid['id'] if isinstance(kid, dict) else kid}").json()
    assert kid_run["parent_run_id"] == rid and kid_run["parent_step"] == "enrich"
    assert kid_run["input"] == expect["wait"]["input"]


def test_the_error_pipeline_example_starts_it_on_a_host(waits_host):
    expect, doc = EXAMPLES["error_pipeline"]
    _user, key = waits_host.user_with_key("docs@example.com")
    c = waits_host.client(key)
    alerts = create(
        c,
        "alerts",
        {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "say",
                    "connector": "core",
                    "action": "transform",
                    "payload": {"value": "{{ trigger.step }}: {{ trigger.error.message }}"},
                }
            ],
        },
    )
    doc = json.loads(json.dumps(doc).replace("pl_alerts", alerts))
    rid = start(c, create(c, "orders", doc), expect.get("trigger", {}))
    assert until(c, rid, FINAL)["status"] == "failed"
    end = time.monotonic() + 30
    while not (items := c.get(f"/api/v1/runs?pipeline_id={alerts}").json()["items"]):
        assert time.monotonic() < end
        time.sleep(0.1)
    alert = until(c, items[0]["id"], FINAL)
    assert alert["status"] == "succeeded" and alert["input"]["run_id"] == rid
    assert alert["input"]["step"] == expect["error"]["step"]
