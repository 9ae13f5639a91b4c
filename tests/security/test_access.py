"""Access control: every route's scope, and cross-user access to every route that takes an id
(with another user's API key and with their Supabase JWT): 404/403 and nothing changes."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

SUPA = "https://proj.supabase.example"
SECRET = "cross-user-test-secret-with-32-plus-characters"
#: the reviewed public routes: each declares ``public(reason)`` on its view; adding one to the
#: app without adding it here (after review) fails the inventory
REVIEWED_PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ops/uptime"),
    ("GET", "/metrics"),  # LEVQOR_METRICS_TOKEN when set
    ("GET", "/api/v1/ops/health"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/marketplace"),
    ("POST", "/api/v1/errors"),
    ("POST", "/api/v1/support"),
    ("GET", "/api/v1/errors/health"),
    ("GET", "/api/v1/support/health"),
    ("POST", "/hooks/<token>"),
    # app triggers' deliveries: the unguessable per-registration token, or (connector-wide) the
    # connector's check of the app's signature; GET for the apps' URL handshakes
    ("POST", "/hooks/triggers/<token>"),
    ("GET", "/hooks/triggers/<token>"),
    ("POST", "/hooks/apps/<connector>"),
    ("GET", "/hooks/apps/<connector>"),
    # an approval's signed one-time links: the HMAC over run, step, wait nonce and decision is
    # the credential; the GET only shows a confirmation form (mail scanners fetch links)
    ("GET", "/resume/<run_id>/<decision>"),
    ("POST", "/resume/<run_id>/<decision>"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/auth/link/<token>"),
    ("POST", "/api/v1/billing/webhook"),
    ("GET", "/dashboard/static/<path:filename>"),
    ("GET", "/dashboard/static/levqor-stripe/<path:filename>"),  # the billing page's module
    ("GET", "/static/<path:filename>"),  # Flask's own static folder
    *(
        ("GET", rule)
        for rule in (
            "/",
            "/signin",
            "/pipelines/new",
            "/pipelines/<pipeline_id>",
            "/runs",
            "/runs/<run_id>",
            "/credentials",
            "/usage",
            "/billing",
            "/referrals",
            "/marketplace",
        )
    ),
}
#: routes for any signed-in caller whatever its scopes: reads of the caller's own account
SIGNED_IN = {("GET", "/api/v1/me"), ("GET", "/api/v1/referrals"), ("GET", "/api/v1/billing")}


def jwt_for(sub: str, email: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "sub": sub,
            "email": email,
            "aud": "authenticated",
            "iss": f"{SUPA}/auth/v1",
            "iat": now,
            "exp": now + 600,
        },
        SECRET,
        algorithm="HS256",
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    app = make_app(
        tmp_path_factory.mktemp("access"),
        env={"SUPABASE_URL": SUPA, "SUPABASE_JWT_SECRET": SECRET, "LEVQOR_JWT_ALGORITHMS": "HS256"},
    )
    s = LiveServer(app)
    yield s
    s.stop()


def rules(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule, app.view_functions[rule.endpoint]


def declared(app, rule):
    """The access the route carries on its view (``levqor_kernel.access``)."""
    from levqor_host.web.access import route_access

    with app.app_context():
        return route_access(rule.endpoint)


def fill(rule) -> str:
    def sub(m):
        conv = m.group(1) or ""
        return "1" if conv.startswith("int") else "x_does_not_exist"

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", sub, rule.rule)


def openapi_op(doc, method, rule):
    path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
    return doc["paths"].get(path, {}).get(method.lower())


def test_every_route_declares_its_access_and_the_document_agrees(srv):
    """The inventory reads what each route carries (host and plugin routes alike): a scope, a
    session, a signed-in read of one's own account, or a reviewed public declaration."""
    from levqor_host.web.openapi import openapi_document

    doc = openapi_document(srv.app)
    undeclared, public, signed_in, problems = [], set(), set(), []
    for method, rule, _view in rules(srv.app):
        access = declared(srv.app, rule)
        if access is None:
            undeclared.append((method, rule.rule))
            continue
        op = openapi_op(doc, method, rule)
        if access.kind == "public":
            public.add((method, rule.rule))
            assert access.reason and len(access.reason) > 10, (method, rule.rule)
            if op is not None and op.get("security") != []:
                problems.append((method, rule.rule, "public but documented with credentials"))
        elif access.kind == "signed_in":
            signed_in.add((method, rule.rule))
        elif access.kind == "scope":
            if op is not None and op.get("x-levqor-scope") != access.scope:
                problems.append((method, rule.rule, access.scope, op.get("x-levqor-scope")))
        if access.kind != "public" and op is not None and op.get("security") == []:
            problems.append((method, rule.rule, "documented public but needs credentials"))
    assert undeclared == [], "routes without an access declaration"
    assert public == REVIEWED_PUBLIC, {
        "public, not reviewed": public - REVIEWED_PUBLIC,
        "reviewed, not public": REVIEWED_PUBLIC - public,
    }
    # any scope will do only for reading one's own account: never for a change
    assert signed_in == SIGNED_IN
    assert problems == []


