"""SSRF: every user-supplied URL (levqor-http's url, every connector credential URL field) is
refused for loopback, private, link-local and metadata addresses in every spelling, for host
names resolving to them, and behind a redirect; a local listener proves nothing arrived."""

from __future__ import annotations

import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_support import LiveServer, make_app
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]


def private_hostname() -> str:
    """A host name other than a literal address that resolves to a non-public address here."""
    import ipaddress

    for name in ("localhost.localdomain", "ip6-localhost", socket.gethostname(), "localhost"):
        try:
            infos = socket.getaddrinfo(name, 80, 0, socket.SOCK_STREAM)
        except OSError:
            continue
        addrs = {ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}
        if addrs and all(not a.is_global for a in addrs):
            return name
    raise AssertionError("no host name resolves to a private address on this machine")


@pytest.fixture(scope="module")
def listener():
    with FakeServer() as srv:  # 127.0.0.1: the loopback victim
        srv.answer_all(Reply(200, {"ok": True, "ssrf": "reached"}))
        yield srv


@pytest.fixture(scope="module")
def redirector(listener):
    with FakeServer(host="127.0.0.2") as srv:  # allowed by the operator, redirects to the victim
        srv.answer_all(Reply(302, b"", {"Location": f"{listener.url}/latest/meta-data/"}))
        yield srv


def targets(port: int) -> dict[str, str]:
    return {
        "loopback": f"http://127.0.0.1:{port}",
        "localhost": f"http://localhost:{port}",
        "unspecified": f"http://0.0.0.0:{port}",
        "ten": f"http://10.0.0.1:{port}",
        "172-16": f"http://172.16.0.1:{port}",
        "192-168": f"http://192.168.0.1:{port}",
        "metadata": "http://169.254.169.254",
        "ipv6-loopback": f"http://[::1]:{port}",
        "ipv4-mapped": f"http://[::ffff:127.0.0.1]:{port}",
        "ipv4-mapped-hex": f"http://[::ffff:7f00:1]:{port}",
        "decimal": f"http://2130706433:{port}",
        "octal": f"http://0177.0.0.1:{port}",
        "hex": f"http://0x7f.0.0.1:{port}",
        "short": f"http://127.1:{port}",
        "private-hostname": f"http://{private_hostname()}:{port}",
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory, redirector):
    # the operator allows 127.0.0.2 (the redirector) only: the victim on 127.0.0.1 stays forbidden
    app = make_app(
        tmp_path_factory.mktemp("ssrf"), env={"LEVQOR_SSRF_ALLOW": "127.0.0.2/32"}, executor={"workers": 4}
    )
    s = LiveServer(app)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    _, key = srv.user_with_key("mallory@example.com")
    return srv.client(key)


def _pem() -> str:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def connector_cases(client) -> list[tuple[str, str, callable]]:
    """(connector, action, credential values for a URL) for every credential URL field."""
    catalog = {c["name"]: c for c in client.get("/api/v1/connectors").json()["connectors"]}
    pem = _pem()
    cases = [
        ("slack", "post_message", lambda u: {"webhook_url": u + "/services/T000/B000/XXXX"}),
        ("notion", "create_page", lambda u: {"token": "ntn_abcdefghijklmnop", "api_base": u}),
        ("gmail", "send_email", lambda u: {"resend_api_key": "re_abcdefghijklmnop", "api_base": u}),
        (
            "telegram",
            "send_message",
            lambda u: {"bot_token": "123456789:" + "A" * 35, "api_base": u},
        ),
        (
            "sheets",
            "append_rows",
            lambda u: {
                "type": "service_account",
                "client_email": "bot@p.iam",
                "private_key": pem,
                "token_uri": u + "/token",
                "api_base": u,
            },
        ),
    ]
    if "mcp" in catalog:  # levqor-mcp: an MCP server's streamable HTTP endpoint
        cases.append(
            ("mcp", "call_tool", lambda u: {"url": u + "/mcp", "token": "mcp-token-123456"})
        )
    if "openai" in catalog:  # a user's OpenAI-compatible server
        cases.append(
            ("openai", "chat", lambda u: {"api_key": "sk-abcdefghijklmnop", "base_url": u + "/v1"})
        )
    http_creds = (catalog.get("http") or {}).get("credentials") or {}
    if "api_base" in (http_creds.get("properties") or {}):
        cases.append(("http", "request", lambda u: {"api_base": u}))
    found = [c for c in cases if c[0] in catalog]
    assert {c[0] for c in found} >= {"slack", "notion", "gmail", "telegram", "sheets"}
    # every URL-ish credential field of every installed connector is covered
    for name, info in catalog.items():
        schema = info.get("credentials") or {}
        props = {}
        for branch in [schema, *schema.get("oneOf", [])]:
            props.update(branch.get("properties") or {})
        url_fields = {
            k
            for k, v in props.items()
            if v.get("format") == "uri" or "url" in k or k in ("api_base", "token_uri")
        }
        if url_fields:
            assert name in {c[0] for c in found}, (
                f"connector {name} has URL fields {url_fields}: add it here"
            )
    return found


