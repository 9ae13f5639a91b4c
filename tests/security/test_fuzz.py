"""Fuzzing the documented API with schemathesis: zero 5xx, zero responses off the schema.

Runs the ``schemathesis`` command against ``/api/v1/openapi.json`` of a live host with an
authenticated key, a fixed number of examples per operation and a fixed seed (reproducible).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

SEED = "20250104"
EXAMPLES = "12"
#: features that are off in this host (no Stripe, no OpenAI key): by design they answer 503 naming
#: the setting to make (a feature configured off says what to set); fuzzed for schema conformance only
CONFIGURED_OFF = {
    "POST /api/v1/billing/checkout": "STRIPE_SECRET_KEY",
    "POST /api/v1/billing/portal": "STRIPE_SECRET_KEY",
    "POST /api/v1/billing/webhook": "STRIPE_WEBHOOK_SECRET",
    "POST /api/v1/plan": "OPENAI_API_KEY",
}


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path):
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install -r requirements-dev.txt")
    # a fully started host (workers and scheduler): /api/v1/ops/health answers 503 otherwise, by design
    s = LiveServer(make_app(tmp_path, executor={"workers": 2}, start_scheduler=True))
    try:
        _, key = s.user_with_key("fuzz@example.com")
        c = s.client(key)
        # something to find, so id routes are exercised beyond 404
        r = c.post(
            "/api/v1/pipelines",
            json={
                "name": "seed",
                "pipeline": {
                    "levqor": 1,
                    "trigger": {"type": "manual"},
                    "steps": [
                        {
                            "id": "a",
                            "connector": "core",
                            "action": "transform",
                            "payload": {"value": 1},
                        }
                    ],
                },
            },
        )
        assert r.status_code == 201
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
        base = [
            exe,
            "run",
            f"{s.url}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {key}",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            # the pipeline document's trigger kinds are if/then branches, which generation can
            # only filter for: many generated documents are dropped before one is sent
            "--suppress-health-check",
            "filter_too_much",
        ]
        doc = c.get("/api/v1/openapi.json").json()["paths"]
        off = [op for op in CONFIGURED_OFF if op.split()[1] in doc]
        off_args = [a for op in off for a in ("--exclude-path", op.split()[1])]
        runs = [[*base, "--checks", "not_a_server_error,response_schema_conformance", *off_args]]
        if off:
            only = [a for op in off for a in ("--include-path", op.split()[1])]
            runs.append([*base, "--checks", "response_schema_conformance", *only])
        for cmd in runs:
            proc = subprocess.run(
                cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out[-8000:]
            assert "passed" in out.lower()
        # what was left out of the 5xx check answers 503 naming the setting, nothing else
        for op in off:
            method, path = op.split()
            r = c.request(
                method, path, json={"prompt": "post to slack"} if path.endswith("/plan") else {}
            )
            assert r.status_code == 503, (op, r.status_code, r.text)
            assert CONFIGURED_OFF[op] in r.json()["error"]["message"], (op, r.text)
    finally:
        s.stop()


# ---------------------------------------------------------------- own cases
# What schemathesis does not generate: JSON that Python's parser takes but no storage or JSON
# encoder does (unpaired surrogates, NaN, numbers beyond a float), nesting far past the limit,
# integers past 64 bits, and the routes that are not in the OpenAPI document (plugins' routes,
# sign-in, the inboxes, webhooks). Each is refused with a 4xx, never a 5xx, on every backend.

#: JSON bodies every route that reads JSON refuses with 400 ``invalid_json``
HOSTILE_JSON = {
    "lone-surrogate-value": b'{"code": "\\udcff", "email": "a\\ud800@example.com"}',
    "lone-surrogate-key": b'{"\\udcff": "x"}',
    "lone-surrogate-nested": b'{"input": {"list": ["ok", "\\ude00"]}}',
    "reversed-surrogate-pair": b'{"message": "\\ude00\\ud83d"}',
    "nested-5000": b"[" * 5000 + b"]" * 5000,
    "nested-objects-past-limit": b'{"a":' * 40 + b"1" + b"}" * 40,
    "nan": b'{"message": NaN}',
    "infinity": b'{"message": Infinity}',
    "minus-infinity": b'{"message": -Infinity}',
    "float-overflow": b'{"message": 1e400}',
}

#: every route that reads a JSON body, with the OpenAPI-described ones and those that are not
#: (plugins' billing and referrals, the error inbox, sign-in, webhooks); {pipeline_id}, {token}
#: and {run_id} are filled in with the seed pipeline's
JSON_ROUTES = [
    ("POST", "/api/v1/run"),
    ("POST", "/api/v1/pipelines"),
    ("PUT", "/api/v1/pipelines/{pipeline_id}"),
    ("POST", "/api/v1/credentials"),
    ("POST", "/api/v1/plan"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/errors"),
    ("POST", "/api/v1/support"),
    ("POST", "/api/v1/referrals/claim"),
    ("POST", "/api/v1/billing/checkout"),
    ("POST", "/api/v1/billing/portal"),
    ("POST", "/hooks/{token}"),
    ("POST", "/api/v1/triggers/test"),
]

#: integers past what the databases hold (SQLite and PostgreSQL BIGINT: signed 64-bit)
HUGE = ["99999999999999999999", str(2**63), str(2**64 + 1), "9" * 400]

JSON_HEADERS = {"Content-Type": "application/json"}
WEBHOOK_DOC = {
    "levqor": 1,
    "trigger": {"type": "webhook"},
    "steps": [
        {
            "id": "a",
            "connector": "core",
            "action": "transform",
            "payload": {"value": "{{ trigger.n }}"},
        }
    ],
}


@pytest.fixture
def seeded(tmp_path):
    """A live host (no workers: what is refused must start nothing), a key and a webhook
    pipeline with one run; rate limits off, the inboxes' included."""
    s = LiveServer(
        make_app(
            tmp_path,
            start_workers=False,
            env={
                "LEVQOR_ERRORS_RATE_LIMIT": "100000/minute",
                "LEVQOR_SUPPORT_RATE_LIMIT": "100000/minute",
            },
        )
    )
    try:
        _, key = s.user_with_key("fuzz@example.com")
        c = s.client(key)
        p = c.post("/api/v1/pipelines", json={"name": "seed", "pipeline": WEBHOOK_DOC}).json()
        run = c.post("/api/v1/run", json={"pipeline_id": p["id"]}).json()
        ids = {
            "pipeline_id": p["id"],
            "token": p["webhook_url"].rsplit("/", 1)[1],
            "run_id": run["run_id"],
        }
        yield s, c, ids
    finally:
        s.stop()


