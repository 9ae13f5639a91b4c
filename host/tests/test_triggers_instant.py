"""Instant app triggers end to end: registered upstream when their pipeline is saved or
switched on, unregistered when it is switched off, changed or archived; deliveries verified by
the connector (a bad signature starts nothing), handshakes answered, one delivery to many
runs, retried deliveries and repeated items deduplicated, connector-wide deliveries routed.

The Feeds test connector talks HTTP to its local fake for (un)registration; deliveries are
POSTed over HTTP to the host's delivery routes, as the upstream would.
"""

from __future__ import annotations

import json

import pytest
from feeds_fake import Feeds, FeedsUpstream, signed
from trigger_support import TriggerHosts, wait_for

pytestmark = [pytest.mark.backends, pytest.mark.workers]

SIGNING = "feeds-signing-secret"


def pushed(list_name: str = "inbox") -> dict:
    return {"type": "app", "connector": "feeds", "trigger": "pushed", "credential": "feeds",
            "config": {"list": list_name}}  # fmt: skip


def routed(channel: str) -> dict:
    return {"type": "app", "connector": "feeds", "trigger": "routed", "credential": "feeds",
            "config": {"channel": channel}}  # fmt: skip


@pytest.fixture
def upstream():
    with FeedsUpstream() as up:
        yield up


@pytest.fixture
def th(tmp_path, upstream):
    env = {"LEVQOR_FEEDS_API_BASE": upstream.url, "LEVQOR_FEEDS_SIGNING_SECRET": SIGNING}
    with TriggerHosts(tmp_path, plugins=[Feeds()], env=env) as hosts:
        hosts.add_credential("feeds", "feeds", {"key": upstream.key})
        yield hosts


def answer(r) -> tuple[int, object]:
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def deliver(th: TriggerHosts, pid: str, body: dict | bytes, headers: dict | None = None, host: int = 0):
    """A delivery to the pipeline's ``/hooks/triggers/<token>`` on host ``host``, over HTTP."""
    return answer(th.deliver(pid, body, {"Content-Type": "application/json", **(headers or {})}, host))


def deliver_wide(th: TriggerHosts, body: dict, key: str):
    """A signed delivery to ``/hooks/apps/feeds``, over HTTP."""
    raw, headers = signed(body, key)
    return answer(th.post_to("/hooks/apps/feeds", raw, headers))


def secret_of(upstream: FeedsUpstream, th: TriggerHosts, pid: str) -> str:
    url = th.status(pid)["webhook_url"]
    return next(w["secret"] for w in upstream.webhooks.values() if w["url"] == url)


def test_saving_registers_and_switching_off_unregisters(th, upstream):
    pid = th.create_pipeline(pushed())
    status = th.status(pid)
    assert status["kind"] == "instant" and status["status"] == "active"
    token = th.trigger_row(pid)["token"]
    assert status["webhook_url"] == f"{th.state.config.base_url}/hooks/triggers/{token}"
    [(hook_id, hook)] = upstream.webhooks.items()
    assert hook["url"] == status["webhook_url"] and hook["list"] == "inbox"
    assert len(hook["secret"]) >= 32
    assert th.trigger_row(pid)["registration"] == {"webhook_id": hook_id}
    assert "secret" not in json.dumps(th.trigger_row(pid))  # the secret stays encrypted

    th.disable(pid)
    assert upstream.webhooks == {} and upstream.unsubscribed == [hook_id]
    assert th.trigger_row(pid) is None

    th.enable(pid)
    [(again_id, again)] = upstream.webhooks.items()
    assert again_id != hook_id and again["url"] != hook["url"]  # a new URL and secret
    assert again["secret"] != hook["secret"]