def test_every_route_not_declared_public_needs_credentials(srv):
    anon = srv.client()
    open_routes = []
    for method, rule, _view in rules(srv.app):
        if declared(srv.app, rule).kind == "public":
            continue
        r = anon.request(method, fill(rule), json={})
        if r.status_code != 401:
            open_routes.append((method, rule.rule, r.status_code))
    assert open_routes == [], "routes answering without credentials and not declared public"
    assert anon.post("/api/v1/auth/logout").status_code == 401


def test_a_key_without_the_scope_gets_403_naming_it_on_every_route(srv):
    _, nothing = srv.user_with_key("noscope@example.com", scopes=["__none__"])
    c = srv.client(nothing)
    checked = 0
    for method, rule, _view in rules(srv.app):
        access = declared(srv.app, rule)
        if access.kind == "public":
            continue
        r = c.request(method, fill(rule), json={})
        if access.kind == "signed_in":  # any signed-in caller
            assert r.status_code != 403, (method, rule.rule, r.text)
            continue
        assert r.status_code == 403, (method, rule.rule, r.status_code, r.text)
        err = r.json()["error"]
        if access.kind == "session":
            assert err["code"] == "session_required", (method, rule.rule)
            continue
        assert err["code"] == "insufficient_scope" and access.scope in err["message"]
        assert err["details"] == {"required_scope": access.scope}
        checked += 1
    assert checked >= 15
    # each scope alone opens exactly its own routes
    _, reader = srv.user_with_key("reader@example.com", scopes=["pipelines:read"])
    rc = srv.client(reader)
    assert rc.get("/api/v1/pipelines").status_code == 200
    r = rc.post("/api/v1/pipelines", json={})
    assert r.status_code == 403 and "pipelines:write" in r.json()["error"]["message"]


def test_a_referral_claim_needs_the_billing_scope_and_never_names_the_referrer(srv):
    from levqor_host.store.tables import events, referrals
    from sqlalchemy import func, select

    def counts():
        with srv.state.store.read() as conn:
            return (
                conn.execute(select(func.count()).select_from(referrals)).scalar_one(),
                conn.execute(select(func.count()).select_from(events)).scalar_one(),
            )

    referrer, _ = srv.user_with_key("referrer@example.com")
    new, reader = srv.user_with_key("referred@example.com", scopes=["pipelines:read"])
    before = counts()
    r = srv.client(reader).post("/api/v1/referrals/claim", json={"code": referrer["referral_code"]})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["details"] == {"required_scope": "billing"}
    assert referrer["id"] not in r.text
    assert counts() == before  # nothing written

    _, billing = srv.user_with_key("referred2@example.com", scopes=["billing"])
    r = srv.client(billing).post(
        "/api/v1/referrals/claim", json={"code": referrer["referral_code"]}
    )
    assert r.status_code == 201, r.text
    assert referrer["id"] not in r.text
    assert r.json()["referral"]["code"] == referrer["referral_code"]


def test_a_plugin_route_is_enforced_by_its_declaration_and_closed_without_one(tmp_path):
    from flask import Blueprint, jsonify
    from levqor_host.web.access import undeclared_routes
    from levqor_kernel import hookimpl
    from levqor_kernel.access import requires

    class Routes:
        @hookimpl
        def register_blueprints(self, app, state):
            bp = Blueprint("access_test", __name__, url_prefix="/api/v1/x")

            @bp.post("/declared")
            @requires("billing")
            def declared_view():  # no check of its own: the declaration is enforced
                return jsonify({"ok": True})

            @bp.get("/forgotten")
            def forgotten():
                return jsonify({"secret": "data"})

            app.register_blueprint(bp)

    s = LiveServer(make_app(tmp_path, plugins=[("access_test", Routes())], start_workers=False))
    try:
        assert undeclared_routes(s.app) == ["GET /api/v1/x/forgotten"]
        _, reader = s.user_with_key("r@example.com", scopes=["pipelines:read"])
        _, payer = s.user_with_key("p@example.com", scopes=["billing"])
        assert s.client().post("/api/v1/x/declared").status_code == 401
        r = s.client(reader).post("/api/v1/x/declared")
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        assert s.client(payer).post("/api/v1/x/declared").json() == {"ok": True}
        for who in (s.client(), s.client(payer)):
            r = who.get("/api/v1/x/forgotten")
            assert r.status_code == 500 and "data" not in r.text
            assert r.json()["error"]["code"] == "access_undeclared"
    finally:
        s.stop()


