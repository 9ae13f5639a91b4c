"""Template sandbox escapes, secrets that must never leak, and webhook forgeries."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from levqor_kernel.errors import PermanentError
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

SECRET = "sk-planted-SECRET-7a6b5c4d3e2f1a0b"
TG_TOKEN = "987654321:PLANTEDtelegramTOKENabcdefghijklmnopq"


class Leaky:
    """A careless connector: it puts the credential in its error messages and its output."""

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "leaky",
                "title": "Leaky",
                "description": "test connector",
                "credentials": {
                    "type": "object",
                    "required": ["token"],
                    "properties": {"token": {"type": "string", "writeOnly": True}},
                },
                "actions": {
                    "fail": {
                        "title": "Fail",
                        "payload": {"type": "object"},
                        "output": {"type": "object"},
                        "example": {},
                    },
                    "echo": {
                        "title": "Echo",
                        "payload": {"type": "object"},
                        "output": {"type": "object"},
                        "example": {},
                    },
                },
            }
        ]

    @hookimpl
    def check_credentials(self, connector, credentials, context):
        raise PermanentError(f"token {credentials['token']} refused by upstream")

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        logging.getLogger("levqor.test.leaky").info("got payload %s", payload)
        if action == "fail":
            raise PermanentError(f"upstream said: bad token {credentials['token']}")
        return {"echo": f"using {credentials['token']}", "payload": payload}


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path, plugins=[("leaky", Leaky())], executor={"workers": 2}))
    yield s
    s.stop()


@pytest.fixture
def client(srv):
    _, key = srv.user_with_key("eve@example.com")
    return srv.client(key)


def create(client, doc):
    r = client.post("/api/v1/pipelines", json={"pipeline": doc})
    assert r.status_code in (201, 422), r.text
    return r


def run(client, pid, input=None):
    r = client.post("/api/v1/run?wait=20", json={"pipeline_id": pid, "input": input or {}})
    assert r.status_code == 200, r.text
    return r


# ---------------------------------------------------------------- templates
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__.__builtins__.open('MARKER', 'w').write('x') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ trigger.__class__.__init__.__globals__ }}",
    "{{ [].pop.__self__.__class__.__mro__ }}",
    "{{ config }}{{ request }}{{ environ }}{{ credentials }}{{ secrets }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ '%s' % 'x' * 100000000 }}",
    "{{ range(10**9) | list }}",
    "{% set x = [].__class__ %}{{ x.__base__ }}",
    "{{ 'abc'|attr('__class__')|attr('__mro__') }}",
    "{{ ''.format.__self__ }}",
]


def test_sandbox_escapes_in_pipeline_payloads_never_execute_nor_leak(client, tmp_path):
    marker = tmp_path / "pwned"
    assert (
        client.post(
            "/api/v1/credentials",
            json={"name": "k", "connector": "leaky", "values": {"token": SECRET}},
        ).status_code
        == 201
    )
    for payload in ESCAPES:
        payload = payload.replace("MARKER", str(marker))
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "t",
                    "connector": "core",
                    "action": "transform",
                    "payload": {"value": payload},
                },
                {
                    "id": "e",
                    "connector": "leaky",
                    "action": "echo",
                    "credential": "k",
                    "payload": {"v": payload},
                },
            ],
        }
        r = create(client, doc)
        texts = [r.text]
        if r.status_code == 201:
            res = run(client, r.json()["id"])
            texts.append(res.text)
            out = res.json()
            if out["status"] == "succeeded":  # rendered, but as harmless text
                value = out["steps"][0]["output"]["value"]
                assert "subclasses" not in str(value) and "<class" not in str(value), (
                    payload,
                    value,
                )
        assert not marker.exists(), payload
        for t in texts:
            assert SECRET not in t, payload
            assert (
                "__globals__" not in t
                or payload.replace('"', '\\"') in t
                or "__globals__" in payload
            )


def test_trigger_data_is_data_never_template_source(client, tmp_path):
    marker = tmp_path / "pwned-trigger"
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "t",
                "connector": "core",
                "action": "transform",
                "payload": {"value": {"name": "{{ trigger.name }}", "all": "{{ trigger }}"}},
            }
        ],
    }
    pid = create(client, doc).json()["id"]
    evil = {
        "name": "{{ 7 * 7 }}",
        "x": f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
        "y": "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    }
    out = run(client, pid, evil).json()
    assert out["status"] == "succeeded", out
    value = out["steps"][0]["output"]["value"]
    assert value["name"] == "{{ 7 * 7 }}"  # not 49
    assert "<class" not in json.dumps(value)
    assert not marker.exists()


# ---------------------------------------------------------------- secrets
def test_planted_secrets_never_appear_anywhere(srv, client, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    responses = []

    def keep(r):
        responses.append(r.text)
        return r

    with FakeServer() as tg:
        # a Telegram-compatible server that echoes the token back in its error, as real APIs do
        tg.route(
            "POST",
            r"/bot.*/sendMessage",
            lambda req: Reply(
                401, {"ok": False, "error_code": 401, "description": f"Unauthorized: {req.path}"}
            ),
        )
        keep(
            client.post(
                "/api/v1/credentials",
                json={"name": "k", "connector": "leaky", "values": {"token": SECRET}},
            )
        )
        keep(
            client.post(
                "/api/v1/credentials",
                json={
                    "name": "tg",
                    "connector": "telegram",
                    "values": {"bot_token": TG_TOKEN, "api_base": tg.url},
                },
            )
        )
        doc_fail = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "f",
                    "connector": "leaky",
                    "action": "fail",
                    "credential": "k",
                    "payload": {},
                }
            ],
        }
        doc_echo = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "e",
                    "connector": "leaky",
                    "action": "echo",
                    "credential": "k",
                    "payload": {"a": 1},
                }
            ],
        }
        doc_tg = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "m",
                    "connector": "telegram",
                    "action": "send_message",
                    "credential": "tg",
                    "payload": {"chat_id": "@levqor_alerts", "text": "hi"},
                }
            ],
        }
        for doc in (doc_fail, doc_echo, doc_tg):
            r = keep(create(client, doc))
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            rid = keep(run(client, pid)).json()["id"]
            keep(client.get(f"/api/v1/runs/{rid}"))
            keep(client.post(f"/api/v1/runs/{rid}/retry?wait=20"))
            keep(client.get(f"/api/v1/pipelines/{pid}"))
        assert tg.requests, "the Telegram fake was called (so its echo was a real test)"
        for c in keep(client.get("/api/v1/credentials")).json()["items"]:
            keep(client.post(f"/api/v1/credentials/{c['id']}/test"))
        keep(client.get("/api/v1/runs?limit=200"))
        # an invalid credential's values are not echoed in the validation error either
        keep(
            client.post(
                "/api/v1/credentials",
                json={"name": "bad", "connector": "telegram", "values": {"bot_token": SECRET}},
            )
        )
    leaks = [SECRET, TG_TOKEN, TG_TOKEN.split(":")[1]]
    for text in responses:
        for s in leaks:
            assert s not in text, (s, text[:500])
    for rec in caplog.records:
        line = rec.getMessage() + (str(rec.exc_info[1]) if rec.exc_info else "")
        for s in leaks:
            assert s not in line, (rec.name, line[:300])
    data = srv.state.config.data_dir
    for _ in range(100):  # the jobs.jsonl line follows the run's settlement
        if srv.state.config.jobs_log.exists():
            break
        time.sleep(0.02)
    written = [p for p in data.rglob("*") if p.is_file()]
    assert srv.state.config.jobs_log in written
    for path in written:
        blob = path.read_bytes()
        for s in leaks:
            assert s.encode() not in blob, (str(path), s)


def test_oauth_tokens_never_appear_anywhere(tmp_path, caplog):
    """Access and refresh tokens of a connected account (Connect, a refresh after a 401, a
    refused refresh token) never reach an API answer, a page, a log line or a file, even when
    the upstream echoes the refused token in its error."""
    from oauth_support import Acme, acme_fakes, connect, signed_in

    caplog.set_level(logging.DEBUG)
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "me", "connector": "acme", "action": "whoami", "credential": "a", "payload": {}}],
    }
    with acme_fakes() as (auth, api, env):
        srv = LiveServer(make_app(tmp_path, env=env, plugins=[("acme", Acme())]))
        try:
            c, _user, csrf = signed_in(srv, "tok@example.com")
            answers = [connect(c, "a").text]
            pid = c.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc}, headers=csrf).json()["id"]
            for spoil in (auth.expire_access_tokens, auth.revoke):
                spoil()  # a refresh after the 401, then a refused refresh token
                r = c.post("/api/v1/run?wait=20", json={"pipeline_id": pid}, headers=csrf)
                answers += [r.text, c.get(f"/api/v1/runs/{r.json()['id']}").text]
            answers += [c.get("/api/v1/credentials").text, c.get("/api/v1/runs?limit=50").text]
            answers.append(c.get(f"/api/v1/pipelines/{pid}").text)
            assert api.refused >= 2 and auth.refreshes == 1
            tokens = auth.issued
            assert len(tokens) >= 3
            for text in answers:
                for t in tokens:
                    assert t not in text, text[:300]
            for rec in caplog.records:
                line = rec.getMessage() + (str(rec.exc_info[1]) if rec.exc_info else "")
                for t in tokens:
                    assert t not in line, (rec.name, line[:300])
            for _ in range(100):  # the jobs.jsonl line follows the run's settlement
                if srv.state.config.jobs_log.exists():
                    break
                time.sleep(0.02)
            for path in (p for p in srv.state.config.data_dir.rglob("*") if p.is_file()):
                blob = path.read_bytes()
                for t in tokens:
                    assert t.encode() not in blob, str(path)
        finally:
            srv.stop()


# ---------------------------------------------------------------- webhooks
def sign(secret: str, body: bytes, ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Levqor-Timestamp": str(ts),
        "X-Levqor-Signature": f"sha256={sig}",
        "Content-Type": "application/json",
    }


def test_webhook_forgeries_are_refused_or_deduplicated(srv, client):
    doc = {
        "levqor": 1,
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "t",
                "connector": "core",
                "action": "transform",
                "payload": {"value": "{{ trigger.x }}"},
            }
        ],
    }
    p = create(client, doc).json()
    secret = client.post(f"/api/v1/pipelines/{p['id']}/webhook-secret").json()["secret"]
    hook = srv.client()
    url = p["webhook_url"].replace(srv.state.config.base_url, "")
    body = b'{"x": 1}'

    def runs():
        return len(client.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"])

    refused = {
        "missing": (body, {"Content-Type": "application/json"}, 401),
        "wrong": (body, {**sign("whsec_wrong", body)}, 401),
        "other-body": (b'{"x": 2}', sign(secret, body), 401),
        "stale": (body, sign(secret, body, int(time.time()) - 3600), 401),
        "future": (body, sign(secret, body, int(time.time()) + 3600), 401),
        "no-prefix": (
            body,
            {
                **sign(secret, body),
                "X-Levqor-Signature": sign(secret, body)["X-Levqor-Signature"][7:],
            },
            401,
        ),
        "oversized": (b'{"x": "' + b"a" * (300 * 1024) + b'"}', None, 413),
        "text-plain": (body, {**sign(secret, body), "Content-Type": "text/plain"}, 415),
        "xml": (b"<x>1</x>", {**sign(secret, b"<x>1</x>"), "Content-Type": "application/xml"}, 415),
        "multipart": (
            b"--b\r\n\r\n--b--",
            {
                **sign(secret, b"--b\r\n\r\n--b--"),
                "Content-Type": "multipart/form-data; boundary=b",
            },
            415,
        ),
        "no-type": (
            body,
            {k: v for k, v in sign(secret, body).items() if k != "Content-Type"},
            415,
        ),
    }
    for name, (data, headers, status) in refused.items():
        if headers is None:
            headers = sign(secret, data)
        r = hook.post(url, data=data, headers=headers)
        assert r.status_code == status, (name, r.status_code, r.text)
    assert runs() == 0
    # a genuine delivery runs once; its replay (same delivery id) returns the same run
    h = {**sign(secret, body), "X-Levqor-Delivery": "dlv-1"}
    first = hook.post(url, data=body, headers=h)
    assert first.status_code == 202 and first.json()["created"] is True
    again = hook.post(url, data=body, headers={**sign(secret, body), "X-Levqor-Delivery": "dlv-1"})
    assert again.status_code == 202 and again.json() == {
        **first.json(),
        "created": False,
        "status": again.json()["status"],
    }
    assert runs() == 1
    # an unknown token and a known token of a non-webhook pipeline answer the same 404
    assert (
        hook.post("/hooks/nope", json={}).json() == hook.post("/hooks/" + "a" * 32, json={}).json()
    )
