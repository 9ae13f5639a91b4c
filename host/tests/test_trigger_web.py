"""App triggers over real HTTP: the delivery routes (/hooks/triggers/<token>, /hooks/apps/<connector>),
switching pipelines on and off, the trigger's status in pipeline answers, testing a trigger
(saved or not) and the field picker's trigger fields, with the Tally test connector against its
fake (tests/app_trigger_plugin.py)."""

from __future__ import annotations

import pytest
import requests
from app_trigger_plugin import CONNECTOR_SECRET, FakeTally, Tally, signed
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]


@pytest.fixture
def tally():
    with FakeTally() as fake:
        yield fake


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(
        make_app(tmp_path, plugins=[("tally", Tally())], executor={"workers": 2},
                 env={"LEVQOR_WEBHOOK_MAX_BYTES": "4096"})
    )  # fmt: skip
    yield s
    s.stop()


@pytest.fixture
def alice(srv, tally):
    _, key = srv.user_with_key("alice@example.com")
    c = srv.client(key)
    r = c.post("/api/v1/credentials", json={"name": "t", "connector": "tally",
                                            "values": tally.credentials()})  # fmt: skip
    assert r.status_code == 201, r.text
    return c


def app_doc(trigger: str = "new_entry", board: str = "orders", **extra) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "app", "connector": "tally", "trigger": trigger, "credential": "t",
                    "config": {"board": board}, **extra},
        "steps": [{"id": "note", "connector": "tally", "action": "note", "credential": "t",
                   "payload": {"text": "{{ trigger.text }}"}}],
    }  # fmt: skip


def create(c, doc: dict, name: str = "p") -> dict:
    r = c.post("/api/v1/pipelines", json={"name": name, "pipeline": doc})
    assert r.status_code == 201, r.text
    return r.json()


def hook_path(p: dict) -> str:
    url = p["trigger_status"]["webhook_url"]
    return url[url.index("/hooks/") :]


def runs_of(c, pid: str) -> list[dict]:
    return c.get("/api/v1/runs", params={"pipeline_id": pid, "limit": 100}).json()["items"]


# ------------------------------------------------------------------ switching on and off, status
def test_pipelines_are_on_by_default_and_switch_off_and_on_with_their_trigger(srv, alice, tally):
    p = create(alice, app_doc())
    assert p["enabled"] is True and p["trigger"] == "app"
    st = p["trigger_status"]
    assert {k: st[k] for k in ("connector", "trigger", "kind", "status", "failures", "interval")} == {
        "connector": "tally", "trigger": "new_entry", "kind": "polling", "status": "active",
        "failures": 0, "interval": 300,
    }  # fmt: skip
    assert st["webhook_url"] is None and st["last_error"] is None
    listed = next(x for x in alice.get("/api/v1/pipelines").json()["items"] if x["id"] == p["id"])
    assert listed["enabled"] is True and listed["trigger_status"]["kind"] == "polling"

    off = alice.post(f"/api/v1/pipelines/{p['id']}/disable")
    assert off.status_code == 200, off.text
    assert off.json()["enabled"] is False and off.json()["trigger_status"] is None
    assert alice.get(f"/api/v1/pipelines/{p['id']}").json()["enabled"] is False
    assert alice.post(f"/api/v1/pipelines/{p['id']}/disable").json()["enabled"] is False  # again
    on = alice.post(f"/api/v1/pipelines/{p['id']}/enable")
    assert on.status_code == 200 and on.json()["enabled"] is True
    assert on.json()["trigger_status"]["status"] == "active"
    assert on.json()["pipeline"] == p["pipeline"] and on.json()["version"] == p["version"]

    # a webhook: switched off, its URL starts no run; on again, it does
    hook = create(alice, {**app_doc(), "trigger": {"type": "webhook"}})
    assert hook["enabled"] is True and hook["trigger_status"] is None
    url = srv.url + hook["webhook_url"][hook["webhook_url"].index("/hooks/") :]
    r = alice.post(f"/api/v1/pipelines/{hook['id']}/disable")
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert requests.post(url, json={"text": "x"}, timeout=30).status_code == 404
    assert runs_of(alice, hook["id"]) == []
    assert alice.post(f"/api/v1/pipelines/{hook['id']}/enable").json()["enabled"] is True
    assert requests.post(url, json={"text": "x"}, timeout=30).status_code == 202


