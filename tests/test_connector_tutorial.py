"""docs/connectors.md cannot drift: its tutorial is built, installed, tested and run here."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from e2e_support import ROOT, extract_files
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import Runner, RunRequest
from levqor_kernel.testing import FakeServer, Reply


def test_tutorial_connector_builds_installs_passes_its_tests_and_runs(tmp_path, monkeypatch):
    files = extract_files((ROOT / "docs" / "connectors.md").read_text())
    assert {
        "levqor-acme/pyproject.toml",
        "levqor-acme/src/levqor_acme/__init__.py",
        "levqor-acme/tests/test_acme.py",
    } <= set(files)
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(tmp_path / "levqor-acme"),
        ],
        check=True,
    )
    # the package's own tests, exactly as its author runs them
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "levqor-acme" / "tests"),
        ],
        cwd=tmp_path / "levqor-acme",
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout

    # discovered through its entry point and run in a pipeline
    monkeypatch.syspath_prepend(str(site))
    pm = make_plugin_manager(allow=["acme"])
    info = pm.catalog.get("acme")
    assert info is not None and info.dist == "levqor-acme" and info.version == "0.1.0"
    with FakeServer() as srv:
        srv.route(
            "POST",
            "/v1/notes",
            lambda req: Reply(201, {"id": "n-" + req.json()["title"], "url": "u"}),
        )
        doc = {
            "levqor": 1,
            "trigger": {"type": "webhook"},
            "steps": [
                {
                    "id": "note",
                    "connector": "acme",
                    "action": "create_note",
                    "credential": "acme-main",
                    "payload": {"title": "{{ trigger.order }}", "body": "x"},
                }
            ],
        }
        runner = Runner(pm, env={"LEVQOR_ACME_API_BASE": srv.url})
        res = runner.run(
            RunRequest(f"run{time.time_ns()}", doc, {"order": "A7"}),
            credentials=lambda name, c: (
                {"token": "tok-secret-123"} if name == "acme-main" else None
            ),
        )
        assert res.status == "succeeded", res.error
        assert res.outputs["note"] == {"id": "n-A7", "url": "u"}
        assert srv.requests[0].header("Authorization") == "Bearer tok-secret-123"


FEED = "levqor-acme-feed/"
FEED_FILES = {
    "src/levqor_acme_feed/__init__.py",
    "src/levqor_acme_feed/fake.py",
    "tests/test_acme_feed_triggers.py",
    "tests/test_acme_feed_oauth.py",
}


def test_trigger_chapter_example_is_the_scaffold_output_and_runs(tmp_path, monkeypatch):
    from levqor_host.scaffold import scaffold

    docs = extract_files((ROOT / "docs" / "connectors.md").read_text())
    shown = {rel[len(FEED):]: text for rel, text in docs.items() if rel.startswith(FEED)}
    assert set(shown) == FEED_FILES
    # the page shows exactly what `levqor connector new` writes: neither can change alone
    proj = scaffold("acme-feed", tmp_path, author="Ada Author", triggers=["polling", "instant"], oauth=True)
    for rel, text in shown.items():
        assert (proj / rel).read_text() == text, (
            f"docs/connectors.md's {FEED}{rel} differs from `levqor connector new acme-feed "
            "--trigger polling --trigger instant --oauth`: paste the generated file into the page"
        )
        (proj / rel).write_text(text)  # and it is the page's text that runs below

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(proj)],
        check=True,
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(proj / "tests")],
        cwd=proj,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "16 passed" in r.stdout

    # found through its entry point, and driven through its hooks the way the host drives them
    monkeypatch.syspath_prepend(str(site))
    for mod in [m for m in sys.modules if m.split(".")[0] == "levqor_acme_feed"]:
        monkeypatch.delitem(sys.modules, mod)  # another test's copy; this one's is dropped below
    try:
        _drive_acme_feed()
    finally:
        for mod in [m for m in sys.modules if m.split(".")[0] == "levqor_acme_feed"]:
            del sys.modules[mod]


def _drive_acme_feed() -> None:
    from levqor_kernel import Delivery
    from levqor_kernel.context import make_context
    from levqor_kernel.oauth import sample_oauth_credentials
    from levqor_kernel.triggers import as_delivery_result, as_poll

    pm = make_plugin_manager(allow=["acme_feed"])
    info = pm.catalog.get("acme_feed")
    assert info is not None and info.dist == "levqor-acme-feed"
    assert {n: t.kind for n, t in info.triggers.items()} == {"new_item": "polling", "item_created": "instant"}
    assert info.oauth2["token_url"].endswith("/oauth/token")
    from levqor_acme_feed.fake import FakeAcmeFeed

    def call(hook: str, **kw):
        return pm.call_owner(hook, "acme_feed", connector="acme_feed", **kw)

    with FakeAcmeFeed() as fake:
        env = {"LEVQOR_ACME_FEED_API_BASE": fake.url}
        creds = {"token": fake.token}
        fake.add_item("old 1")
        fake.add_item("old 2")

        def poll(state):
            return as_poll(call("poll_trigger", trigger="new_item", config={}, credentials=creds, state=state,
                                context=make_context(env=env)))

        baseline = poll(None)  # the host records these and starts nothing
        assert [i.id for i in baseline.items] == ["it_1", "it_2"] and baseline.state == {"after": 2}
        fake.add_item("Order 42", "paid")
        nxt = poll(baseline.state)
        assert [(i.id, i.data["title"]) for i in nxt.items] == [("it_3", "Order 42")]
        assert poll(nxt.state).items == []

        # the new item starts a run: its data is the run's trigger
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [{"id": "copy", "connector": "acme_feed", "action": "create_item",
                       "credential": "feed", "payload": {"title": "Re: {{ trigger.title }}"}}],
        }
        connected = {**sample_oauth_credentials(), "access_token": fake.issue_token()}
        res = Runner(pm, env=env).run(
            RunRequest(f"run{time.time_ns()}", doc, nxt.items[0].data),
            credentials=lambda name, c: connected if name == "feed" else None,
        )
        assert res.status == "succeeded", res.error
        assert fake.items[-1]["title"] == "Re: Order 42"
        assert fake.requests[-1].header("Authorization") == f"Bearer {connected['access_token']}"

        # instant: enabling subscribes, a signed delivery gives one item per event, disabling removes it
        url = "https://levqor.example/hooks/triggers/t0k"
        reg = call("register_trigger", trigger="item_created", config={}, credentials=creds,
                   webhook_url=url, secret="s3cret-value", context=make_context(env=env))
        [hook] = fake.webhooks.values()
        assert hook["url"] == url and hook["secret"] == "s3cret-value"
        signed = fake.delivery(2, "s3cret-value")
        got = as_delivery_result(call(
            "receive_delivery", trigger="item_created", config={},
            delivery=Delivery(signed.method, signed.headers, signed.body, secret="s3cret-value"),
            registration=reg, context=make_context(env=env)))
        assert [i.data["title"] for i in got.items] == ["Pushed item 1", "Pushed item 2"]
        call("unregister_trigger", trigger="item_created", config={}, credentials=creds, registration=reg,
             context=make_context(env=env))
        assert fake.webhooks == {}