def _runs(c) -> list[str]:
    return [r["id"] for r in c.get("/api/v1/runs", params={"limit": 200}).json()["items"]]


def test_hostile_json_is_a_400_invalid_json_on_every_route_that_reads_json(seeded):
    s, c, ids = seeded
    before = _runs(c)
    wrong = []
    for method, template in JSON_ROUTES:
        path = template.format(**ids)
        for name, body in HOSTILE_JSON.items():
            r = c.request(method, path, data=body, headers=JSON_HEADERS)
            code = r.json().get("error", {}).get("code") if r.content else None
            if r.status_code != 400 or code != "invalid_json":
                wrong.append((method, template, name, r.status_code, r.text[:200]))
    assert wrong == []
    assert _runs(c) == before  # nothing refused started a run


def test_webhooks_refuse_nan_infinity_and_surrogates_like_the_api(seeded):
    s, c, ids = seeded
    before = _runs(c)
    for body in (b'{"n": NaN}', b'{"n": Infinity}', b'{"n": -Infinity}', b'{"n": 1e999}',
                 b'{"n": "\\udcff"}', b'[NaN]'):
        r = c.post(f"/hooks/{ids['token']}", data=body, headers=JSON_HEADERS)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_json", r.text
    assert _runs(c) == before
    # the same numbers written as JSON allows are taken, and the run has them as data
    r = c.post(f"/hooks/{ids['token']}", data=b'{"n": 1e308}', headers=JSON_HEADERS)
    assert r.status_code == 202, r.text
    assert c.get(f"/api/v1/runs/{r.json()['run_id']}").json()["input"] == {"n": 1e308}


