"""Access control: every route's scope, and cross-user access to every route that takes an id
(with another user's API key and with their Supabase JWT): 404/403 and nothing changes."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from e2e_support import LiveServer, make_app

SUPA = "https://proj.supabase.example"
SECRET = "cross-user-test-secret-with-32-plus-characters"
#: routes reachable without credentials (each one justified)
PUBLIC = {
    ("GET", "/health"),  # liveness
    ("GET", "/api/v1/openapi.json"),  # the public API description
    ("POST", "/hooks/<token>"),  # the unguessable token (and optional HMAC) is the credential
    ("POST", "/api/v1/auth/login"),  # sign-in itself
    ("GET", "/auth/link/<token>"),  # the one-time token is the credential
    ("POST", "/api/v1/auth/logout"),  # needs a session (checked in the view, 401 otherwise)
    ("POST", "/api/v1/billing/webhook"),  # Stripe's signature is the credential
    # dashboard shells: the same HTML for everyone, no data (the page's API calls are checked)
    ("GET", "/pipelines/<pipeline_id>"),
    ("GET", "/runs/<run_id>"),
    ("GET", "/dashboard/static/<path:filename>"),  # CSS, ES modules, vendored Chart.js
}


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
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule, app.view_functions[rule.endpoint]


def fill(rule) -> str:
    def sub(m):
        conv = m.group(1) or ""
        return "1" if conv.startswith("int") else "x_does_not_exist"

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", sub, rule.rule)


def documented_public(srv) -> set[tuple[str, str]]:
    """Operations the OpenAPI document declares public (``security: []``), in rule syntax."""
    from levqor_host.api.openapi import openapi_document

    with srv.app.app_context():
        doc = openapi_document(srv.state)
    out = set()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and op.get("security") == []:
                out.add((method.upper(), path))
    return out


def test_every_route_is_public_by_decision_or_needs_credentials(srv):
    """Behavioural, so plugin routes (which cannot import the host's decorator) count too. A
    route may answer anonymously only when listed in PUBLIC or documented with security: []."""
    anon = srv.client()
    declared = documented_public(srv)
    open_routes = []
    for method, rule, _view in rules(srv.app):
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        if (method, rule.rule) in PUBLIC or (method, path) in declared:
            continue
        r = anon.request(method, fill(rule), json={})
        if r.status_code != 401:
            open_routes.append((method, rule.rule, r.status_code))
    assert open_routes == [], "routes answering without credentials and not declared public"
    assert anon.post("/api/v1/auth/logout").status_code == 401


def test_a_key_without_the_scope_gets_403_naming_it_on_every_route(srv):
    from levqor_host.api.openapi import openapi_document

    with srv.app.app_context():
        doc = openapi_document(srv.state)
    _, nothing = srv.user_with_key("noscope@example.com", scopes=["__none__"])
    c = srv.client(nothing)
    checked = 0
    declared = documented_public(srv)
    for method, rule, view in rules(srv.app):
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        if (method, rule.rule) in PUBLIC or (method, path) in declared:
            continue
        op = doc["paths"].get(path, {}).get(method.lower())
        if hasattr(view, "levqor_scope"):
            scope = view.levqor_scope
        else:  # a plugin route: its documented scope is what it must enforce
            assert op is not None, (method, rule.rule, "undocumented")
            scope = op.get("x-levqor-scope")
        r = c.request(method, fill(rule), json={})
        if scope is None:  # any signed-in caller
            assert r.status_code != 403, (method, rule.rule, r.text)
            continue
        assert r.status_code == 403, (method, rule.rule, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == "insufficient_scope" and scope in err["message"]
        assert err["details"] == {"required_scope": scope}
        # the documented scope is the enforced one
        if op is not None and "x-levqor-scope" in op:
            assert op["x-levqor-scope"] == scope, (method, rule.rule)
        checked += 1
    assert checked >= 15
    # each scope alone opens exactly its own routes
    _, reader = srv.user_with_key("reader@example.com", scopes=["pipelines:read"])
    rc = srv.client(reader)
    assert rc.get("/api/v1/pipelines").status_code == 200
    r = rc.post("/api/v1/pipelines", json={})
    assert r.status_code == 403 and "pipelines:write" in r.json()["error"]["message"]


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
    ids = {"pipeline_id": pid, "cred_id": cid, "run_id": rid, "version": "1", "token": "x"}
    bodies = {("PUT", "/api/v1/pipelines/<pipeline_id>"): {"pipeline": _doc(), "name": "pwned"}}
    covered = set()
    for who, b in attackers.items():
        assert b.get("/api/v1/me").status_code == 200, who
        for method, rule, _view in rules(srv.app):
            if "<" not in rule.rule or (method, rule.rule) in PUBLIC:
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
    } <= covered
    after = _snapshot(a, pid, cid, rid)
    assert after == before
    assert a.get(f"/api/v1/pipelines/{pid}").json()["has_webhook_secret"] is True
