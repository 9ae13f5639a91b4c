"""A run's steps as a tree: records addressed by path, nested under their constructs, each loop's
items paged in the database (store on SQLite and PostgreSQL, the API over real HTTP)."""

from __future__ import annotations

import pytest
from e2e_support import LiveServer, make_app
from levqor_host.store import Store
from levqor_host.store.step_paths import StepPath, parse_path

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


@pytest.mark.parametrize(
    ("path", "parent", "scope", "loop", "item"),
    [
        ("send", None, None, None, None),
        ("each", None, None, None, None),
        ("each[17].send", "each", None, "each", 17),
        ("route.paths[1].notify", "route", "paths[1]", None, None),
        ("route.default.notify", "route", "default", None, None),
        ("fan.paths[0].x", "fan", "paths[0]", None, None),
        ("send.on_error.alert", "send", "on_error", None, None),
        ("on_failure.alert", None, "on_failure", None, None),
        ("outer[2].inner", "outer", None, "outer", 2),
        ("outer[2].inner[5].send", "outer[2].inner", None, "outer[2].inner", 5),
        ("each[3].route.paths[0].x", "each[3].route", "paths[0]", "each", 3),
        ("each[3].send.on_error.alert", "each[3].send", "on_error", "each", 3),
        ("paths[3].send", "paths", None, "paths", 3),  # a loop may be called paths
        ("on_failure.on_error.x", "on_failure", "on_error", None, None),  # a step on_failure
        ("helper.turns[0]", "helper", "turns", None, None),  # an agent's model turn
        ("helper.turns[2].calls[1]", "helper.turns[2]", "calls", None, None),  # its tool call
        ("helper.turns[2].calls[1].approval", "helper.turns[2].calls[1]", "approval", None, None),
        ("each[4].helper.turns[0].calls[0]", "each[4].helper.turns[0]", "calls", "each", 4),
    ],
)
def test_a_path_says_where_its_record_sits(path, parent, scope, loop, item):
    assert parse_path(path) == StepPath(path, parent, scope, loop, item)


@pytest.mark.parametrize(
    "path",
    ["each[1]", "a..b", "x.y", "Send", "route.paths[1]", "a.b.c", "helper.turns[0].x",
     "helper.turns[0].calls[1].y", "helper.calls[0]"],
)
def test_a_path_of_no_known_form_is_a_top_level_step(path):
    assert parse_path(path) == StepPath(path)


def _record(store: Store, run_id: str, path: str, position: int, status: str = "succeeded",
            connector: str = "core", action: str = "transform", output=None) -> None:  # fmt: skip
    store.steps.record(
        run_id, path, position=position, connector=connector, action=action,
        status=status, attempts=1, output=output if output is not None else {"at": path},
    )  # fmt: skip


def _flow(store: Store, run_id: str, path: str, position: int, kind: str, status="succeeded"):
    _record(store, run_id, path, position, status, connector="flow", action=kind)


@pytest.fixture
def run(store: Store) -> dict:
    user = store.users.create("tree@example.com")
    p = store.pipelines.create(user["id"], "tree", DOC)
    return store.runs.create(user["id"], p["id"], 1, {})[0]


def _ids(nodes: list[dict]) -> list[str]:
    return [n["step_id"] for n in nodes]


