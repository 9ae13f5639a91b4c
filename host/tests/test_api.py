"""The JSON API over real HTTP: pipelines, credentials, runs, validation, limits, isolation."""

from __future__ import annotations

import json
import threading

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from levqor_kernel.errors import PermanentError

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

SECRET = "sk-planted-SECRET-5f4e3d2c1b"


class Gate:
    """A test connector whose failures the test controls (a real plugin, loaded by the host)."""

    def __init__(self) -> None:
        self.fail = threading.Event()
        self.block = threading.Event()
        self.block.set()
        self.calls: list[dict] = []
        self.fail_at: set[int] = set()  # call numbers (1-based) that fail

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "gate", "title": "Gate", "description": "test connector",
            "credentials": {"type": "object", "required": ["token"],
                            "properties": {"token": {"type": "string", "writeOnly": True}}},
            "actions": {"pass": {
                "title": "Pass", "payload": {"type": "object", "properties": {"v": {}}},
                "output": {"type": "object"}, "example": {"v": 1}}},
        }]

    @hookimpl
    def check_credentials(self, connector, credentials, context):
        if credentials.get("token") == "a-kind-with-no-check":
            return None  # the connector checks other kinds of credential only
        if credentials.get("token") != SECRET:
            raise PermanentError(f"token {credentials.get('token')} refused")
        return {"ok": True, "account": "acct-1"}

    @hookimpl
    def validate_credentials(self, connector, credentials, env):
        token = credentials.get("token", "")
        if token == "crash-the-check":
            raise RuntimeError("a bug in the plugin")
        if token.startswith(env.get("GATE_PUBLIC_PREFIX", "pk-")):
            return {"token": f"{token} is a publishable key; a secret key is needed"}
        return {}

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.block.wait(10)
        self.calls.append({"payload": payload, "key": context.idempotency_key})
        if self.fail.is_set() or len(self.calls) in self.fail_at:
            raise PermanentError(f"gate closed (token {credentials['token']})")
        return {"v": payload.get("v"), "token_seen": credentials["token"] == SECRET}


@pytest.fixture
def gate():
    return Gate()


@pytest.fixture
def srv(tmp_path, gate):
    app = make_app(tmp_path, plugins=[("gate", gate)], executor={"workers": 2})
    s = LiveServer(app)
    yield s
    s.stop()


@pytest.fixture
def alice(srv):
    user, key = srv.user_with_key("alice@example.com")
    return srv.client(key)


@pytest.fixture
def bob(srv):
    user, key = srv.user_with_key("bob@example.com")
    return srv.client(key)


def transform_doc(**trigger):
    return {"levqor": 1, "trigger": {"type": "manual", **trigger}, "steps": [
        {"id": "greet", "connector": "core", "action": "transform",
         "payload": {"value": {"hello": "{{ trigger.name }}", "n": "{{ trigger.n * 2 }}"}}}]}


def gate_doc():
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
        {"id": "one", "connector": "gate", "action": "pass", "credential": "g", "payload": {"v": "{{ trigger.v }}"}},
        {"id": "two", "connector": "gate", "action": "pass", "credential": "g",
         "payload": {"v": "{{ steps.one.output.v }}-2"}}]}


def create(client, doc, name="p"):
    r = client.post("/api/v1/pipelines", json={"name": name, "pipeline": doc})
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------- basics
def test_health_needs_no_key(srv):
    r = srv.client().get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer lvq_nope_nope", "Basic abc", "lvq_x"])
def test_api_needs_a_valid_key(srv, header):
    c = srv.client()
    if header:
        c.headers["Authorization"] = header
    r = c.get("/api/v1/pipelines")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert "Bearer" in r.headers["WWW-Authenticate"]


def test_revoked_key_stops_working(srv):
    user, key = srv.user_with_key("carol@example.com")
    c = srv.client(key)
    assert c.get("/api/v1/pipelines").status_code == 200
    [k] = srv.state.store.api_keys.list(user["id"])
    assert srv.state.store.api_keys.revoke(user["id"], k["id"])
    assert c.get("/api/v1/pipelines").status_code == 401