def test_an_instant_trigger_is_registered_while_on_and_removed_when_off(srv, alice, tally):
    p = create(alice, app_doc("pushed"))
    st = p["trigger_status"]
    assert st["kind"] == "instant" and "/hooks/triggers/" in st["webhook_url"]
    assert [h["board"] for h in tally.hooks.values()] == ["orders"]
    assert alice.post(f"/api/v1/pipelines/{p['id']}/disable").status_code == 200
    assert tally.hooks == {}
    # switched off, its URL takes nothing
    r = requests.post(srv.url + hook_path(p), timeout=30, **signed("x", [{"id": 1}]))
    assert r.status_code == 404
    on = alice.post(f"/api/v1/pipelines/{p['id']}/enable").json()
    assert len(tally.hooks) == 1 and on["trigger_status"]["webhook_url"]


def test_switching_someone_elses_or_an_unknown_pipeline_is_404(srv, alice):
    p = create(alice, app_doc())
    _, bkey = srv.user_with_key("bob@example.com")
    bob = srv.client(bkey)
    for path in (
        f"/api/v1/pipelines/{p['id']}/disable",
        f"/api/v1/pipelines/{p['id']}/enable",
        "/api/v1/pipelines/pl_nope/disable",
        f"/api/v1/pipelines/{p['id']}/trigger/test",
    ):
        r = bob.post(path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert alice.get(f"/api/v1/pipelines/{p['id']}").json()["enabled"] is True
    # the scope: reading is not switching
    _, rkey = srv.user_with_key("reader@example.com", scopes=["pipelines:read"])
    r = srv.client(rkey).post(f"/api/v1/pipelines/{p['id']}/disable")
    assert r.status_code == 403 and "pipelines:write" in r.text


# ------------------------------------------------------------------ deliveries
def test_a_delivery_starts_one_run_per_new_item_and_repeats_start_nothing(srv, alice, tally):
    p = create(alice, app_doc("pushed"))
    path = hook_path(p)
    secret = next(iter(tally.hooks.values()))["secret"]
    entries = [
        {"id": 1, "text": "one", "board": "orders"},
        {"id": 2, "text": "two", "board": "orders"},
    ]
    r = requests.post(srv.url + path, timeout=30, **signed(secret, entries, delivery="d1"))
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    # the same delivery again, and a new one carrying an item seen already
    assert (
        requests.post(
            srv.url + path, timeout=30, **signed(secret, entries, delivery="d1")
        ).status_code
        == 200
    )
    r = requests.post(
        srv.url + path,
        timeout=30,
        **signed(secret, [entries[1], {"id": 3, "text": "three", "board": "orders"}]),
    )
    assert r.status_code == 200, r.text
    runs = runs_of(alice, p["id"])
    assert sorted(x["input"]["text"] for x in runs) == ["one", "three", "two"]
    assert {x["trigger"] for x in runs} == {"app"}
    for run in runs:
        done = srv.state.runs.wait(None, run["id"], 30)
        assert done["status"] == "succeeded", done
        assert done["steps"][0]["output"] == {"noted": run["input"]["text"]}


def test_deliveries_refused_forged_unknown_malformed_or_too_large_are_4xx(srv, alice, tally):
    p = create(alice, app_doc("pushed"))
    path = hook_path(p)
    secret = next(iter(tally.hooks.values()))["secret"]
    entry = [{"id": 9, "text": "x", "board": "orders"}]
    # a wrong or missing signature: 401 from the connector
    r = requests.post(srv.url + path, timeout=30, **signed("forged", entry))
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_signature"
    r = requests.post(srv.url + path, json={"entries": entry}, timeout=30)
    assert r.status_code == 401
    # unknown tokens, however long
    for bad in ("/hooks/triggers/nope", "/hooks/triggers/" + "a" * 500):
        r = requests.post(srv.url + bad, timeout=30, **signed(secret, entry))
        assert r.status_code == 404, (bad, r.text)
    # a body the connector cannot read: 400, never a 5xx
    for body in (b"not json", b"\xff\xfe", b"[]", b'{"entries": 5}', b""):
        r = requests.post(
            srv.url + path,
            data=body,
            timeout=30,
            headers={"X-Tally-Secret": secret, "Content-Type": "application/json"},
        )
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    # over LEVQOR_WEBHOOK_MAX_BYTES (4096 here): 413, with or without a Content-Length
    big = [{"id": i, "text": "x" * 100, "board": "orders"} for i in range(100)]
    r = requests.post(srv.url + path, timeout=30, **signed(secret, big))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = requests.post(
        srv.url + path,
        data=iter([b"x" * 3000, b"y" * 3000]),
        timeout=30,
        headers={"X-Tally-Secret": secret},
    )  # chunked: no length announced
    assert r.status_code == 413, r.text
    assert runs_of(alice, p["id"]) == []  # nothing refused started a run


def test_a_handshake_is_answered_by_the_connector(srv, alice, tally):
    p = create(alice, app_doc("pushed"))
    r = requests.get(srv.url + hook_path(p), params={"challenge": "abc123"}, timeout=30)
    assert r.status_code == 200 and r.text == "abc123"
    assert r.headers["Content-Type"].startswith("text/plain")
    r = requests.get(srv.url + hook_path(p), timeout=30)  # no challenge: refused
    assert r.status_code == 401
    assert runs_of(alice, p["id"]) == []


def test_a_connector_wide_webhook_routes_items_to_the_pipelines_they_are_for(srv, alice, tally):
    orders = create(alice, app_doc("anywhere", "orders"), "orders")
    other = create(alice, app_doc("anywhere", "other"), "other")
    assert orders["trigger_status"]["webhook_url"].endswith("/hooks/apps/tally")
    entries = [{"id": 11, "text": "for orders", "board": "orders"},
               {"id": 12, "text": "for other", "board": "other"},
               {"id": 13, "text": "for nobody", "board": "nobody"}]  # fmt: skip
    r = requests.post(
        srv.url + "/hooks/apps/tally", timeout=30, **signed(CONNECTOR_SECRET, entries)
    )
    assert r.status_code == 200, r.text
    assert [x["input"]["text"] for x in runs_of(alice, orders["id"])] == ["for orders"]
    assert [x["input"]["text"] for x in runs_of(alice, other["id"])] == ["for other"]
    r = requests.post(srv.url + "/hooks/apps/tally", timeout=30, **signed("forged", entries))
    assert r.status_code == 401
    r = requests.get(srv.url + "/hooks/apps/tally", params={"challenge": "c"}, timeout=30)
    assert r.status_code == 200 and r.text == "c"
    # a connector without a connector-wide trigger, or none at all
    for name in ("core", "nope", "x" * 300):
        r = requests.post(
            srv.url + f"/hooks/apps/{name}", timeout=30, **signed(CONNECTOR_SECRET, entries)
        )
        assert r.status_code == 404, (name, r.text)


def test_the_delivery_routes_are_rate_limited_per_url(tmp_path, tally):
    s = LiveServer(make_app(tmp_path, plugins=[("tally", Tally())], start_workers=False,
                            env={"LEVQOR_RATE_LIMITS": "on", "LEVQOR_RATE_LIMIT_WEBHOOK": "3/minute"}))  # fmt: skip
    try:
        codes = [
            requests.post(s.url + "/hooks/triggers/abc", timeout=30).status_code for _ in range(5)
        ]
        assert codes[:3] == [404, 404, 404] and codes[3:] == [429, 429]
        r = requests.post(s.url + "/hooks/triggers/abc", timeout=30)
        assert r.headers.get("Retry-After")
        # another URL has its own budget
        assert requests.post(s.url + "/hooks/apps/tally", timeout=30).status_code != 429
    finally:
        s.stop()


# ------------------------------------------------------------------ testing a trigger
def test_testing_a_trigger_fetches_items_now_and_records_nothing(srv, alice, tally):
    for text in ("a", "b", "c", "d"):
        tally.add("orders", text)
    tally.add("other", "elsewhere")
    r = alice.post("/api/v1/triggers/test", json={"trigger": app_doc()["trigger"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "polling" and out["source"] == "upstream"
    assert [i["text"] for i in out["items"]] == ["d", "c", "b"]  # the newest few, newest first
    # saved: the same through the pipeline; nothing seen, no run: its first poll is the baseline
    p = create(alice, app_doc())
    r = alice.post(f"/api/v1/pipelines/{p['id']}/trigger/test")
    assert r.status_code == 200 and [i["text"] for i in r.json()["items"]] == ["d", "c", "b"]
    assert runs_of(alice, p["id"]) == []
    from levqor_host.store.tables import trigger_seen
    from sqlalchemy import func, select

    with srv.state.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(trigger_seen)).scalar_one() == 0
    # an instant trigger answers its sample item
    r = alice.post("/api/v1/triggers/test", json={"trigger": app_doc("pushed")["trigger"]})
    assert r.status_code == 200 and r.json()["source"] == "sample"
    assert r.json()["items"] == [{"id": 8, "text": "eight", "board": "main"}]


def test_testing_an_invalid_trigger_or_a_refusing_upstream_is_a_clear_4xx(srv, alice, tally):
    def test(trigger):
        return alice.post("/api/v1/triggers/test", json={"trigger": trigger})

    base = app_doc()["trigger"]
    r = test({**base, "connector": "nope"})
    assert (
        r.status_code == 422
        and r.json()["error"]["details"]["problems"][0]["pointer"] == "/trigger/connector"
    )
    r = test({**base, "config": {}})
    assert r.status_code == 422
    assert any(
        p["pointer"].startswith("/trigger/config") for p in r.json()["error"]["details"]["problems"]
    )
    # a credential the upstream refuses
    assert alice.post("/api/v1/credentials", json={"name": "bad", "connector": "tally",
                      "values": {"api_base": tally.url, "key": "wrong"}}).status_code == 201  # fmt: skip
    r = test({**base, "credential": "bad"})
    assert r.status_code == 422 and "refused the API key" in r.json()["error"]["message"]
    assert "wrong" not in r.text
    # wrong shapes of the body
    for body in ({}, {"trigger": "app"}, {"trigger": base, "extra": 1}, []):
        r = alice.post("/api/v1/triggers/test", json=body)
        assert r.status_code == 400, (body, r.text)
    # a saved pipeline whose trigger is not an app trigger
    hook = create(alice, {**app_doc(), "trigger": {"type": "webhook"}})
    r = alice.post(f"/api/v1/pipelines/{hook['id']}/trigger/test")
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_an_app_trigger"


# ------------------------------------------------------------------ the field picker
def test_the_field_picker_offers_the_app_triggers_sample_fields(srv, alice, tally):
    p = create(alice, app_doc())
    sources = alice.get(f"/api/v1/pipelines/{p['id']}/fields").json()["sources"]
    trig = sources[0]
    assert trig["id"] == "trigger" and trig["source"] == "sample"
    assert {f["ref"]: f["sample"] for f in trig["fields"]} == {
        "{{ trigger }}": {"id": 7, "text": "seven", "board": "main"},
        "{{ trigger.id }}": 7,
        "{{ trigger.text }}": "seven",
        "{{ trigger.board }}": "main",
    }
    # after a delivery's run, the run's item is the sample
    q = create(alice, app_doc("pushed"), "pushed")
    secret = next(iter(tally.hooks.values()))["secret"]
    assert requests.post(srv.url + hook_path(q), timeout=30,
                         **signed(secret, [{"id": 5, "text": "real", "board": "orders"}])).status_code == 200  # fmt: skip
    trig = alice.get(f"/api/v1/pipelines/{q['id']}/fields").json()["sources"][0]
    assert trig["source"] == "run" and {"ref": "{{ trigger.text }}", "label": "Trigger › text",
                                        "sample": "real"} in trig["fields"]  # fmt: skip


def test_the_catalog_says_how_often_polling_triggers_may_be_checked(srv, alice):
    cat = alice.get("/api/v1/connectors").json()
    assert cat["polling"] == {"min_interval": 60, "default_interval": 300}
    tally = next(c for c in cat["connectors"] if c["name"] == "tally")
    assert tally["triggers"]["new_entry"]["kind"] == "polling"
