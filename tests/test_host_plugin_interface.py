"""The host behind the kernel's typed face for plugins (levqor_kernel.host), with plugins:
its objects satisfy the protocols, a plugin's HttpError and InsufficientCredits are answered
like the host's own errors, and dashboard pages come from plugins (levqor-stripe's billing
page exists only with levqor-stripe)."""

from __future__ import annotations

import logging
import re

from e2e_support import LiveServer, make_app, stop_app
from flask import Blueprint
from levqor_kernel import hookimpl
from levqor_kernel.access import public
from levqor_kernel.host import (
    BillingTransaction,
    DashboardPage,
    Host,
    HostCommandGroup,
    HostConfig,
    HostStore,
    HttpError,
    InsufficientCredits,
    Ledger,
    PipelineCalls,
)
from levqor_kernel.host import RunGate as RunGateProtocol
from levqor_kernel.host import RunSettlement as RunSettlementProtocol


def test_the_hosts_objects_satisfy_the_kernels_protocols(tmp_path):
    from levqor_host.billing import ledger as host_ledger
    from levqor_host.cli import main
    from levqor_host.errors import ApiError

    app = make_app(tmp_path, start_workers=False)
    try:
        st = app.extensions["levqor"]
        assert isinstance(st, Host)
        assert isinstance(st.config, HostConfig) and isinstance(st.store, HostStore)
        assert isinstance(st.ledger, Ledger)
        assert isinstance(st.pipeline_calls, PipelineCalls)
        user = st.store.users.create("p@example.com", name="P")
        with st.ledger.transaction() as tx:
            assert isinstance(tx, BillingTransaction)
            locked = tx.lock_user(user["id"])
            assert isinstance(host_ledger.RunGate(tx, locked, "run_x", 0), RunGateProtocol)
            settle = host_ledger.RunSettlement(tx, user["id"], "run_x")
            assert isinstance(settle, RunSettlementProtocol)
        assert isinstance(main, HostCommandGroup)
        # one error type across the line: the host's are the kernel's
        assert issubclass(ApiError, HttpError)
        assert host_ledger.InsufficientCredits is InsufficientCredits
    finally:
        stop_app(app)


class ErrorsPlugin:
    """Routes that raise the kernel's errors, as a plugin's blueprint does."""

    @hookimpl
    def register_blueprints(self, app, state):
        bp = Blueprint("errors_plugin", __name__, url_prefix="/api/v1/errors-plugin")

        @bp.get("/conflict")
        @public("a test route")
        def conflict():
            raise HttpError(409, "conflict", "taken", {"id": "x"}, {"X-Why": "test"})

        @bp.get("/upstream")
        @public("a test route")
        def upstream():
            raise HttpError(502, "upstream_failed", "the upstream API failed")

        @bp.get("/credits")
        @public("a test route")
        def no_credits():
            raise InsufficientCredits(5, 2)

        app.register_blueprint(bp)


def test_a_plugins_errors_are_answered_like_the_hosts(tmp_path, caplog):
    from levqor_host.errors import ApiError
    from levqor_host.web.errors import render_http_error

    app = make_app(tmp_path, start_workers=False, plugins=[ErrorsPlugin()])
    srv = LiveServer(app)
    try:
        c = srv.client()
        r = c.get("/api/v1/errors-plugin/conflict")
        with app.test_request_context():
            own = render_http_error(ApiError(409, "conflict", "taken", {"id": "x"}, {"X-Why": "test"}))
        assert r.status_code == own.status_code == 409
        assert r.json() == own.get_json() == {
            "error": {"code": "conflict", "message": "taken", "details": {"id": "x"}}
        }
        assert r.headers["X-Why"] == "test"
        # a platform-side error (not the user's fault) is logged; the user's is not
        with caplog.at_level(logging.WARNING, logger="levqor.api"):
            r = c.get("/api/v1/errors-plugin/upstream")
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
        assert any("answered 502 upstream_failed" in m for m in caplog.messages)
        assert not any("answered 409" in m for m in caplog.messages)
        # a debit that fails in a route is the user's balance: 402, never a 500
        r = c.get("/api/v1/errors-plugin/credits")
        assert r.status_code == 402
        assert r.json()["error"] == {
            "code": "insufficient_credits",
            "message": "this needs 5 credits and the balance is 2",
            "details": {"needed": 5, "balance": 2},
        }
    finally:
        srv.stop()