def test_connectors_catalog(alice):
    r = alice.get("/api/v1/connectors")
    names = {c["name"] for c in r.json()["connectors"]}
    assert {"core", "gate"} <= names


# ---------------------------------------------------------------- pipelines
def test_pipeline_crud_and_immutable_versions(srv, alice):
    p = create(alice, transform_doc(), "first")
    assert p["version"] == 1 and p["webhook_url"] is None  # a manual pipeline: no webhook
    doc2 = transform_doc()
    doc2["steps"][0]["payload"]["value"]["extra"] = "x"
    r = alice.put(f"/api/v1/pipelines/{p['id']}", json={"pipeline": doc2, "name": "renamed"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["name"] == "renamed"
    v1 = alice.get(f"/api/v1/pipelines/{p['id']}/versions/1").json()
    assert "extra" not in v1["pipeline"]["steps"][0]["payload"]["value"]
    assert [v["version"] for v in alice.get(f"/api/v1/pipelines/{p['id']}/versions").json()["items"]] == [1, 2]
    assert alice.get(f"/api/v1/pipelines/{p['id']}/versions/3").status_code == 404
    items = alice.get("/api/v1/pipelines").json()["items"]
    assert [i["id"] for i in items] == [p["id"]]
    # the export file follows the latest version
    exported = json.loads((srv.state.config.pipelines_dir / f"{p['id']}.json").read_text())
    assert exported["version"] == 2
    assert alice.delete(f"/api/v1/pipelines/{p['id']}").json()["archived"] is True
    assert alice.get("/api/v1/pipelines").json()["items"] == []
    assert alice.post("/api/v1/run", json={"pipeline_id": p["id"]}).status_code == 404


def test_invalid_pipeline_lists_every_problem_with_pointers(alice):
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
        {"id": "a", "connector": "nope", "action": "x", "payload": {}},
        {"id": "b", "connector": "core", "action": "transform", "payload": {"value": "{{ steps.zz.output }}"}},
        {"id": "c", "connector": "core", "action": "delay", "payload": {"seconds": "soon"}},
    ]}
    r = alice.post("/api/v1/pipelines", json={"pipeline": doc})
    assert r.status_code == 422
    problems = r.json()["error"]["details"]["problems"]
    pointers = {p["pointer"] for p in problems}
    assert {"/steps/0/connector", "/steps/1/payload/value", "/steps/2/payload/seconds"} <= pointers
    assert {p["step"] for p in problems} == {"a", "b", "c"}


def test_missing_credential_is_a_warning_on_save_and_blocks_the_run(alice):
    p = create(alice, gate_doc())
    assert p["warnings"] and p["warnings"][0]["pointer"] == "/steps/0/credential"
    r = alice.post("/api/v1/run", json={"pipeline_id": p["id"]})
    assert r.status_code == 422
    assert "does not exist" in json.dumps(r.json())