def test_constructs_hold_their_steps_and_loops_their_first_items(store: Store, run: dict):
    rid = run["id"]
    _record(store, rid, "first", 0)
    _flow(store, rid, "route", 1, "branch")
    _record(store, rid, "route.paths[1].notify", 3)
    _record(store, rid, "route.paths[1].notify.on_error.alert", 4)
    _flow(store, rid, "each", 6, "for_each", "running")
    for i in range(5):  # item 3 failed at its first step, item 4 still runs
        _record(store, rid, f"each[{i}].send", 7, "failed" if i == 3 else "succeeded")
        if i < 4:
            _record(store, rid, f"each[{i}].log", 8, "skipped" if i == 3 else "succeeded")
    _record(store, rid, "each[4].log", 8, "running")
    _record(store, rid, "on_failure.alert", 9)

    roots = store.steps.tree(rid, items_limit=2)
    assert _ids(roots) == ["first", "route", "each", "on_failure.alert"]
    assert roots[3]["scope"] == "on_failure"
    (notify,) = roots[1]["children"]
    assert notify["step_id"] == "route.paths[1].notify" and notify["scope"] == "paths[1]"
    assert [(c["step_id"], c["scope"]) for c in notify["children"]] == [
        ("route.paths[1].notify.on_error.alert", "on_error")
    ]
    items = roots[2]["items"]
    assert items["total"] == 5
    assert items["by_status"] == {"succeeded": 3, "failed": 1, "running": 1}
    assert [(i["index"], i["status"]) for i in items["page"]] == [(0, "succeeded"), (1, "succeeded")]
    assert _ids(items["page"][0]["steps"]) == ["each[0].send", "each[0].log"]
    assert items["next"] == "1"
    assert "children" not in roots[2]  # the items are not children

    page = store.steps.items(rid, "each", after=1, limit=2)
    assert [(i["index"], i["status"]) for i in page["items"]] == [(2, "succeeded"), (3, "failed")]
    assert page["next"] == "3" and page["total"] == 5
    last = store.steps.items(rid, "each", after=3, limit=2)
    assert [(i["index"], i["status"]) for i in last["items"]] == [(4, "running")]
    assert last["next"] is None
    assert store.steps.items(rid, "first", limit=5) is None  # not a loop
    assert store.steps.items(rid, "nope", limit=5) is None


def test_nested_loops_and_branches_inside_items(store: Store, run: dict):
    rid = run["id"]
    _flow(store, rid, "outer", 0, "for_each")
    for i in range(3):
        _flow(store, rid, f"outer[{i}].inner", 1, "for_each", "failed" if i == 1 else "succeeded")
        for j in range(4):
            status = "failed" if (i, j) == (1, 2) else "succeeded"
            _record(store, rid, f"outer[{i}].inner[{j}].send", 2, status)
        _flow(store, rid, f"outer[{i}].route", 3, "branch")
        _record(store, rid, f"outer[{i}].route.default.note", 4)

    (outer,) = store.steps.tree(rid)
    assert outer["items"]["total"] == 3
    assert outer["items"]["by_status"] == {"succeeded": 2, "failed": 1}
    second = outer["items"]["page"][1]
    assert second["status"] == "failed"
    inner, route = second["steps"]
    assert inner["step_id"] == "outer[1].inner" and route["step_id"] == "outer[1].route"
    assert inner["items"] == {
        "total": 4, "by_status": {"succeeded": 3, "failed": 1}, "page": None, "next": None
    }  # fmt: skip
    assert _ids(route["children"]) == ["outer[1].route.default.note"]

    page = store.steps.items(rid, "outer[1].inner", limit=3)
    assert [(i["index"], i["status"]) for i in page["items"]] == [
        (0, "succeeded"), (1, "succeeded"), (2, "failed")
    ]  # fmt: skip
    assert page["next"] == "2" and page["by_status"] == {"succeeded": 3, "failed": 1}