def _nav(html: str) -> list[tuple[str, str]]:
    nav = html[html.index('<nav id="nav"') : html.index("</nav>")]
    return re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)


def test_without_levqor_stripe_there_is_no_billing_page(tmp_path):
    srv = LiveServer(
        make_app(tmp_path, env={"LEVQOR_DISABLE_PLUGINS": "levqor-stripe"}, start_workers=False)
    )
    try:
        c = srv.client()
        nav = _nav(c.get("/runs").text)
        assert ("/billing", "Billing") not in nav
        assert [label for _h, label in nav] == [
            "Pipelines", "Runs", "Credentials", "Usage", "Referrals", "Marketplace"
        ]
        assert c.get("/billing").status_code == 404
        assert c.get("/dashboard/static/levqor-stripe/billing.js").status_code == 404
        assert c.get("/api/v1/billing").status_code == 404
        assert "/billing" not in c.get("/api/v1/openapi.json").json()["paths"]
    finally:
        srv.stop()


def test_with_levqor_stripe_the_billing_page_is_its_own(tmp_path):
    srv = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        c = srv.client()
        r = c.get("/billing")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"]
        html = r.text
        assert '<script type="module" src="/dashboard/static/levqor-stripe/billing.js">' in html
        assert 'data-page="billing"' in html and 'id="billing"' in html
        assert '<a href="/billing" aria-current="page">Billing</a>' in html
        assert [label for _h, label in _nav(html)] == [
            "Pipelines", "Runs", "Credentials", "Usage", "Billing", "Referrals", "Marketplace"
        ]
        js = c.get("/dashboard/static/levqor-stripe/billing.js")
        assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
        assert "/billing" in c.get("/api/v1/openapi.json").json()["paths"]
    finally:
        srv.stop()


class PagesPlugin:
    """Two pages: one on a path the host serves already (skipped), one on a new path."""

    @hookimpl
    def register_blueprints(self, app, state):
        app.register_blueprint(
            Blueprint("pages_plugin", __name__, static_folder=".", static_url_path="/x-static")
        )

    @hookimpl
    def register_dashboard_pages(self):
        return [
            DashboardPage("runs_again", "/runs", "usage.html", "/x-static/a.js", "Runs again", "R"),
            DashboardPage("extra", "/extra", "usage.html", "/x-static/e.js", "Extra", "Extra", 15),
        ]


def test_a_plugin_page_on_a_taken_path_is_skipped_and_pages_follow_their_order(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="levqor.dashboard"):
        app = make_app(
            tmp_path,
            env={"LEVQOR_DISABLE_PLUGINS": "levqor-stripe"},
            start_workers=False,
            plugins=[PagesPlugin()],
        )
    srv = LiveServer(app)
    try:
        assert any("runs_again (/runs) skipped" in m for m in caplog.messages)
        c = srv.client()
        assert "Runs again" not in c.get("/runs").text
        html = c.get("/extra").text
        assert [label for _h, label in _nav(html)][:3] == ["Pipelines", "Extra", "Runs"]
        assert '<script type="module" src="/x-static/e.js">' in html
    finally:
        srv.stop()


class RaisingPlanner:
    """A planner that fails by raising: the kernel's HttpError, or anything else."""

    def __init__(self) -> None:
        self.error: Exception = HttpError(
            429, "upstream_busy", "the model is busy", {"retry_after": 2}, {"Retry-After": "2"}
        )

    @hookimpl
    def plan_pipeline(self, prompt, catalog, credentials, options):
        raise self.error


class LooksLikeAnHttpError(Exception):
    status, code, message = 404, "not_found", "a look-alike"