@pytest.mark.parametrize(
    ("data", "ctype", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"[1,2]", "application/json", 400, "invalid_request"),
        (b'{"pipeline": "text"}', "application/json", 400, "invalid_request"),
        (b'{"pipeline": {}, "extra": 1}', "application/json", 400, "invalid_request"),
        (b'{"name": 5, "pipeline": {}}', "application/json", 400, "invalid_request"),
        (b"pipeline=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "application/json", 400, "invalid_json"),
        (b'{"pipeline": NaN}', "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
    ],
    ids=["malformed", "empty", "array", "wrong-type", "unknown-field", "name-type", "form", "deep", "nan", "bytes"],
)
def test_bad_bodies_get_400s_naming_the_problem(alice, data, ctype, status, code):
    r = alice.post("/api/v1/pipelines", data=data, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_huge_body_is_refused_with_413(alice):
    big = json.dumps({"pipeline": {"x": "a" * (2 * 1024 * 1024)}})
    r = alice.post("/api/v1/pipelines", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


def test_unknown_route_and_method_are_json(alice):
    assert alice.get("/api/v1/nothing").json()["error"]["code"] == "not_found"
    assert alice.patch("/api/v1/pipelines").status_code == 405


# ---------------------------------------------------------------- credentials
def test_credentials_are_never_returned_and_can_be_tested(srv, alice):
    r = alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate", "values": {"token": SECRET}})
    assert r.status_code == 201 and SECRET not in r.text
    cid = r.json()["id"]
    listing = alice.get("/api/v1/credentials")
    assert SECRET not in listing.text and listing.json()["items"][0]["name"] == "g"
    t = alice.post(f"/api/v1/credentials/{cid}/test").json()
    assert t == {"id": cid, "supported": True, "ok": True, "details": {"account": "acct-1"}}
    r = alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate", "values": {"token": SECRET}})
    assert r.status_code == 409
    bad = alice.post("/api/v1/credentials", json={"name": "h", "connector": "gate", "values": {"token": 12345678}})
    assert bad.status_code == 422 and "12345678" not in bad.text
    assert alice.post("/api/v1/credentials", json={"name": "x", "connector": "ghost", "values": {}}).status_code == 422
    assert alice.delete(f"/api/v1/credentials/{cid}").status_code == 200
    assert alice.get("/api/v1/credentials").json()["items"] == []
    assert alice.delete(f"/api/v1/credentials/{cid}").status_code == 404


def test_credentials_that_can_never_work_are_refused_when_saved(alice):
    public = "pk-live-publishable-77aa"
    r = alice.post("/api/v1/credentials", json={"name": "p", "connector": "gate", "values": {"token": public}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_credentials" and "token" in err["message"]
    assert err["details"]["problems"] == [
        {"pointer": "/values/token", "field": "token", "message": "*** is a publishable key; a secret key is needed"}
    ]
    assert public not in r.text
    # a check that crashes stores nothing either
    r = alice.post("/api/v1/credentials", json={"name": "c", "connector": "gate", "values": {"token": "crash-the-check"}})
    assert r.status_code == 422 and "could not check" in r.text
    assert alice.get("/api/v1/credentials").json()["items"] == []


def test_a_check_that_answers_none_is_no_check_not_a_success(alice):
    cid = alice.post("/api/v1/credentials", json={"name": "n", "connector": "gate",
                                                  "values": {"token": "a-kind-with-no-check"}}).json()["id"]
    t = alice.post(f"/api/v1/credentials/{cid}/test").json()
    assert t == {"id": cid, "supported": False, "ok": None,
                 "message": "connector 'gate' offers no credential check"}


def test_failed_credential_check_is_redacted(alice):
    cid = alice.post("/api/v1/credentials", json={"name": "w", "connector": "gate",
                                                  "values": {"token": "wrong-token-value-123"}}).json()["id"]
    t = alice.post(f"/api/v1/credentials/{cid}/test").json()
    assert t["ok"] is False and "wrong-token-value-123" not in json.dumps(t)


# ---------------------------------------------------------------- runs
def test_run_and_wait(srv, alice):
    p = create(alice, transform_doc())
    r = alice.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"], "input": {"name": "Ann", "n": 21}})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "succeeded"
    [step] = run["steps"]
    assert step["output"] == {"value": {"hello": "Ann", "n": 42}}
    assert step["attempts"] == 1 and step["started_at"] and step["finished_at"]
    # the jobs.jsonl line follows the run's settlement, just after the run row turns final
    log = srv.state.config.jobs_log
    for _ in range(100):
        if log.exists() and run["id"] in log.read_text():
            break
        threading.Event().wait(0.02)
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["run_id"] == run["id"]


def test_run_without_wait_answers_202_and_finishes(srv, alice):
    p = create(alice, transform_doc())
    r = alice.post("/api/v1/run", json={"pipeline_id": p["id"], "input": {"name": "B", "n": 1}})
    assert r.status_code == 202 and r.headers["Location"] == f"/api/v1/runs/{r.json()['run_id']}"
    run = srv.state.runs.wait(None, r.json()["run_id"], 10)
    assert run["status"] == "succeeded"


def test_same_idempotency_key_returns_the_same_run(srv, alice):
    p = create(alice, transform_doc())
    body = {"pipeline_id": p["id"], "input": {"name": "x", "n": 1}, "idempotency_key": "order-77"}
    a = alice.post("/api/v1/run", json=body)
    b = alice.post("/api/v1/run", json=body)
    assert a.status_code == b.status_code == 202
    assert b.json() == a.json() and a.json()["created"] is True  # the first answer, replayed
    assert b.headers["Idempotent-Replayed"] == "true" and b.headers["Location"] == a.headers["Location"]
    # the header is the same key as the field
    c = alice.post("/api/v1/run", json=body, headers={"Idempotency-Key": "order-77"})
    assert c.json() == a.json()
    r = alice.post("/api/v1/run", json=body, headers={"Idempotency-Key": "order-78"})
    assert r.status_code == 400 and "differ" in r.json()["error"]["message"]
    items = alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"]
    assert len(items) == 1


def _count(alice, what: str) -> int:
    return len(alice.get(f"/api/v1/{what}").json()["items"])


def test_idempotency_key_header_on_every_creating_post(srv, alice, bob):
    """Same key and request: the first answer (status, body) and nothing created again; the
    same key with another request: 422; another user's same key is their own."""
    p = create(alice, transform_doc())
    requests_ = [
        ("/api/v1/pipelines", {"name": "idem", "pipeline": transform_doc()}, "pipelines", 201),
        (
            "/api/v1/credentials",
            {"name": "g1", "connector": "gate", "values": {"token": SECRET}},
            "credentials",
            201,
        ),
        ("/api/v1/run", {"pipeline_id": p["id"], "input": {"name": "a", "n": 1}}, "runs", 202),
        ("/api/v1/run?wait=10", {"pipeline_id": p["id"], "input": {"name": "b", "n": 2}}, "runs", 200),
    ]
    for i, (url, body, listing, status) in enumerate(requests_):
        key = {"Idempotency-Key": f"create-{i}"}
        before = _count(alice, listing)
        first = alice.post(url, json=body, headers=key)
        assert first.status_code == status, (url, first.text)
        again = alice.post(url, json=body, headers=key)
        assert again.status_code == status and again.json() == first.json(), url
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert _count(alice, listing) == before + 1, url
        other = alice.post(url, json={**body, "name": "other"} if "name" in body else
                           {**body, "input": {"name": "z", "n": 9}}, headers=key)
        assert other.status_code == 422, (url, other.text)
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert _count(alice, listing) == before + 1, url
    # keys are per user: bob's "create-0" is his own
    r = bob.post("/api/v1/pipelines", json=requests_[0][1], headers={"Idempotency-Key": "create-0"})
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert _count(bob, "pipelines") == 1
    # a failed request keeps nothing: the corrected retry with the same key proceeds
    bad = alice.post("/api/v1/pipelines", json={"pipeline": {"levqor": 1}},
                     headers={"Idempotency-Key": "fix-me"})
    assert bad.status_code == 422
    good = alice.post("/api/v1/pipelines", json={"pipeline": transform_doc()},
                      headers={"Idempotency-Key": "fix-me"})
    assert good.status_code == 201
    # malformed keys are a 400
    for k in ("", "k" * 201):
        r = alice.post("/api/v1/pipelines", json={"pipeline": transform_doc()},
                       headers={"Idempotency-Key": k})
        assert r.status_code == 400, r.text


def test_idempotency_key_in_use_while_the_first_request_runs(srv, gate, alice):
    assert alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate",
                                                   "values": {"token": SECRET}}).status_code == 201
    p = create(alice, gate_doc())
    body = {"pipeline_id": p["id"], "input": {"v": 1}}
    key = {"Idempotency-Key": "slow-1"}
    gate.block.clear()
    out = {}
    t = threading.Thread(
        target=lambda: out.setdefault("r", alice.post("/api/v1/run?wait=20", json=body, headers=key))
    )
    t.start()
    try:
        for _ in range(100):
            if srv.state.store.runs.list(alice_id(srv), limit=5)[0]:
                break
            threading.Event().wait(0.05)
        r = alice.post("/api/v1/run?wait=20", json=body, headers=key)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_use"
    finally:
        gate.block.set()
        t.join(30)
    assert out["r"].status_code == 200 and out["r"].json()["status"] == "succeeded"
    again = alice.post("/api/v1/run?wait=20", json=body, headers=key)
    assert again.json() == out["r"].json()
    assert len(srv.state.store.runs.list(alice_id(srv), limit=5)[0]) == 1


def alice_id(srv) -> str:
    return srv.state.store.users.get_by_email("alice@example.com")["id"]


def test_idempotency_keys_outlive_a_restart(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    s = LiveServer(app)
    user, key = s.user_with_key("carol@example.com")
    body = {"name": "durable", "pipeline": transform_doc()}
    first = s.client(key).post("/api/v1/pipelines", json=body, headers={"Idempotency-Key": "d-1"})
    assert first.status_code == 201
    s.stop()
    s = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        c = s.client(key)
        again = c.post("/api/v1/pipelines", json=body, headers={"Idempotency-Key": "d-1"})
        assert again.status_code == 201 and again.json() == first.json()
        assert len(c.get("/api/v1/pipelines").json()["items"]) == 1
    finally:
        s.stop()


def test_run_list_filters_and_cursor_pagination(srv, alice):
    p = create(alice, transform_doc())
    ids = [alice.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"], "input": {"name": "x", "n": i}}).json()["id"]
           for i in range(7)]
    seen, cursor = [], None
    while True:
        url = f"/api/v1/runs?pipeline_id={p['id']}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = alice.get(url).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert seen == list(reversed(ids))  # newest first
    assert len(alice.get("/api/v1/runs?status=succeeded").json()["items"]) == 7
    assert alice.get("/api/v1/runs?status=failed").json()["items"] == []
    assert alice.get("/api/v1/runs?status=bogus").status_code == 400
    assert alice.get("/api/v1/runs?limit=0").status_code == 400
    assert alice.get("/api/v1/runs?cursor=%%%").status_code == 400


def test_retry_from_the_failed_step_reuses_earlier_outputs(srv, alice, gate):
    alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate", "values": {"token": SECRET}})
    p = create(alice, gate_doc())
    gate.fail_at = {2}  # step one succeeds, step two fails
    r = alice.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"], "input": {"v": "a"}}).json()
    assert r["status"] == "failed"
    assert [s["status"] for s in r["steps"]] == ["succeeded", "failed"]
    assert SECRET not in json.dumps(r)
    calls_before = len(gate.calls)
    retry = alice.post(f"/api/v1/runs/{r['id']}/retry?wait=10").json()
    assert retry["status"] == "succeeded" and retry["retry_of"] == r["id"]
    assert [s["status"] for s in retry["steps"]] == ["succeeded", "succeeded"]
    assert retry["steps"][1]["output"]["v"] == "a-2"
    new_calls = gate.calls[calls_before:]
    assert [c["key"].split(":")[1] for c in new_calls] == ["two"]  # step one was not sent again
    assert alice.post(f"/api/v1/runs/{retry['id']}/retry").status_code == 409


def test_cancel_a_running_run(srv, alice, gate):
    alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate", "values": {"token": SECRET}})
    p = create(alice, gate_doc())
    gate.block.clear()
    rid = alice.post("/api/v1/run", json={"pipeline_id": p["id"], "input": {"v": 1}}).json()["run_id"]
    for _ in range(100):
        if alice.get(f"/api/v1/runs/{rid}").json()["status"] == "running":
            break
        threading.Event().wait(0.05)
    c = alice.post(f"/api/v1/runs/{rid}/cancel").json()
    assert c["cancel_requested"] is True
    gate.block.set()
    final = srv.state.runs.wait(None, rid, 60)
    assert final["status"] == "cancelled"
    assert [s["status"] for s in final["steps"]] == ["succeeded", "skipped"]


def test_wait_param_is_checked(alice):
    assert alice.post("/api/v1/run?wait=abc", json={"pipeline_id": "x"}).status_code == 400
    assert alice.post("/api/v1/run?wait=9999", json={"pipeline_id": "x"}).status_code == 400


# ---------------------------------------------------------------- isolation
def test_another_users_ids_answer_404_and_change_nothing(srv, alice, bob):
    p = create(alice, transform_doc())
    run = alice.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"], "input": {"name": "a", "n": 1}}).json()
    cid = alice.post("/api/v1/credentials", json={"name": "g", "connector": "gate", "values": {"token": SECRET}}).json()["id"]
    pid, rid = p["id"], run["id"]
    attempts = [
        ("get", f"/api/v1/pipelines/{pid}", None),
        ("put", f"/api/v1/pipelines/{pid}", {"pipeline": transform_doc()}),
        ("delete", f"/api/v1/pipelines/{pid}", None),
        ("get", f"/api/v1/pipelines/{pid}/versions", None),
        ("get", f"/api/v1/pipelines/{pid}/versions/1", None),
        ("post", f"/api/v1/pipelines/{pid}/webhook-secret", None),
        ("delete", f"/api/v1/pipelines/{pid}/webhook-secret", None),
        ("post", "/api/v1/run", {"pipeline_id": pid}),
        ("get", f"/api/v1/runs/{rid}", None),
        ("post", f"/api/v1/runs/{rid}/cancel", None),
        ("post", f"/api/v1/runs/{rid}/retry", None),
        ("delete", f"/api/v1/credentials/{cid}", None),
        ("post", f"/api/v1/credentials/{cid}/test", None),
    ]
    for method, url, body in attempts:
        r = getattr(bob, method)(url, json=body) if body is not None else getattr(bob, method)(url)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert pid not in r.text or method == "post"
    assert bob.get("/api/v1/pipelines").json()["items"] == []
    assert bob.get("/api/v1/runs").json()["items"] == []
    assert bob.get("/api/v1/credentials").json()["items"] == []
    assert bob.get(f"/api/v1/runs?pipeline_id={pid}").json()["items"] == []
    # alice's things are untouched
    assert alice.get(f"/api/v1/pipelines/{pid}").json()["version"] == 1
    assert alice.get(f"/api/v1/pipelines/{pid}").json()["has_webhook_secret"] is False
    assert len(alice.get("/api/v1/credentials").json()["items"]) == 1
    assert len(alice.get("/api/v1/runs").json()["items"]) == 1


# ---------------------------------------------------------------- OpenAPI
def test_openapi_matches_the_routes(srv):
    spec = srv.client().get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, m.upper()) for path, ops in spec["paths"].items() for m in ops}
    served = set()
    for rule in srv.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for part in rule.arguments:
            for conv in ("", "int:", "path:"):
                path = path.replace(f"<{conv}{part}>", "{" + part + "}")
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, m))
    assert served == documented, {"undocumented": served - documented, "not served": documented - served}


def test_responses_match_the_documented_schemas(srv, alice):
    from jsonschema import Draft202012Validator

    spec = srv.client().get("/api/v1/openapi.json").json()

    def check(schema_name, instance):
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
        errors = list(Draft202012Validator(schema).iter_errors(instance))
        assert not errors, errors[0].message

    p = create(alice, transform_doc())
    check("PipelineOut", p)
    run = alice.post("/api/v1/run?wait=10", json={"pipeline_id": p["id"], "input": {"name": "a", "n": 1}}).json()
    check("Run", run)
    check("Error", alice.get("/api/v1/runs/nope").json())