def _doc():
    return {
        "levqor": 1,
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "a",
                "connector": "core",
                "action": "transform",
                "payload": {"value": "{{ trigger.x }}"},
            }
        ],
    }


def _snapshot(c, pid, cid, rid):
    return {
        "pipeline": c.get(f"/api/v1/pipelines/{pid}").json(),
        "versions": c.get(f"/api/v1/pipelines/{pid}/versions").json(),
        "credentials": c.get("/api/v1/credentials").json(),
        "run": c.get(f"/api/v1/runs/{rid}").json(),
        "runs": c.get("/api/v1/runs").json(),
        "cred_ids": [x["id"] for x in c.get("/api/v1/credentials").json()["items"]] + [cid],
    }


def test_cross_user_access_to_every_id_route_fails_and_changes_nothing(srv):
    _, akey = srv.user_with_key("alice@example.com")
    a = srv.client(akey)
    p = a.post("/api/v1/pipelines", json={"name": "alice", "pipeline": _doc()}).json()
    pid = p["id"]
    assert a.post(f"/api/v1/pipelines/{pid}/webhook-secret").status_code == 200
    cred = a.post(
        "/api/v1/credentials",
        json={
            "name": "tg",
            "connector": "telegram",
            "values": {"bot_token": "123456789:" + "B" * 35},
        },
    )
    assert cred.status_code == 201, cred.text
    cid = cred.json()["id"]
    r = a.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"x": 1}})
    rid = r.json()["id"]
    before = _snapshot(a, pid, cid, rid)

    _, bkey = srv.user_with_key("bob@example.com")
    attackers = {"key": srv.client(bkey), "jwt": srv.client(jwt_for("bob-sub", "bob@example.com"))}
    ids = {"pipeline_id": pid, "cred_id": cid, "run_id": rid, "version": "1", "token": "x",
           "step_id": "a", "loop": "a", "connector": "telegram", "action": "send_message",
           "field": "chat_id"}
    bodies = {
        ("PUT", "/api/v1/pipelines/<pipeline_id>"): {"pipeline": _doc(), "name": "pwned"},
        ("PUT", "/api/v1/pipelines/<pipeline_id>/pinned/<step_id>"): {"output": {"x": 1}},
        ("POST", "/api/v1/pipelines/<pipeline_id>/steps/<step_id>/test"): {"trigger": {"x": 2}},
        ("POST", "/api/v1/connectors/<connector>/actions/<action>/options/<field>"): {"credential": "tg"},
    }
    covered = set()
    for who, b in attackers.items():
        assert b.get("/api/v1/me").status_code == 200, who
        for method, rule, _view in rules(srv.app):
            if "<" not in rule.rule or declared(srv.app, rule).kind == "public":
                continue
            url = re.sub(
                r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", lambda m: str(ids[m.group(1)]), rule.rule
            )
            r = b.request(method, url, json=bodies.get((method, rule.rule), {}))
            assert r.status_code in (403, 404), (who, method, url, r.status_code, r.text)
            assert pid not in r.text.replace(url, "") and "whsec_" not in r.text
            covered.add((method, rule.rule))
        # id-bearing bodies and queries too
        r = b.post("/api/v1/run", json={"pipeline_id": pid})
        assert r.status_code == 404
        assert b.get(f"/api/v1/runs?pipeline_id={pid}").json()["items"] == []
    assert {
        ("GET", "/api/v1/pipelines/<pipeline_id>"),
        ("DELETE", "/api/v1/credentials/<cred_id>"),
        ("POST", "/api/v1/runs/<run_id>/retry"),
        ("POST", "/api/v1/pipelines/<pipeline_id>/enable"),
        ("POST", "/api/v1/pipelines/<pipeline_id>/disable"),
        ("POST", "/api/v1/pipelines/<pipeline_id>/trigger/test"),
    } <= covered
    after = _snapshot(a, pid, cid, rid)
    assert after == before
    assert a.get(f"/api/v1/pipelines/{pid}").json()["has_webhook_secret"] is True