def test_a_planners_http_error_is_read_by_class(tmp_path):
    planner = RaisingPlanner()
    srv = LiveServer(
        make_app(
            tmp_path,
            env={"LEVQOR_DISABLE_PLUGINS": "openai,levqor-stripe"},
            plugins=[planner],
            start_workers=False,
        )
    )
    try:
        _, key = srv.user_with_key("plan@example.com")
        c = srv.client(key)
        r = c.post("/api/v1/plan", json={"prompt": "post new GitHub issues to Slack"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert r.json()["error"] == {
            "code": "upstream_busy",
            "message": "the planner failed: the model is busy",
            "details": {"retry_after": 2},
        }
        # an exception that only looks like one (status, code attributes) is a broken planner
        planner.error = LooksLikeAnHttpError("x")
        r = c.post("/api/v1/plan", json={"prompt": "post new GitHub issues to Slack"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "planner_failed"
    finally:
        srv.stop()


def _doc(name: str, trigger: dict, **extra) -> dict:
    step = {"id": "v", "connector": "core", "action": "transform", "payload": {"value": "{{ trigger.n }}"}}
    return {"levqor": 1, "name": name, "trigger": trigger, "steps": [step], **extra}


def test_pipeline_calls_offer_only_the_users_callable_pipelines_and_refuse_by_class(tmp_path):
    """The face the MCP server works through: API-key sign-in outside a request, the pipelines
    a client may start (manual or webhook, on, not archived), a call as a run with trigger
    ``mcp`` waited for, and every refusal an HttpError with its 4xx status."""
    app = make_app(tmp_path)
    try:
        st = app.extensions["levqor"]
        calls: PipelineCalls = st.pipeline_calls
        ada = st.store.users.create("ada@example.com")
        bob = st.store.users.create("bob@example.com")
        key, _ = st.store.api_keys.create(ada["id"], name="k", scopes=["runs:execute"])
        narrow, _ = st.store.api_keys.create(ada["id"], name="r", scopes=["pipelines:read"])
        assert calls.user_for_key(key, "runs:execute")["id"] == ada["id"]
        for bad, scope, status in ((key + "x", None, 401), ("nope", None, 401), (narrow, "runs:execute", 403)):
            try:
                calls.user_for_key(bad, scope)
            except HttpError as e:
                assert e.status == status
            else:
                raise AssertionError(f"{bad[:8]} was accepted")
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        pipes = st.store.pipelines
        manual = pipes.create(ada["id"], "Manual", _doc("Manual", {"type": "manual"}, input=schema, description="D"))
        hook = pipes.create(ada["id"], "Hook", _doc("Hook", {"type": "webhook"}))
        pipes.create(ada["id"], "Cron", _doc("Cron", {"type": "schedule", "cron": "0 3 * * *"}))
        off = pipes.create(ada["id"], "Off", _doc("Off", {"type": "manual"}))
        pipes.set_enabled(ada["id"], off["id"], False)
        gone = pipes.create(ada["id"], "Gone", _doc("Gone", {"type": "manual"}))
        pipes.archive(ada["id"], gone["id"])
        bobs = pipes.create(bob["id"], "Bobs", _doc("Bobs", {"type": "manual"}))
        listed = {p["id"]: p for p in calls.callable_pipelines(ada["id"])}
        assert set(listed) == {manual["id"], hook["id"]}
        assert listed[manual["id"]]["input"] == schema and listed[manual["id"]]["description"] == "D"
        assert listed[hook["id"]]["input"] is None and listed[hook["id"]]["trigger"] == "webhook"

        answer = calls.call_pipeline(ada, manual["id"], {"n": 4}, trigger="mcp", wait_seconds=30)
        assert answer["status"] == "succeeded" and answer["final"] and answer["output"] == {"value": 4}
        assert st.store.runs.get(ada["id"], answer["run_id"])["trigger"] == "mcp"
        assert calls.run_status(ada["id"], answer["run_id"])["output"] == {"value": 4}
        assert calls.run_status(bob["id"], answer["run_id"]) is None
        for pid, data, status in (
            (manual["id"], {"n": "four"}, 422),
            (bobs["id"], {}, 404),
            (off["id"], {}, 404),
            (gone["id"], {}, 404),
        ):
            try:
                calls.call_pipeline(ada, pid, data, trigger="mcp", wait_seconds=0)
            except HttpError as e:
                assert e.status == status, (pid, e.message)
            else:
                raise AssertionError(f"{pid} was called")
        assert [r["id"] for r in st.store.runs.list(ada["id"])[0]] == [answer["run_id"]]
    finally:
        stop_app(app)
