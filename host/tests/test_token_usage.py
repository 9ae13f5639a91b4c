"""Token usage of metered steps over real HTTP: recorded per step row, shown per step and per
run by the runs API, summed per day in the usage charts (with billing off too), and priced at
the connector's rates (``LEVQOR_MODEL_RATES`` overriding them) on top of the catalog price
when billing is on; migration 0010 up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from alembic import command
from e2e_support import LiveServer, make_app
from levqor_host.config import Config
from levqor_host.store import Store, alembic_config
from levqor_kernel import hookimpl
from levqor_kernel.recording import StepRecord
from levqor_kernel.runner import RunResult
from sqlalchemy import inspect, select, text

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

PRICE = 1
#: credits per million tokens
RATES = {"small": {"input": 1000, "output": 2000}, "*": {"input": 10000, "output": 10000}}


class Model:
    """A metered test connector: ``model.ask`` answers with the tokens its payload names (the
    way a model server reports them) and costs 1 credit plus its tokens at :data:`RATES`;
    ``model.agent_turn`` drives agent steps."""

    @hookimpl
    def describe_schema(self):
        usage = {"type": "object"}
        ask = {
            "title": "Ask", "price": PRICE, "usage": "tokens", "writes": False,
            "payload": {"type": "object", "properties": {
                "model": {"type": "string"}, "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"}}},
            "output": {"type": "object", "properties": {"text": {"type": "string"}, "usage": usage}},
            "example": {"model": "small"},
        }  # fmt: skip
        return [{
            "name": "model", "title": "Model", "description": "test model connector",
            "credentials_required": False, "rates": RATES,
            "agent": {"action": "agent_turn"},
            "actions": {"ask": ask, "agent_turn": {**ask, "title": "Turn", "hidden": True, "price": 3}},
        }]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"text": "ok", "usage": {
            "model": payload["model"], "input_tokens": payload["input_tokens"],
            "output_tokens": payload["output_tokens"]}}  # fmt: skip


def ask(sid, model, i, o):
    return {"id": sid, "connector": "model", "action": "ask",
            "payload": {"model": model, "input_tokens": i, "output_tokens": o}}  # fmt: skip


DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        ask("first", "small", 1200, 300),
        {"id": "each", "type": "for_each", "items": "{{ trigger.items }}", "steps": [
            ask("inner", "big", "{{ item }}", 10)]},
        {"id": "shape", "connector": "core", "action": "transform", "payload": {"value": 1}},
    ],
}  # fmt: skip
INPUT = {"items": [100, 200, 300]}
# first: 1200 x 1000 + 300 x 2000 = 1.8M millionths -> 2 credits; the loop's big model at "*":
# (600 + 30) x 10000 = 6.3M -> 7 credits (summed per step: 100+10, 200+10, 300+10 -> 2+3+4 = 9)
TOKENS_FIRST = 2
TOKENS_LOOP = 2 + 3 + 4


def serve(tmp_path, **env):
    return LiveServer(make_app(tmp_path, env=env, plugins=[("model", Model())]))


def settled(srv, run_id, timeout=10):
    """The run's settlement (usage_daily) is written once its settled_at is."""
    from levqor_host.store.tables import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with srv.state.store.read() as conn:
            if conn.execute(select(runs.c.settled_at).where(runs.c.id == run_id)).scalar():
                return
        time.sleep(0.05)
    raise AssertionError("run not settled in time")


def start(c, pid):
    r = c.post("/api/v1/run?wait=20", json={"pipeline_id": pid, "input": INPUT})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return r.json()