def test_an_agents_turns_hold_their_tool_calls_in_numeric_order(store: Store, run: dict):
    rid = run["id"]
    _flow(store, rid, "helper", 0, "agent", "running")
    for i in range(12):
        _record(store, rid, f"helper.turns[{i}]", 0, connector="openai", action="agent_turn")
        _record(store, rid, f"helper.turns[{i}].calls[0]", 0, connector="sheets", action="read_rows")
    _record(store, rid, "helper.turns[11].calls[1]", 0, "waiting", connector="flow", action="wait")
    _flow(store, rid, "helper.turns[11].calls[1].approval", 0, "wait", "waiting")
    _record(store, rid, "after", 1)

    helper, after = store.steps.tree(rid)
    assert (helper["step_id"], after["step_id"]) == ("helper", "after")
    turns = helper["children"]
    assert _ids(turns) == [f"helper.turns[{i}]" for i in range(12)]
    assert {t["scope"] for t in turns} == {"turns"}
    assert [(c["step_id"], c["scope"]) for c in turns[11]["children"]] == [
        ("helper.turns[11].calls[0]", "calls"), ("helper.turns[11].calls[1]", "calls")
    ]  # fmt: skip
    (approval,) = turns[11]["children"][1]["children"]
    assert approval["scope"] == "approval" and approval["status"] == "waiting"


def test_a_loop_of_ten_thousand_items_is_read_a_page_at_a_time(store: Store, run: dict):
    rid = run["id"]
    _flow(store, rid, "each", 0, "for_each")
    rows = [
        store.steps.row(
            rid, f"each[{i}].{sid}", position=pos, connector="core", action="transform",
            status="failed" if (i % 1000 == 7 and sid == "b") else "succeeded", attempts=1,
            output={"i": i},
        )  # fmt: skip
        for i in range(10_000)
        for pos, sid in ((1, "a"), (2, "b"))
    ]
    store.steps.record_many(rows)
    (each,) = store.steps.tree(rid, items_limit=20)
    assert each["items"]["total"] == 10_000
    assert each["items"]["by_status"] == {"succeeded": 9_990, "failed": 10}
    assert [i["index"] for i in each["items"]["page"]] == list(range(20))
    cursor, seen = each["items"]["next"], 20
    while cursor is not None:  # numeric order: item 10 after item 9, not after item 1
        page = store.steps.items(rid, "each", after=int(cursor), limit=200)
        assert [i["index"] for i in page["items"]] == list(range(seen, seen + len(page["items"])))
        seen += len(page["items"])
        cursor = page["next"]
    assert seen == 10_000


# ------------------------------------------------------------------------------ over HTTP
@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path))
    yield s
    s.stop()


def _ran(srv: LiveServer, email: str) -> tuple[object, dict]:
    _, key = srv.user_with_key(email)
    c = srv.client(key)
    p = c.post("/api/v1/pipelines", json={"pipeline": DOC})
    assert p.status_code == 201, p.text
    r = c.post("/api/v1/run?wait=10", json={"pipeline_id": p.json()["id"]})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return c, r.json()


def test_the_run_api_nests_steps_and_pages_loop_items(srv):
    c, run = _ran(srv, "ann@example.com")
    assert [(s["id"], s["scope"]) for s in run["steps"]] == [("a", None)]  # flat as before
    store = srv.state.store
    _flow(store, run["id"], "each", 1, "for_each")
    for i in range(30):
        _record(store, run["id"], f"each[{i}].send", 2, "failed" if i == 29 else "succeeded")
    _flow(store, run["id"], "route", 3, "branch")
    _record(store, run["id"], "route.paths[0].x", 4)

    got = c.get(f"/api/v1/runs/{run['id']}?items_limit=25").json()
    a, each, route = got["steps"]
    assert a["id"] == "a" and "items" not in a and "children" not in a
    assert each["items"]["total"] == 30 and each["items"]["next"] == "24"
    assert each["items"]["by_status"] == {"succeeded": 29, "failed": 1}
    first = each["items"]["page"][0]
    assert first["index"] == 0 and first["status"] == "succeeded"
    assert first["steps"][0]["id"] == "each[0].send"
    assert first["steps"][0]["output"] == {"at": "each[0].send"}
    assert [(s["id"], s["scope"]) for s in route["children"]] == [("route.paths[0].x", "paths[0]")]

    nxt = c.get(f"/api/v1/runs/{run['id']}/steps/each/items", params={"cursor": "24"}).json()
    assert [i["index"] for i in nxt["items"]] == list(range(25, 30))
    assert nxt["items"][-1]["status"] == "failed" and nxt["next"] is None
    assert nxt["loop"] == "each" and nxt["total"] == 30
    small = c.get(f"/api/v1/runs/{run['id']}/steps/each/items?limit=2").json()
    assert [i["index"] for i in small["items"]] == [0, 1] and small["next"] == "1"
    assert c.get(f"/api/v1/runs/{run['id']}/steps/each%5B0%5D.send/items").status_code == 404