def test_a_changed_trigger_is_registered_anew_and_an_unchanged_one_is_left_alone(th, upstream):
    pid = th.create_pipeline(pushed("inbox"))
    [first] = upstream.webhooks
    p = th.client.get(f"/api/v1/pipelines/{pid}").json()
    r = th.client.put(f"/api/v1/pipelines/{pid}", json={"pipeline": p["pipeline"], "name": "renamed"})
    assert r.status_code == 200, r.text
    assert list(upstream.webhooks) == [first]  # same trigger: same registration
    doc = {**p["pipeline"], "trigger": pushed("other")}
    assert th.client.put(f"/api/v1/pipelines/{pid}", json={"pipeline": doc}).status_code == 200
    [second] = upstream.webhooks
    assert second != first and upstream.unsubscribed == [first]
    assert upstream.webhooks[second]["list"] == "other"
    # another kind of trigger: the registration goes
    doc = {**p["pipeline"], "trigger": {"type": "manual"}}
    assert th.client.put(f"/api/v1/pipelines/{pid}", json={"pipeline": doc}).status_code == 200
    assert upstream.webhooks == {} and th.status(pid) is None


def test_archiving_unregisters(th, upstream):
    pid = th.create_pipeline(pushed())
    assert len(upstream.webhooks) == 1
    assert th.client.delete(f"/api/v1/pipelines/{pid}").status_code == 200
    assert upstream.webhooks == {} and th.trigger_row(pid) is None


def test_a_refused_registration_is_a_4xx_with_the_connectors_message_and_saves_nothing(th, upstream):
    doc = {"levqor": 1, "trigger": pushed("refused"),
           "steps": [{"id": "s", "connector": "core", "action": "transform", "payload": {"value": 1}}]}  # fmt: skip
    r = th.client.post("/api/v1/pipelines", json={"pipeline": doc})
    assert r.status_code == 422, r.text
    assert "this list takes no webhooks" in r.json()["error"]["message"]
    assert th.client.get("/api/v1/pipelines").json()["items"] == []
    assert upstream.webhooks == {}

    # an update that is refused keeps the pipeline's version and its working registration
    pid = th.create_pipeline(pushed("inbox"))
    p = th.client.get(f"/api/v1/pipelines/{pid}").json()
    r = th.client.put(f"/api/v1/pipelines/{pid}", json={"pipeline": {**p["pipeline"], "trigger": pushed("refused")}})
    assert r.status_code == 422, r.text
    assert th.client.get(f"/api/v1/pipelines/{pid}").json()["version"] == 1
    [hook] = upstream.webhooks.values()
    assert hook["list"] == "inbox" and hook["url"] == th.status(pid)["webhook_url"]


def test_deliveries_are_verified_answered_and_start_one_run_per_new_item(th, upstream):
    pid = th.create_pipeline(pushed())
    secret = secret_of(upstream, th, pid)
    ok = {"X-Feeds-Secret": secret}

    status, body = deliver(th, pid, {"delivery": "d1", "events": [{"id": 1}]}, {"X-Feeds-Secret": "forged"})
    assert status == 401 and body["error"]["code"] == "bad_signature"
    assert deliver(th, pid, b"not json", ok)[0] == 400
    assert deliver(th, pid, {"challenge": "abc123"}, ok) == (200, {"challenge": "abc123"})
    # a delivery the connector cannot read just now: 503 and Retry-After, so the sender retries
    r = th.deliver(pid, {"busy": True}, {"Content-Type": "application/json", **ok}, 0)
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert th.runs(pid) == []

    events = [{"id": 10, "text": "a"}, {"id": 11, "text": "b"}, {"id": 12, "text": "c"}]
    assert deliver(th, pid, {"delivery": "d1", "events": events}, ok) == (200, {"ok": True})
    runs = th.wait_runs(pid, 3)
    assert [r["input"] for r in runs] == [{"id": 10, "text": "a"}, {"id": 11, "text": "b"}, {"id": 12, "text": "c"}]
    assert [r["idempotency_key"] for r in runs] == [f"app:{pid}:{i}" for i in (10, 11, 12)]

    # the same delivery again (the upstream retries), and an item seen before in a new one
    assert deliver(th, pid, {"delivery": "d1", "events": events}, ok)[0] == 200
    assert deliver(th, pid, {"delivery": "d2", "events": [{"id": 12, "text": "c"}, {"id": 13}]}, ok)[0] == 200
    runs = th.wait_runs(pid, 4)
    assert runs[-1]["input"] == {"id": 13, "text": ""}