def test_usage_is_recorded_shown_and_charted_without_billing(tmp_path):
    srv = serve(tmp_path)  # no billing plugin configured: unlimited, nothing charged
    try:
        user, key = srv.user_with_key("ann@example.com")
        c = srv.client(key)
        pid = c.post("/api/v1/pipelines", json={"name": "m", "pipeline": DOC}).json()["id"]
        run = start(c, pid)
        settled(srv, run["id"])
        got = c.get(f"/api/v1/runs/{run['id']}").json()
        steps = {s["id"]: s for s in got["steps"]}
        assert steps["first"]["usage"] == {
            "model": "small", "input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500}
        assert steps["shape"]["usage"] is None and steps["each"]["usage"] is None
        inner = [i["steps"][0]["usage"] for i in steps["each"]["items"]["page"]]
        assert inner == [{"model": "big", "input_tokens": n, "output_tokens": 10,
                          "total_tokens": n + 10} for n in (100, 200, 300)]  # fmt: skip
        assert got["usage"] == {
            "input_tokens": 1800, "output_tokens": 330, "total_tokens": 2130,
            "by_model": {"small": {"input_tokens": 1200, "output_tokens": 300},
                         "big": {"input_tokens": 600, "output_tokens": 30}},
        }  # fmt: skip
        # the loop's items are counted even when the page shows fewer of them
        assert c.get(f"/api/v1/runs/{run['id']}?items_limit=1").json()["usage"] == got["usage"]
        listed = c.get("/api/v1/runs").json()["items"]
        assert [r["usage"]["total_tokens"] for r in listed] == [2130]
        page = c.get(f"/api/v1/runs/{run['id']}/steps/each/items").json()
        assert [i["steps"][0]["usage"]["input_tokens"] for i in page["items"]] == [100, 200, 300]

        start(c, pid)
        dash = c.get("/api/v1/analytics/dashboard?days=3").json()["usage"]
        today = dash["series"][-1]
        assert (today["input_tokens"], today["output_tokens"], today["tokens"]) == (3600, 660, 4260)
        assert dash["series"][0]["tokens"] == 0
        assert (dash["totals"]["input_tokens"], dash["totals"]["tokens"]) == (3600, 4260)
        assert today["credits"] == 0 and srv.state.ledger.lines(user["id"]) == []
    finally:
        srv.stop()


LOCAL = {"LEVQOR_BILLING": "local", "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}'}


def _charged(srv, c, user):
    pid = c.post("/api/v1/pipelines", json={"name": "m", "pipeline": DOC}).json()["id"]
    srv.state.ledger.grant(user["id"], 100)
    run = start(c, pid)
    settled(srv, run["id"])
    return 100 - srv.state.ledger.balance(user["id"]), run


def test_a_metered_step_costs_its_price_plus_its_tokens_at_the_connectors_rates(tmp_path):
    pytest.importorskip("levqor_stripe")
    srv = serve(tmp_path, **LOCAL)
    try:
        user, key = srv.user_with_key("pro@example.com", plan="pro")
        c = srv.client(key)
        spent, run = _charged(srv, c, user)
        # reserved: the two metered steps once (2); settled: four calls (4) and their tokens
        assert spent == 4 * PRICE + TOKENS_FIRST + TOKENS_LOOP
        lines = srv.state.ledger.lines(user["id"])
        assert sorted(x["delta"] for x in lines if x["reason"] == "run") == [-(spent - 2), -2]
        today = c.get("/api/v1/analytics/dashboard?days=1").json()["usage"]["series"][-1]
        assert today["credits"] == spent and today["tokens"] == 2130
    finally:
        srv.stop()


def test_a_run_resumed_after_an_approval_is_charged_for_the_tokens_of_both_parts(tmp_path):
    """The settlement of a resumed run reads its steps back (the tokens come from the rows),
    with the last step's row, which is written in the settlement's own transaction."""
    pytest.importorskip("levqor_stripe")
    srv = serve(tmp_path, **LOCAL)
    try:
        user, key = srv.user_with_key("pro@example.com", plan="pro")
        c = srv.client(key)
        doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
            ask("before", "small", 1200, 300),
            {"id": "ok", "type": "wait", "approval": {"message": "go on?"}},
            ask("after", "small", 1200, 300)]}  # fmt: skip
        pid = c.post("/api/v1/pipelines", json={"name": "m", "pipeline": doc}).json()["id"]
        srv.state.ledger.grant(user["id"], 100)
        r = c.post("/api/v1/run?wait=20", json={"pipeline_id": pid})
        assert r.json()["status"] == "waiting", r.text
        rid = r.json()["id"]
        assert c.post(f"/api/v1/runs/{rid}/approve", json={}).status_code == 200
        run = srv.state.runs.wait(user["id"], rid, 20)
        assert run["status"] == "succeeded"
        settled(srv, rid)
        assert 100 - srv.state.ledger.balance(user["id"]) == 2 * PRICE + 2 * TOKENS_FIRST
        assert c.get(f"/api/v1/runs/{rid}").json()["usage"]["total_tokens"] == 3000
        assert c.get("/api/v1/analytics/dashboard?days=1").json()["usage"]["totals"]["tokens"] == 3000
    finally:
        srv.stop()