def run(client, doc, cred_name=None):
    r = client.post("/api/v1/pipelines", json={"pipeline": doc})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/run?wait=30", json={"pipeline_id": r.json()["id"], "input": {}})
    assert r.status_code == 200, r.text
    return r.json()


def example(client, connector, action):
    catalog = {c["name"]: c for c in client.get("/api/v1/connectors").json()["connectors"]}
    return catalog[connector]["actions"][action]["example"]


def assert_blocked(result, listener):
    assert result["status"] == "failed", result
    assert listener.requests == [], [r.path for r in listener.requests]


def test_levqor_http_refuses_every_private_destination(client, listener, redirector):
    listener.reset()
    urls = {**targets(listener.port), "redirect": f"{redirector.url}/go"}
    docs = {}
    for name, url in urls.items():
        docs[name] = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "call",
                    "connector": "http",
                    "action": "request",
                    "payload": {"method": "GET", "url": url + "/latest/meta-data/"},
                }
            ],
        }
    for name, doc in docs.items():
        result = run(client, doc)
        assert_blocked(result, listener)
        step = result["steps"][0]
        assert step["status"] == "failed"
        text = str(step["error"]).lower()
        assert "public" in text or "blocked" in text, (name, step["error"])
    assert redirector.requests, (
        "the allowed first hop was reached (the redirect was what got refused)"
    )


def test_connector_url_credentials_refuse_private_destinations(client, listener, redirector):
    listener.reset()
    cases = connector_cases(client)
    urls = {**targets(listener.port), "redirect": f"{redirector.url}/go"}
    n = 0
    for connector, action, values in cases:
        for tname, url in urls.items():
            n += 1
            cname = f"{connector}-{n}"
            r = client.post(
                "/api/v1/credentials",
                json={"name": cname, "connector": connector, "values": values(url)},
            )
            if r.status_code == 422:  # refused at the door is fine too
                continue
            assert r.status_code == 201, (connector, tname, r.text)
            cred_id = r.json()["id"]
            # the credential check endpoint is a request too
            r = client.post(f"/api/v1/credentials/{cred_id}/test")
            assert r.status_code == 200 and r.json()["ok"] is not True, (connector, tname, r.text)
            doc = {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "s",
                        "connector": connector,
                        "action": action,
                        "credential": cname,
                        "payload": example(client, connector, action),
                    }
                ],
            }
            result = run(client, doc)
            assert_blocked(result, listener)
    assert listener.requests == []


def test_positive_control_the_listener_is_reachable_when_the_operator_allows_it(tmp_path, listener):
    """Proves the listener would have seen a request: the refusals above are the guard's doing."""
    listener.reset()
    s = LiveServer(make_app(tmp_path, env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"}))
    try:
        _, key = s.user_with_key("ops@example.com")
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "call",
                    "connector": "http",
                    "action": "request",
                    "payload": {"method": "GET", "url": f"{listener.url}/latest/meta-data/"},
                }
            ],
        }
        assert run(s.client(key), doc)["status"] == "succeeded"
        assert [r.path for r in listener.requests] == ["/latest/meta-data/"]
    finally:
        s.stop()


def test_a_slack_url_the_connector_refuses_is_not_stored(client):
    secret = "/services/T1/B1/neverstoredsecret"
    for url in (f"https://evil.example.com{secret}", f"http://hooks.slack.com{secret}"):
        r = client.post(
            "/api/v1/credentials",
            json={"name": "slack-bad", "connector": "slack", "values": {"webhook_url": url}},
        )
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_credentials" and "webhook_url" in err["message"]
        assert [p["pointer"] for p in err["details"]["problems"]] == ["/values/webhook_url"]
        assert "neverstoredsecret" not in r.text
    names = [c["name"] for c in client.get("/api/v1/credentials").json()["items"]]
    assert "slack-bad" not in names
    good = "https://hooks.slack.com/services/T1/B1/acceptedsecret"
    r = client.post(
        "/api/v1/credentials",
        json={"name": "slack-good", "connector": "slack", "values": {"webhook_url": good}},
    )
    assert r.status_code == 201, r.text
