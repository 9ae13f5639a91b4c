"""Approvals over real HTTP: the API's approve and reject, exactly one decision winning, the
signed one-time links, and the cancel of a waiting run; and an error pipeline whose start was
lost with its process, started by the repair sweep."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e_support import LiveServer, make_app
from levqor_host.workers.embedded import EmbeddedExecutor

pytestmark = pytest.mark.backends

def approval_doc(timeout: float | None = None) -> dict:
    approval = {"message": "Ship it?", "on_timeout": "reject"}
    if timeout is not None:
        approval["timeout"] = timeout
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "ok", "type": "wait", "approval": approval},
            {"id": "after", "connector": "core", "action": "transform",
             "payload": {"value": "{{ steps.ok.output.approved }}"}},
        ],
    }


@pytest.fixture
def server(tmp_path):
    srv = LiveServer(make_app(tmp_path, start_workers=False, base_url="https://levqor.example"))
    yield srv
    srv.stop()


def suspend_at_approval(srv: LiveServer, user: dict, *, timeout: float | None = None) -> str:
    """A run of ``user`` that the executor ran up to its approval step, where it suspended
    (run here, in the test's thread, by an executor without threads of its own)."""
    st = srv.state
    p = st.store.pipelines.create(user["id"], "approve me", approval_doc(timeout))
    run, _ = st.runs.start(user, st.store.pipelines.get(user["id"], p["id"]), {})
    claimed = st.runs.claim_one("w", run["id"])
    assert claimed is not None
    assert EmbeddedExecutor(st.runs, threads=0, worker_id="w").execute(claimed) == "waiting"
    return run["id"]


def test_approve_decides_the_step_and_queues_the_run(server):
    user, key = server.user_with_key("a@example.com")
    c = server.client(key)
    rid = suspend_at_approval(server, user)
    got = c.get(f"/api/v1/runs/{rid}").json()
    assert got["status"] == "waiting"
    assert got["wait"]["kind"] == "approval" and got["wait"]["step"] == "ok"
    assert got["wait"]["message"] == "Ship it?" and "nonce" not in got["wait"]
    assert got["approve_url"].startswith(f"https://levqor.example/resume/{rid}/approve?")
    assert got["reject_url"].startswith(f"https://levqor.example/resume/{rid}/reject?")
    r = c.post(f"/api/v1/runs/{rid}/approve", json={"comment": "fine"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["wait"] is None
    step = r.json()["steps"][-1]
    assert step["status"] == "succeeded"
    assert step["output"]["approved"] is True and step["output"]["by"] == "a@example.com"
    assert step["output"]["comment"] == "fine"
    again = c.post(f"/api/v1/runs/{rid}/approve")
    assert again.status_code == 409 and "not waiting" in again.json()["error"]["message"]
    assert c.post(f"/api/v1/runs/{rid}/reject").status_code == 409


def test_reject_fails_the_step_with_rejected(server):
    user, key = server.user_with_key("r@example.com")
    c = server.client(key)
    rid = suspend_at_approval(server, user)
    r = c.post(f"/api/v1/runs/{rid}/reject", data=b"")  # no body: the comment is optional
    assert r.status_code == 200, r.text
    step = r.json()["steps"][-1]
    assert step["status"] == "failed" and step["error"]["type"] == "Rejected"
    assert step["error"]["code"] == "rejected"
    assert c.post(f"/api/v1/runs/{rid}/reject", json={"comment": "late"}).status_code == 409


def test_approval_input_and_access_are_checked(server):
    user, key = server.user_with_key("c@example.com")
    _, other_key = server.user_with_key("other@example.com")
    _, read_only = server.user_with_key("ro@example.com", scopes=["pipelines:read"])
    rid = suspend_at_approval(server, user)
    c = server.client(key)
    assert c.post(f"/api/v1/runs/{rid}/approve", json={"comment": 5}).status_code == 400
    assert c.post(f"/api/v1/runs/{rid}/approve", json={"nope": 1}).status_code == 400
    assert c.post(f"/api/v1/runs/{rid}/approve", json=[1]).status_code == 400
    assert server.client(other_key).post(f"/api/v1/runs/{rid}/approve").status_code == 404
    assert server.client(read_only).post(f"/api/v1/runs/{rid}/approve").status_code == 403
    assert c.post("/api/v1/runs/run_nope/approve").status_code == 404
    assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"


def test_two_concurrent_approvals_one_wins(tmp_path):
    """Two hosts on one database, eight approvals at once: exactly one is decided."""
    first = LiveServer(make_app(tmp_path, start_workers=False))
    second = LiveServer(make_app(tmp_path, start_workers=False))  # the same database
    try:
        user, key = first.user_with_key("t@example.com")
        rid = suspend_at_approval(first, user)
        barrier = threading.Barrier(8)
        codes: list[int] = []

        def approve(srv: LiveServer, approved: bool) -> None:
            c = srv.client(key)
            barrier.wait()
            verb = "approve" if approved else "reject"
            codes.append(c.post(f"/api/v1/runs/{rid}/{verb}").status_code)

        threads = [
            threading.Thread(target=approve, args=(srv, i % 2 == 0))
            for i, srv in enumerate([first, second] * 4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [200] + [409] * 7
        run = first.state.store.runs.get(None, rid)
        assert run["status"] == "queued"
        assert [s["status"] for s in run["steps"]][-1] in ("succeeded", "failed")
    finally:
        second.stop()
        first.stop()


def _link_parts(link: str) -> tuple[str, dict]:
    parts = urlsplit(link)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_signed_link_shows_then_decides_once(server):
    user, key = server.user_with_key("l@example.com")
    rid = suspend_at_approval(server, user)
    c = server.client(key)
    link = c.get(f"/api/v1/runs/{rid}").json()["approve_url"]
    path, query = _link_parts(link)
    anon = server.client()
    page = anon.get(path, params=query)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "Ship it?" in page.text and "<form" in page.text
    assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"  # a GET changes nothing
    done = anon.post(path, params=query, data={"comment": "from mail"})
    assert done.status_code == 200 and "Approved" in done.text
    run = c.get(f"/api/v1/runs/{rid}").json()
    assert run["status"] == "queued"
    assert run["steps"][-1]["output"]["by"] == "signed link"
    assert run["steps"][-1]["output"]["comment"] == "from mail"
    assert anon.post(path, params=query).status_code == 410  # reused
    assert anon.get(path, params=query).status_code == 410


def test_forged_or_swapped_links_are_refused(server):
    user, key = server.user_with_key("f@example.com")
    rid = suspend_at_approval(server, user)
    c = server.client(key)
    run = c.get(f"/api/v1/runs/{rid}").json()
    path, query = _link_parts(run["approve_url"])
    reject_path, reject_query = _link_parts(run["reject_url"])
    anon = server.client()
    forged = {**query, "sig": query["sig"][:-2] + ("AA" if query["sig"][-2:] != "AA" else "BB")}
    assert anon.post(path, params=forged).status_code == 403
    # the approve signature does not reject
    assert anon.post(reject_path, params=query).status_code == 403
    assert anon.post(path, params={**query, "nonce": "other"}).status_code == 410
    assert anon.post(f"/resume/{rid}/maybe", params=query).status_code == 404
    assert anon.post("/resume/run_nope/approve", params=query).status_code == 404
    assert anon.post(path).status_code == 403  # no signature at all
    assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"
    assert anon.post(reject_path, params=reject_query).status_code == 200
    assert c.get(f"/api/v1/runs/{rid}").json()["steps"][-1]["status"] == "failed"


def test_cancel_a_waiting_run_ends_and_settles_it(server):
    user, key = server.user_with_key("x@example.com")
    rid = suspend_at_approval(server, user)
    c = server.client(key)
    r = c.post(f"/api/v1/runs/{rid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["steps"][-1]["status"] == "cancelled"
    assert server.state.store.runs.unsettled(older_than=-60) == []  # settled at once
    assert c.post(f"/api/v1/runs/{rid}/approve").status_code == 409


def test_approval_timeout_rejects_through_the_sweep(server):
    user, key = server.user_with_key("o@example.com")
    rid = suspend_at_approval(server, user, timeout=1)
    assert server.state.runs.flow.resume_due() == 0
    time.sleep(1.1)
    assert server.state.runs.flow.resume_due() == 1
    run = server.client(key).get(f"/api/v1/runs/{rid}").json()
    assert run["status"] == "queued"
    step = run["steps"][-1]
    assert step["status"] == "failed" and step["error"]["code"] == "rejected"
    assert step["output"]["by"] == "timeout"
    assert server.state.runs.flow.resume_due() == 0


def test_a_lost_error_pipeline_start_is_caught_up_once(server):
    user, key = server.user_with_key("lost@example.com")
    st = server.state
    handler = st.store.pipelines.create(user["id"], "handler", approval_doc())
    fragile = st.store.pipelines.create(
        user["id"], "fragile", {**approval_doc(), "error_pipeline": handler["id"]}
    )
    quiet = st.store.pipelines.create(user["id"], "quiet", approval_doc())
    rids = []
    for p in (fragile, quiet):
        run, _ = st.runs.start(user, st.store.pipelines.get(user["id"], p["id"]), {})
        assert st.runs.claim_one("w", run["id"]) is not None
        # the run fails and is settled, and the process dies before anything else
        with st.store.write() as conn:
            assert st.store.runs.finish_in(
                conn, run["id"], "w", "failed", {"type": "Boom", "message": "x", "step": "ok"},
                settled=True,
            )
        rids.append(run["id"])
    flow = st.runs.flow
    assert flow.catch_up_error_pipelines(older_than=0) == 1
    assert flow.catch_up_error_pipelines(older_than=0) == 0
    started = st.store.runs.find_by_idempotency_key(user["id"], f"{rids[0]}:error")
    assert started["trigger"] == "error" and started["pipeline_id"] == handler["id"]
    assert started["input"]["run_id"] == rids[0] and started["input"]["step"] == "ok"
    assert st.store.runs.find_by_idempotency_key(user["id"], f"{rids[1]}:error") is None
    assert flow.catch_up_error_pipelines(older_than=3600) == 0  # not old enough: left alone


def test_an_approval_is_emailed_to_the_owner_with_working_links(tmp_path):
    fake = pytest.importorskip("levqor_gmail.fake", reason="levqor-gmail holds the Resend fake")
    with fake.FakeResend(api_key="re_test_approval_0123456789") as resend:
        env = {
            "RESEND_API_KEY": "re_test_approval_0123456789",
            "LEVQOR_RESEND_API_BASE": resend.url,
            "LEVQOR_MAIL_FROM": "Levqor <noreply@acme.example>",
        }
        srv = LiveServer(make_app(tmp_path, start_workers=False, env=env))
        try:
            user, key = srv.user_with_key("boss@example.com")
            rid = suspend_at_approval(srv, user, timeout=3600)
            end = time.monotonic() + 10
            while not [e for e in resend.emails if "approval" in e["body"]["subject"]]:
                assert time.monotonic() < end, resend.emails
                time.sleep(0.05)
            [mail] = [e["body"] for e in resend.emails if "approval" in e["body"]["subject"]]
            assert mail["to"] in ("boss@example.com", ["boss@example.com"])
            assert "Ship it?" in mail["text"] and "its timeout decides" in mail["text"]
            approve = next(
                line.split(": ", 1)[1] for line in mail["text"].splitlines()
                if line.startswith("Approve: ")
            )
            assert approve == srv.client(key).get(f"/api/v1/runs/{rid}").json()["approve_url"]
            path, query = _link_parts(approve)
            assert srv.client().post(path, params=query).status_code == 200
            assert srv.state.store.runs.get(None, rid)["status"] == "queued"
        finally:
            srv.stop()


def test_an_approvals_notify_step_posts_its_links_which_work(server):
    """The approval's notify steps run before the run waits, with the signed links in scope
    (here posted to a chat webhook); the posted link is the run's own and decides it once."""
    from levqor_kernel.testing import FakeServer, Reply

    posted: list[dict] = []
    with FakeServer() as chat:
        chat.route("POST", "/hook", lambda req: (posted.append(req.json()), Reply(200, {"ok": True}))[1])
        doc = approval_doc()
        doc["steps"][0]["notify"] = [{
            "id": "post", "connector": "http", "action": "request",
            "payload": {"method": "POST", "url": f"{chat.url}/hook",
                        "json": {"text": "{{ approval.message }} Approve: {{ approval.approve_url }}",
                                 "reject": "{{ approval.reject_url }}"}},
        }]
        user, key = server.user_with_key("n@example.com")
        st = server.state
        p = st.store.pipelines.create(user["id"], "notify", doc)
        run, _ = st.runs.start(user, st.store.pipelines.get(user["id"], p["id"]), {})
        claimed = st.runs.claim_one("w", run["id"])
        assert EmbeddedExecutor(st.runs, threads=0, worker_id="w").execute(claimed) == "waiting"
    c = server.client(key)
    got = c.get(f"/api/v1/runs/{run['id']}").json()
    [message] = posted
    assert message["text"] == f"Ship it? Approve: {got['approve_url']}"
    assert message["reject"] == got["reject_url"]
    path, query = _link_parts(message["text"].split("Approve: ")[1])
    anon = server.client()
    assert anon.post(path, params=query).status_code == 200
    assert c.get(f"/api/v1/runs/{run['id']}").json()["status"] == "queued"
    assert anon.post(path, params=query).status_code == 410