def test_a_models_dated_snapshot_takes_its_models_rate(tmp_path):
    srv = serve(tmp_path, start_workers=False)
    try:
        ledger = srv.state.ledger
        use = {"model": "small", "input_tokens": 1200, "output_tokens": 300}
        priced = [
            ledger.token_price({"connector": "model", "usage": {**use, "model": m}})
            for m in ("small", "small-2024-07-18", "small-0613", "small-preview", "smaller")
        ]
        # the dated snapshots at small's rate (2), other names at "*" (15 000 x 10 000 -> 15)
        assert priced == [2, 2, 2, 15, 15]
    finally:
        srv.stop()


def test_the_operators_model_rates_override_the_connectors(tmp_path):
    pytest.importorskip("levqor_stripe")
    rates = '{"small": {"input": 0, "output": 0}, "big": {"input": 20000, "output": 0}}'
    srv = serve(tmp_path, LEVQOR_MODEL_RATES=rates, **LOCAL)
    try:
        user, key = srv.user_with_key("pro@example.com", plan="pro")
        spent, _run = _charged(srv, srv.client(key), user)
        # small is free now; big: 100, 200, 300 input tokens x 20000 -> 2 + 4 + 6 credits
        assert spent == 4 * PRICE + 0 + (2 + 4 + 6)
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "must be JSON"),
        ("[1]", "must be a JSON object"),
        ('{"gpt": {"input": 1}}', "'gpt' must map to input and output"),
        ('{"gpt": {"input": -1, "output": 2}}', "gpt.input must be a number of 0 or more"),
        ('{"gpt": {"input": "1", "output": 2}}', "gpt.input must be a number"),
    ],
)
def test_a_bad_model_rates_setting_stops_start_up_naming_it(raw, says):
    with pytest.raises(ValueError, match="LEVQOR_MODEL_RATES") as e:
        Config.from_env({"LEVQOR_MODEL_RATES": raw})
    assert says in str(e.value)


def test_an_agents_turns_are_priced_by_tokens_and_its_tool_calls_at_their_price(tmp_path):
    """The reservation counts an agent step as one turn; the settlement prices each turn
    (``agent.turns[i]``) at its action's price plus its tokens and each tool call
    (``agent.turns[i].calls[j]``) at its action's price."""
    srv = serve(tmp_path, start_workers=False)
    try:
        agent = {"id": "helper", "type": "agent", "connector": "model", "model": "small",
                 "goal": "g", "tools": [{"connector": "model", "action": "ask"}]}  # fmt: skip
        doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [agent]}
        ledger = srv.state.ledger
        assert ledger.price(doc) == 3  # the turn action's catalog price
        use = {"model": "small", "input_tokens": 1000, "output_tokens": 500}  # 1 + 1 -> 2
        result = RunResult("succeeded", records=[
            StepRecord("helper", 0, "flow", "agent", "succeeded", 1),
            StepRecord("helper.turns[0]", 0, "model", "agent_turn", "succeeded", 1, usage=use),
            StepRecord("helper.turns[0].calls[0]", 0, "model", "ask", "succeeded", 1),
            StepRecord("helper.turns[1]", 0, "model", "agent_turn", "succeeded", 1, usage=use),
        ])  # fmt: skip
        cost = ledger.cost({"id": "run_x", "user_id": "u", "created_at": "now"}, result, doc)
        assert cost.cost == (3 + 2) + PRICE + (3 + 2)
        assert (cost.input_tokens, cost.output_tokens) == (2000, 1000)
    finally:
        srv.stop()