def test_huge_integers_in_bodies_and_url_segments_are_4xx(seeded):
    s, c, ids = seeded
    pid = ids["pipeline_id"]
    for n in HUGE:
        # in a URL: an integer segment past 64 bits names nothing
        r = c.get(f"/api/v1/pipelines/{pid}/versions/{n}")
        assert r.status_code == 404, (n, r.text)
        assert r.json()["error"]["code"] == "not_found"
        # in an integer field: out of range; in trigger data: data, taken as it is
        body = f'{{"pipeline_id": "{pid}", "version": {n}}}'.encode()
        r = c.post("/api/v1/run", data=body, headers=JSON_HEADERS)
        assert r.status_code == 400, (n, r.text)
        assert r.json()["error"]["code"] in ("invalid_request", "invalid_json"), r.text
        for template in ("/api/v1/runs?limit={n}", "/api/v1/analytics/dashboard?days={n}",
                         "/api/v1/schedule/preview?cron=*+*+*+*+*&count={n}"):
            r = c.get(template.format(n=n))
            assert r.status_code == 400, (template, n, r.text)
    # versions are 32-bit columns on PostgreSQL: past 2**31 - 1 the same answer on both databases
    for v in (2**31, 2**63 - 1):
        r = c.get(f"/api/v1/pipelines/{pid}/versions/{v}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (v, r.text)
        r = c.post("/api/v1/run", json={"pipeline_id": pid, "version": v})
        assert r.status_code == 400 and "version must be between" in r.text, (v, r.text)
    r = c.get(f"/api/v1/pipelines/{pid}/versions/{2**31 - 1}")
    assert r.status_code == 404 and "version" in r.json()["error"]["message"], r.text
    r = c.post("/api/v1/run", json={"pipeline_id": pid, "version": 2**31 - 1})
    assert r.status_code == 404 and "version" in r.json()["error"]["message"], r.text
    r = c.post("/api/v1/run", json={"pipeline_id": pid, "input": {"n": 2**70}})
    assert r.status_code == 202, r.text


#: a well-formed body per route of JSON_ROUTES, whose fields are then replaced one at a time
def _valid_bodies(ids: dict) -> dict[tuple[str, str], dict]:
    return {
        ("POST", "/api/v1/run"): {
            "pipeline_id": ids["pipeline_id"],
            "input": {"n": 1},
            "idempotency_key": "k-1",
            "version": 1,
        },
        ("POST", "/api/v1/pipelines"): {"name": "n", "pipeline": WEBHOOK_DOC},
        ("PUT", "/api/v1/pipelines/{pipeline_id}"): {"name": "n", "pipeline": WEBHOOK_DOC},
        ("POST", "/api/v1/credentials"): {
            "name": "c",
            "connector": "slack",
            "values": {"token": "xoxb-1"},
        },
        ("POST", "/api/v1/plan"): {"prompt": "post to slack", "name": "n", "dry_run": True},
        ("POST", "/api/v1/auth/login"): {"email": "fuzz@example.com", "password": "pw"},
        ("POST", "/api/v1/errors"): {
            "message": "m",
            "stack": "s",
            "url": "https://example.com/",
            "user_agent": "ua",
            "release": "1",
        },
        ("POST", "/api/v1/support"): {"email": "a@example.com", "subject": "s", "message": "m"},
        ("POST", "/api/v1/referrals/claim"): {"code": "abc", "utm_source": "x"},
        ("POST", "/api/v1/billing/checkout"): {
            "plan": "pro",
            "success_url": "https://example.com/ok",
            "cancel_url": "https://example.com/no",
        },
        ("POST", "/api/v1/billing/portal"): {"return_url": "https://example.com/"},
        ("POST", "/hooks/{token}"): {"n": 1, "s": "x"},
        ("POST", "/api/v1/triggers/test"): {
            "trigger": {"type": "app", "connector": "telegram", "trigger": "new_message",
                        "credential": "c", "config": {}, "interval": 300}
        },  # fmt: skip
    }


#: JSON values that are well-formed but awkward to store, compare or render
AWKWARD = [
    "a\\u0000b",
    "\\u0000",
    "\\ud83d\\ude00",  # a surrogate pair: one emoji, fine
    '"{{ 7 * 7 }}%s%n"',
    '""',
    str(2**64),
    str(-(2**63) - 1),
    str(2**63 - 1),
    str(2**31),
    "1e308",
    "-0.0",
    "null",
    "true",
    "[]",
    "{}",
    "[" * 31 + "]" * 31,
]


def test_awkward_values_in_each_field_of_each_json_route_are_never_a_5xx(seeded):
    """Every route that reads JSON, its plugins' too: each field of a valid body replaced by
    each awkward value (NUL characters, integers past 64 bits, ...): a 2xx or a 4xx."""
    s, c, ids = seeded
    assert {k for k in _valid_bodies(ids)} == set(JSON_ROUTES)
    server_errors = []
    for (method, template), valid in _valid_bodies(ids).items():
        path = template.format(**ids)
        for field in valid:
            for value in AWKWARD:
                if value[0] not in '"[{-0123456789' and value not in ("null", "true"):
                    value = f'"{value}"'
                rest_fields = {k: v for k, v in valid.items() if k != field}
                if "idempotency_key" in rest_fields:  # a new run each time, not the first again
                    rest_fields["idempotency_key"] = f"k-{len(server_errors)}-{field}-{value}"
                rest = json.dumps(rest_fields)
                body = (rest[:-1] + (", " if len(rest) > 2 else "") + f'"{field}": {value}}}')
                r = c.request(method, path, data=body.encode(), headers=JSON_HEADERS)
                if r.status_code >= 500 and not (
                    r.status_code == 503
                    and CONFIGURED_OFF.get(f"{method} {template}", "-") in r.text
                ):
                    server_errors.append((method, template, field, value, r.status_code, r.text[:200]))
    assert server_errors == []


def test_hostile_json_inside_a_list_cursor_is_a_400(seeded):
    """``/api/v1/runs?cursor=`` carries JSON the server wrote, but a client can send any."""
    s, c, ids = seeded
    for name, body in {**HOSTILE_JSON, "surrogate-id": b'["2025-01-01T00:00:00+00:00", "\\udcff"]',
                       "huge": b'["2025-01-01T00:00:00+00:00", 99999999999999999999]'}.items():
        cursor = base64.urlsafe_b64encode(body).decode().rstrip("=")
        r = c.get("/api/v1/runs", params={"cursor": cursor})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["message"] == "invalid cursor", (name, r.text)


def _fill(rule, ids: dict, **override: str) -> str:
    """The rule's path with its arguments: ``override``, else the seed's ids, else ``1``."""
    values = {a: override.get(a, ids.get(a, "1")) for a in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


def test_no_route_answers_hostile_input_with_a_5xx(seeded):
    """Every route of the app, the plugins' included: each path argument replaced by a huge
    integer, each method sent every hostile body; nothing may answer 5xx but the routes
    configured off (503 naming the setting)."""
    s, c, ids = seeded
    server_errors = []

    def check(method: str, path: str, body: bytes, what: str) -> None:
        r = c.request(method, path, data=body, headers=JSON_HEADERS)
        if r.status_code >= 500:
            off = CONFIGURED_OFF.get(f"{method} {path}")
            if r.status_code == 503 and off and off in r.text:
                return
            server_errors.append((method, path[:80], what, r.status_code, r.text[:200]))

    rules = [r for r in s.app.url_map.iter_rules() if r.endpoint != "static"]
    for rule in rules:
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        for arg in rule.arguments:
            for n in HUGE[:2] + ["-1"]:
                for method in methods:
                    if method == "DELETE":
                        continue  # the only object a huge id could name is the seed, unharmed
                    check(method, _fill(rule, ids, **{arg: n}), b"{}", f"{arg}={n}")
    # bodies last: the seed may change state here (rotated webhook secret, cancelled run)
    for rule in rules:
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH"}):
            for name, body in HOSTILE_JSON.items():
                check(method, _fill(rule, ids), body, name)
    assert server_errors == []
