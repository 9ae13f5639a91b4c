"""The `levqor` command beside a real `levqor serve`, with the levqor-http connector sending to
a fake server: a second server on a busy port claims nothing, and `levqor run --follow` follows
a run the server's workers run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from e2e_support import free_port, levqor, serve_env, serving
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    levqor(d, "db", "upgrade")
    levqor(d, "users", "create", "admin@example.com", "--admin")
    return d


def _http_pipeline(url: str) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "send",
                "connector": "http",
                "action": "request",
                "payload": {"method": "POST", "url": url, "json": {"n": "{{ trigger.n }}"}},
            }
        ],
    }


@pytest.mark.parametrize("prod", [False, True], ids=["dev", "prod"])
def test_second_serve_on_a_busy_port_exits_before_claiming_runs(tmp_path, prod):
    """A second `levqor serve` on a port in use fails on the bind, before any worker or the
    scheduler starts: it claims no run and sends no step (no duplicate deliveries)."""
    from e2e_support import make_app, stop_app

    data = tmp_path / "data"
    release = threading.Event()
    with FakeServer() as fake:
        # the first server's only worker holds one run here; the other runs stay queued
        fake.route("POST", "/slow", lambda req: (release.wait(60), {"ok": True})[1])
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        try:
            user = st.store.users.create("owner@example.com", is_admin=True, plan="business")
            p = st.store.pipelines.create(user["id"], "slow", _http_pipeline(f"{fake.url}/slow"))
            port = free_port()
            env = serve_env(data, LEVQOR_WORKERS="1", LEVQOR_SSRF_ALLOW="127.0.0.1")
            with serving(data, port, env):
                run_ids = [st.runs.start(user, p, {"n": n})[0]["id"] for n in range(5)]
                deadline = time.monotonic() + 60
                while not fake.requests and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(fake.requests) == 1  # the first server is busy with one run
                args = ["serve", "--port", str(port)] + (["--prod"] if prod else [])
                second = subprocess.Popen(
                    [sys.executable, "-m", "levqor_host.cli", *args],
                    env=serve_env(data, LEVQOR_SSRF_ALLOW="127.0.0.1"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                out, err = second.communicate(timeout=120)
                time.sleep(0.5)
                assert len(fake.requests) == 1, err  # the second sent nothing
                # ... and claimed nothing (a worker id is host:pid:suffix)
                runs = [st.store.runs.get(user["id"], rid) for rid in run_ids]
                assert not [r for r in runs if f":{second.pid}:" in (r.get("lease_owner") or "")]
                assert second.returncode != 0, out + err
                assert f"127.0.0.1:{port}" in err and "in use" in err, err
                assert "Traceback" not in err, err
                assert sum(r["status"] == "queued" for r in runs) == 4
                release.set()
                finals = [st.runs.wait(user["id"], rid, 60) for rid in run_ids]
            assert [r["status"] for r in finals] == ["succeeded"] * 5
            assert sorted(int(r.json()["n"]) for r in fake.requests) == list(range(5))
        finally:
            release.set()
            stop_app(app)


def test_run_follow_queues_for_the_servers_workers_and_follows_to_the_end(data, tmp_path):
    """`levqor run --follow` queues the run for the server's executor (the step runs there,
    with the server's environment: only the server may reach 127.0.0.1) and prints each step
    transition and the final status; a failed run exits non-zero."""
    with FakeServer() as fake:
        fake.route("POST", "/ok", {"received": True})
        fake.route("POST", "/broken", Reply(400, {"error": "bad request"}))
        for name, path in (("ok", "/ok"), ("broken", "/broken")):
            f = tmp_path / f"{name}.json"
            f.write_text(json.dumps({"name": name, "doc": _http_pipeline(fake.url + path)}))
            levqor(data, "pipelines", "import", str(f))
        # the server looks for queued runs once a second (a CLI that ran the run itself, woken
        # at once, would claim it first)
        env = serve_env(data, LEVQOR_SSRF_ALLOW="127.0.0.1", LEVQOR_POLL_INTERVAL="1")
        with serving(data, free_port(), env) as server:
            r = levqor(data, "run", "ok", "--input", '{"n": 7}', "--follow", check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.splitlines()
            assert "queued" in lines[0]
            assert any("send" in x and "succeeded" in x for x in lines)
            assert lines[-1].endswith("succeeded")
            [req] = fake.requests_to("/ok")
            assert int(req.json()["n"]) == 7
            run_id = lines[0].split()[1]
            from e2e_support import make_app, stop_app

            app = make_app(tmp_path, start_workers=False)
            try:
                run = app.extensions["levqor"].store.runs.get(None, run_id)
            finally:
                stop_app(app)
            assert run["status"] == "succeeded"
            assert f":{server.pid}:" in run["lease_owner"]  # claimed by the server's worker

            r = levqor(data, "run", "broken", "--input", '{"n": 1}', "--follow", check=False)
            assert r.returncode == 1, r.stdout + r.stderr
            assert any("send" in x and "failed" in x for x in r.stdout.splitlines())
            assert r.stdout.splitlines()[-1].endswith("failed")
            assert len(fake.requests_to("/broken")) == 1