# --------------------------------------------------------------------------- migration 0010
def _migrate(store: Store, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_migration_0010_adds_token_columns_and_goes_down_again(request, tmp_path, vault, make_store, backend):
    url = (
        f"sqlite:///{tmp_path / 'levqor.db'}" if backend == "sqlite"
        else request.getfixturevalue("pg_database_url")
    )  # fmt: skip
    s = make_store(url, vault)
    _migrate(s, "0009")
    with s.write() as conn:
        conn.execute(text(
            "INSERT INTO users (id, email, plan, is_admin, referral_code, created_at) "
            "VALUES ('usr_1', 'a@example.com', 'free', false, 'ABCDEFGH', CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO usage_daily (user_id, day, jobs, steps, credits, cost_saving_minutes) "
            "VALUES ('usr_1', '2026-12-01', 1, 2, 3, 4)"))  # fmt: skip
    s.upgrade()
    steps = {c["name"] for c in inspect(s.engine).get_columns("run_steps")}
    assert {"model", "input_tokens", "output_tokens"} <= steps
    with s.read() as conn:
        row = conn.execute(text("SELECT input_tokens, output_tokens FROM usage_daily")).one()
    assert tuple(row) == (0, 0)
    _migrate(s, "0009", down=True)
    assert "model" not in {c["name"] for c in inspect(s.engine).get_columns("run_steps")}
    assert "input_tokens" not in {c["name"] for c in inspect(s.engine).get_columns("usage_daily")}
    s.upgrade()
    assert s.is_migrated()


# --------------------------------------------------------------------------- an agent's records
@pytest.mark.parametrize(
    ("path", "parent", "scope", "loop", "item"),
    [
        ("helper.turns[0]", "helper", "turns", None, None),
        ("helper.turns[0].calls[1]", "helper.turns[0]", "calls", None, None),
        ("helper.turns[0].calls[1].approval", "helper.turns[0].calls[1]", "approval", None, None),
        ("each[2].helper.turns[3]", "each[2].helper", "turns", "each", 2),
        ("route.paths[1].helper.turns[0]", "route.paths[1].helper", "turns", None, None),
    ],
)
def test_an_agents_turns_and_calls_sit_under_it(path, parent, scope, loop, item):
    from levqor_host.store.step_paths import StepPath, parse_path

    assert parse_path(path) == StepPath(path, parent, scope, loop, item)


def test_the_run_tree_nests_an_agents_turns_and_calls_with_their_usage(store: Store):
    user = store.users.create("a@example.com")
    p = store.pipelines.create(user["id"], "p", {"levqor": 1, "trigger": {"type": "manual"}, "steps": []})
    run, _ = store.runs.create(user["id"], p["id"], 1, {})
    use = {"model": "small", "input_tokens": 7, "output_tokens": 3}
    rows = [
        ("helper", "flow", "agent", None),
        ("helper.turns[0]", "model", "agent_turn", use),
        ("helper.turns[0].calls[0]", "model", "ask", None),
        ("helper.turns[1]", "model", "agent_turn", use),
    ]
    store.steps.record_many([
        store.steps.row(run["id"], sid, position=0, connector=c, action=a, status="succeeded",
                        attempts=1, usage=u)
        for sid, c, a, u in rows
    ])  # fmt: skip
    (agent,) = store.steps.tree(run["id"])
    turns = agent["children"]
    assert [(t["step_id"], t["scope"]) for t in turns] == [
        ("helper.turns[0]", "turns"), ("helper.turns[1]", "turns")]
    assert [(c["step_id"], c["scope"]) for c in turns[0]["children"]] == [
        ("helper.turns[0].calls[0]", "calls")]
    assert turns[0]["usage"] == {**use, "total_tokens": 10}
    assert turns[0]["children"][0]["usage"] is None
    assert store.steps.usage([run["id"], "run_other"]) == {run["id"]: {
        "input_tokens": 14, "output_tokens": 6, "total_tokens": 20,
        "by_model": {"small": {"input_tokens": 14, "output_tokens": 6}}}}