@pytest.mark.parametrize(
    "query",
    ["cursor=x", "cursor=-1", "cursor=1e3", "limit=0", "limit=201", "limit=a", "cursor=99999999999"],
)
def test_bad_item_pages_are_400(srv, query):
    c, run = _ran(srv, "bea@example.com")
    _flow(srv.state.store, run["id"], "each", 1, "for_each")
    r = c.get(f"/api/v1/runs/{run['id']}/steps/each/items?{query}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text


def test_bad_items_limit_is_400_and_other_users_runs_404(srv):
    c, run = _ran(srv, "cat@example.com")
    _flow(srv.state.store, run["id"], "each", 1, "for_each")
    assert c.get(f"/api/v1/runs/{run['id']}?items_limit=0").status_code == 400
    other, _ = _ran(srv, "dan@example.com")
    assert other.get(f"/api/v1/runs/{run['id']}").status_code == 404
    assert other.get(f"/api/v1/runs/{run['id']}/steps/each/items").status_code == 404
    assert c.get("/api/v1/runs/run_nope/steps/each/items").status_code == 404


LOOP = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "each", "type": "for_each", "items": "{{ trigger.orders }}",
            "steps": [{
                "id": "route", "type": "branch",
                "paths": [{"name": "big", "if": "{{ item.total > 100 }}", "steps": [
                    {"id": "big", "connector": "core", "action": "transform",
                     "payload": {"value": "{{ item.id }}"}}]}],
                "default": [{"id": "small", "connector": "core", "action": "transform",
                             "payload": {"value": "{{ item.id }}"}}],
            }],
        },
        {"id": "done", "connector": "core", "action": "transform", "payload": {"value": 1}},
    ],
}  # fmt: skip


def test_a_real_flow_run_reads_as_a_tree(srv):
    _, key = srv.user_with_key("eve@example.com")
    c = srv.client(key)
    pid = c.post("/api/v1/pipelines", json={"pipeline": LOOP}).json()["id"]
    orders = [{"id": f"o{i}", "total": 50 * i} for i in range(30)]
    r = c.post("/api/v1/run?wait=20", json={"pipeline_id": pid, "input": {"orders": orders}})
    run = r.json()
    assert run["status"] == "succeeded", r.text
    each, done = run["steps"]
    assert (each["id"], each["connector"], each["action"]) == ("each", "flow", "for_each")
    assert done["id"] == "done" and done["status"] == "succeeded"
    assert each["items"]["total"] == 30 and each["items"]["by_status"] == {"succeeded": 30}
    assert len(each["items"]["page"]) == 20 and each["items"]["next"] == "19"
    item3 = each["items"]["page"][3]
    (route,) = item3["steps"]
    assert route["id"] == "each[3].route" and route["output"]["path"] == 0
    (big,) = route["children"]
    assert (big["id"], big["scope"], big["output"]) == ("each[3].route.paths[0].big", "paths[0]",
                                                        {"value": "o3"})  # fmt: skip
    (small,) = each["items"]["page"][1]["steps"][0]["children"]
    assert (small["id"], small["scope"]) == ("each[1].route.default.small", "default")
    rest = c.get(f"/api/v1/runs/{run['id']}/steps/each/items?cursor=19").json()
    assert [i["index"] for i in rest["items"]] == list(range(20, 30)) and rest["next"] is None