def test_deliveries_to_unknown_or_switched_off_triggers_are_404(th, upstream):
    pid = th.create_pipeline(pushed())
    url = th.webhook_url(pid)
    body, hdrs = {"events": []}, {"X-Feeds-Secret": secret_of(upstream, th, pid)}
    assert answer(th.post_to(url, body, hdrs))[0] == 200
    assert answer(th.post_to("/hooks/triggers/no-such-token", body, hdrs))[0] == 404
    th.disable(pid)
    assert answer(th.post_to(url, body, hdrs))[0] == 404
    assert answer(th.post_to("/hooks/apps/nope", body))[0] == 404
    assert answer(th.post_to("/hooks/apps/core", body))[0] == 404  # no connector-wide trigger


def test_connector_wide_deliveries_are_routed_to_the_matching_registrations(th, upstream):
    a = th.create_pipeline(routed("alpha"))
    b = th.create_pipeline(routed("beta"))
    url = f"{th.state.config.base_url}/hooks/apps/feeds"
    assert th.status(a)["webhook_url"] == url == th.status(b)["webhook_url"]
    assert th.trigger_row(a)["route"] == {"channel": "alpha"}

    body = {"delivery": "w1", "events": [
        {"id": 1, "text": "to alpha", "channel": "alpha"},
        {"id": 2, "text": "to beta", "channel": "beta"},
        {"id": 3, "text": "to nobody", "channel": "gamma"},
        {"id": 4, "text": "alpha again", "channel": "alpha"},
    ]}  # fmt: skip
    assert deliver_wide(th, body, "forged")[0] == 401
    assert deliver_wide(th, body, SIGNING) == (200, {"ok": True})
    assert deliver_wide(th, body, SIGNING)[0] == 200  # retried: deduplicated
    assert [r["input"]["text"] for r in th.wait_runs(a, 2)] == ["to alpha", "alpha again"]
    assert [r["input"]["text"] for r in th.wait_runs(b, 1)] == ["to beta"]
    assert deliver_wide(th, {"challenge": "c-1"}, SIGNING) == (200, {"challenge": "c-1"})


def test_an_instant_trigger_waits_for_its_credential(tmp_path, upstream):
    env = {"LEVQOR_FEEDS_API_BASE": upstream.url}
    with TriggerHosts(tmp_path, plugins=[Feeds()], env=env) as th:
        doc = {"levqor": 1, "trigger": pushed(),
               "steps": [{"id": "s", "connector": "core", "action": "transform", "payload": {"value": 1}}]}  # fmt: skip
        r = th.client.post("/api/v1/pipelines", json={"pipeline": doc})
        assert r.status_code == 201, r.text
        assert r.json()["warnings"][0]["pointer"] == "/trigger/credential"
        pid = r.json()["id"]
        status = th.status(pid)
        assert status["status"] == "paused" and "add it" in status["last_error"]["message"]
        assert upstream.webhooks == {}
        th.add_credential("feeds", "feeds", {"key": upstream.key})
        wait_for(lambda: th.status(pid)["status"] == "active", what="the trigger to resume")
        [hook] = upstream.webhooks.values()
        assert hook["url"] == th.status(pid)["webhook_url"]


@pytest.mark.services
def test_two_hosts_sharing_postgresql_start_one_run_per_delivered_item(tmp_path, upstream):
    import threading

    env = {"LEVQOR_FEEDS_API_BASE": upstream.url}
    with TriggerHosts(tmp_path, plugins=[Feeds()], env=env, hosts=2, postgres=True) as th:
        th.add_credential("feeds", "feeds", {"key": upstream.key})
        pid = th.create_pipeline(pushed())
        secret = secret_of(upstream, th, pid)
        events = [{"id": n, "text": f"e{n}"} for n in range(5)]
        body = {"delivery": "d-1", "events": events}
        barrier = threading.Barrier(4)
        answers = []

        def send(host: int):  # the upstream sends, and retries at once, to either host
            barrier.wait()
            answers.append(deliver(th, pid, body, {"X-Feeds-Secret": secret}, host=host)[0])

        threads = [threading.Thread(target=send, args=(i % 2,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [200, 200, 200, 200]
        runs = th.wait_runs(pid, 5)
        assert sorted(r["input"]["text"] for r in runs) == [f"e{n}" for n in range(5)]
