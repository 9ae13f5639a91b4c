"""The store-backed recorder writes what a resumed run needs, and no more: a step with effects
is never called before the rows of the steps before it are written; pure steps (core.transform)
write no "running" row and are written in batches."""

from __future__ import annotations

import pytest
from e2e_support import make_app, stop_app
from levqor_host.runs.recording import MAX_HELD_ROWS

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


@pytest.fixture
def host(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("rec@example.com", plan="business")
    p = st.store.pipelines.create(user["id"], "p", DOC)
    run, _ = st.runs.start(user, st.store.pipelines.get(user["id"], p["id"]), {})
    yield st, run
    stop_app(app)


def step(path, connector="core", action="transform"):
    return {"id": path, "connector": connector, "action": action}


def ran(rec, s, n=0):
    rec.step_started(rec.run["id"], s, n, 1)
    rec.step_finished(
        rec.run["id"],
        s,
        n,
        status="succeeded",
        attempts=1,
        input={},
        output={"n": n},
        error=None,
        duration=0.0,
    )


def written(st, run):
    return {s["step_id"]: s["status"] for s in st.store.runs.get(None, run["id"])["steps"]}


def test_pure_steps_write_no_running_row_and_an_effect_waits_for_nothing(host):
    st, run = host
    rec = st.runs.recorder(run)
    ran(rec, step("each[0].shape"))
    ran(rec, step("each[1].shape"))
    assert written(st, run) == {}  # held back: running them again sends nothing
    send = step("send", "http", "request")
    rec.step_started(run["id"], send, 1, 1)
    # before the connector with effects is called, everything before it is written
    assert written(st, run) == {
        "each[0].shape": "succeeded",
        "each[1].shape": "succeeded",
        "send": "running",
    }
    rec.step_finished(
        run["id"],
        send,
        1,
        status="succeeded",
        attempts=1,
        input={},
        output={},
        error=None,
        duration=0.0,
    )
    # a pure step after a step with effects writes that step's row first
    rec.step_started(run["id"], step("after"), 2, 1)
    assert written(st, run)["send"] == "succeeded"


def test_a_long_pure_loop_is_written_in_batches(host):
    st, run = host
    rec = st.runs.recorder(run)
    for i in range(MAX_HELD_ROWS + 10):
        ran(rec, step(f"each[{i}].shape"), 0)
    assert len(written(st, run)) >= MAX_HELD_ROWS
    assert len(rec.pending) <= MAX_HELD_ROWS


def test_a_construct_shows_running_but_its_row_needs_no_flush(host):
    st, run = host
    rec = st.runs.recorder(run)
    loop = step("each", "flow", "for_each")
    rec.step_started(run["id"], loop, 0, 1)
    assert written(st, run) == {"each": "running"}
    ran(rec, step("each[0].shape"))
    rec.step_finished(
        run["id"],
        loop,
        0,
        status="succeeded",
        attempts=0,
        input={},
        output=[],
        error=None,
        duration=0.0,
    )
    ran(rec, step("later"), 1)
    assert written(st, run) == {"each": "running"}
    rec.flush()
    assert written(st, run) == {
        "each": "succeeded",
        "each[0].shape": "succeeded",
        "later": "succeeded",
    }
