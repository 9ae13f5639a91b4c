"""The API and runner on PostgreSQL, with the embedded executor and with Celery on Redis (issue 10).

A focused subset of host/tests/test_api.py and test_webhooks.py over real HTTP: create a
pipeline, run with wait, retry from the failed step, cancel a running run, a webhook, and (Celery)
a message delivered twice runs its run once. The Celery worker is a real
`levqor worker --executor celery` process; the step target is a local fake HTTP server that
counts deliveries by idempotency key.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel.testing import FakeServer, Reply
from scale_support import celery_env, pg_url, queue, redis_url, start_celery_worker, stop  # noqa: F401

pytestmark = pytest.mark.services


class Target:
    """The fake the http steps call: counts deliveries per idempotency key; can fail or hold."""

    def __init__(self) -> None:
        self.deliveries: collections.Counter[str] = collections.Counter()
        self.fail_next: set[str] = set()
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def handler(self, req):
        key = req.header("Idempotency-Key") or ""
        step = key.rsplit(":", 1)[-1]
        self.deliveries[key] += 1
        self.entered.set()
        self.hold.wait(60)
        if step in self.fail_next:
            self.fail_next.discard(step)
            return Reply(400, {"error": "refused once"})
        return Reply(200, {"ok": True, "step": step, "echo": req.json()})


def http_step(url: str, sid: str, value: str = "{{ trigger.v }}") -> dict:
    return {
        "id": sid,
        "connector": "http",
        "action": "request",
        "payload": {
            "method": "POST",
            "url": f"{url}/deliver",
            "headers": {"Idempotency-Key": "{{ run.id }}:" + sid},
            "json": {"v": value},
        },
    }


def two_step(url: str, trigger: str = "manual") -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": trigger},
        "steps": [
            {
                "id": "shape",
                "connector": "core",
                "action": "transform",
                "payload": {"value": {"v": "{{ trigger.v }}-shaped"}},
            },
            http_step(url, "one", "{{ steps.shape.output.value.v }}"),
            http_step(url, "two", "{{ steps.one.output.body.echo.v }}"),
        ],
    }


@pytest.fixture(params=["embedded", "celery"])
def deployment(request, tmp_path, pg_url):  # noqa: F811
    target = Target()
    with FakeServer() as fake:
        fake.route("POST", "/deliver", target.handler)
        worker = None
        if request.param == "embedded":
            app = make_app(tmp_path, env={"DATABASE_URL": pg_url}, executor={"workers": 2, "lease_seconds": 2})
        else:
            q = request.getfixturevalue("queue")
            request.getfixturevalue("redis_url")
            env = celery_env(tmp_path / "data", pg_url, q)
            app = make_app(
                tmp_path,
                env={
                    k: v for k, v in env.items() if k.startswith("LEVQOR_") or k == "DATABASE_URL"
                },
                start_workers=False,
            )
            worker = start_celery_worker(env, tmp_path / "worker.log", threads=2)
        srv = LiveServer(app)
        _, key = srv.user_with_key("alice@example.com")
        try:
            yield srv, srv.client(key), fake, target, request.param
        finally:
            target.hold.set()
            if worker is not None:
                stop(worker)
            srv.stop()


def create(client, doc) -> dict:
    r = client.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc})
    assert r.status_code == 201, r.text
    return r.json()


def test_run_with_wait(deployment):
    srv, alice, fake, target, mode = deployment
    p = create(alice, two_step(fake.url))
    r = alice.post("/api/v1/run?wait=30", json={"pipeline_id": p["id"], "input": {"v": "x"}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
    assert run["steps"][2]["output"]["body"]["echo"] == {"v": "x-shaped"}
    assert srv.state.store.dialect == "postgresql"
    assert sorted(target.deliveries.values()) == [1, 1]
    listed = alice.get("/api/v1/runs", params={"pipeline_id": p["id"]}).json()
    assert [x["id"] for x in listed["items"]] == [run["id"]]


def test_retry_resumes_after_the_succeeded_steps(deployment):
    srv, alice, fake, target, mode = deployment
    p = create(alice, two_step(fake.url))
    target.fail_next = {"two"}
    r = alice.post("/api/v1/run?wait=30", json={"pipeline_id": p["id"], "input": {"v": "a"}}).json()
    assert r["status"] == "failed", r
    assert [s["status"] for s in r["steps"]] == ["succeeded", "succeeded", "failed"]
    retry = alice.post(f"/api/v1/runs/{r['id']}/retry?wait=30").json()
    assert retry["status"] == "succeeded" and retry["retry_of"] == r["id"], retry
    # step one was not sent again for the retry; step two was sent once more
    assert target.deliveries[f"{retry['id']}:one"] == 0
    assert target.deliveries[f"{retry['id']}:two"] == 1
    assert retry["steps"][2]["output"]["body"]["echo"] == {"v": "a-shaped"}


def test_cancel_a_running_run(deployment):
    srv, alice, fake, target, mode = deployment
    p = create(alice, two_step(fake.url))
    target.hold.clear()
    rid = alice.post("/api/v1/run", json={"pipeline_id": p["id"], "input": {"v": 1}}).json()[
        "run_id"
    ]
    assert target.entered.wait(60), "the run never reached step one"
    c = alice.post(f"/api/v1/runs/{rid}/cancel").json()
    assert c["cancel_requested"] is True
    target.hold.set()
    final = srv.state.runs.wait(None, rid, 60)
    assert final["status"] == "cancelled", final
    assert [s["status"] for s in final["steps"]] == ["succeeded", "succeeded", "skipped"]
    assert f"{rid}:two" not in target.deliveries


def test_webhook_starts_a_run(deployment):
    srv, alice, fake, target, mode = deployment
    p = create(alice, two_step(fake.url, trigger="webhook"))
    token = p["webhook_url"].split("/hooks/")[1]
    r = srv.client().post(
        f"/hooks/{token}", json={"v": "hook"}, headers={"X-Levqor-Delivery": "d-1"}
    )
    assert r.status_code == 202, r.text
    again = srv.client().post(
        f"/hooks/{token}", json={"v": "hook"}, headers={"X-Levqor-Delivery": "d-1"}
    )
    assert again.json()["run_id"] == r.json()["run_id"] and again.json()["created"] is False
    run = srv.state.runs.wait(None, r.json()["run_id"], 30)
    assert run["status"] == "succeeded", run
    assert run["trigger"] == "webhook"
    assert sorted(target.deliveries.values()) == [1, 1]


@pytest.mark.parametrize("deployment", ["celery"], indirect=True)
def test_a_message_delivered_twice_runs_once(deployment):
    srv, alice, fake, target, mode = deployment
    p = create(alice, two_step(fake.url))
    target.hold.clear()
    rid = alice.post("/api/v1/run", json={"pipeline_id": p["id"], "input": {"v": 2}}).json()[
        "run_id"
    ]
    assert target.entered.wait(60)
    # the same run id sent again, twice, while the first delivery holds the run's lease
    assert srv.state.dispatcher.send(rid) and srv.state.dispatcher.send(rid)
    time.sleep(0.5)
    target.hold.set()
    final = srv.state.runs.wait(None, rid, 30)
    assert final["status"] == "succeeded"
    time.sleep(0.5)
    assert target.deliveries == {f"{rid}:one": 1, f"{rid}:two": 1}
    # and once finished, another delivery changes nothing
    assert srv.state.dispatcher.send(rid)
    time.sleep(1.0)
    assert srv.state.store.runs.get(None, rid)["claims"] == 1
    assert target.deliveries == {f"{rid}:one": 1, f"{rid}:two": 1}


def test_values_postgresql_cannot_store_are_a_400_not_a_500(tmp_path, pg_url):  # noqa: F811
    srv = LiveServer(make_app(tmp_path, env={"DATABASE_URL": pg_url}, start_workers=False))
    try:
        _, key = srv.user_with_key("pg@example.com")
        alice = srv.client(key)
        p = create(alice, two_step("http://127.0.0.1:9"))
        # a version beyond PostgreSQL's 32 bits: no such version, as on SQLite (never a 500)
        r = alice.get(f"/api/v1/pipelines/{p['id']}/versions/22653975496116200")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        r = alice.post("/api/v1/run", json={"pipeline_id": p["id"], "version": 2**40})
        assert r.status_code in (400, 404), r.text
    finally:
        srv.stop()
