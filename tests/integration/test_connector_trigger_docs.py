"""docs/connectors.md's trigger example (levqor-acme-feed, the scaffold's output) in real Levqor
hosts: its polling ``new_item`` starts one run per new item, nothing for the items there before,
and nothing twice across a restart; its instant ``item_created`` subscribes upstream when the
pipeline is saved, answers the URL challenge, starts one run per event of a signed delivery (once,
however often the delivery comes), refuses a forged or unsigned one, and unsubscribes when the
pipeline is switched off."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from e2e_support import ROOT, extract_files
from trigger_support import TriggerHosts, wait_for

FEED = "levqor-acme-feed/src/levqor_acme_feed/"


@pytest.fixture
def acme_feed(tmp_path, monkeypatch) -> Iterator[ModuleType]:
    """The example connector, imported from the page's own text."""
    files = extract_files((ROOT / "docs" / "connectors.md").read_text())
    pkg = tmp_path / "example" / "levqor_acme_feed"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "fake.py"):
        (pkg / name).write_text(files[FEED + name])
    for mod in [m for m in sys.modules if m.split(".")[0] == "levqor_acme_feed"]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.syspath_prepend(str(pkg.parent))
    module = importlib.import_module("levqor_acme_feed")
    assert module.__file__ == str(pkg / "__init__.py")
    yield module
    for mod in [m for m in sys.modules if m.split(".")[0] == "levqor_acme_feed"]:
        del sys.modules[mod]


def test_the_polling_example_starts_one_run_per_new_item(tmp_path, acme_feed) -> None:
    from levqor_acme_feed.fake import FakeAcmeFeed

    with FakeAcmeFeed() as fake:
        fake.add_item("Order 41", "before the trigger: never a run")
        env = {"LEVQOR_ACME_FEED_API_BASE": fake.url}
        with TriggerHosts(tmp_path / "hosts", plugins=[acme_feed], env=env) as th:
            th.add_credential("feed", "acme_feed", {"token": fake.token})
            pid = th.create_pipeline(
                {"type": "app", "connector": "acme_feed", "trigger": "new_item",
                 "credential": "feed", "config": {}, "interval": 1},
            )  # fmt: skip
            assert th.wait_baseline(pid)["state"] == {"after": 1}
            fake.add_item("Order 42", "paid")
            fake.add_item("Order 43")
            runs = th.wait_runs(pid, 2)
            assert [(r["input"]["id"], r["input"]["title"]) for r in runs] == [
                ("it_2", "Order 42"),
                ("it_3", "Order 43"),
            ]
            assert all(r["status"] == "succeeded" for r in runs)
            th.restart()  # the same host again, same database: nothing starts twice
            th.wait_polls(pid, 2)
            assert len(th.runs(pid)) == 2
            fake.add_item("Order 44")
            assert th.wait_runs(pid, 3)[-1]["input"]["title"] == "Order 44"

def test_the_instant_example_registers_verifies_and_unregisters(tmp_path, acme_feed) -> None:
    from levqor_acme_feed.fake import FakeAcmeFeed

    with FakeAcmeFeed() as fake:
        # the example API accepts only https webhook URLs
        env = {"LEVQOR_ACME_FEED_API_BASE": fake.url, "LEVQOR_BASE_URL": "https://levqor.example"}
        with TriggerHosts(tmp_path / "hosts", plugins=[acme_feed], env=env) as th:
            th.add_credential("feed", "acme_feed", {"token": fake.token})
            pid = th.create_pipeline(
                {"type": "app", "connector": "acme_feed", "trigger": "item_created",
                 "credential": "feed", "config": {}},
            )  # fmt: skip
            [hook] = wait_for(lambda: list(fake.webhooks.values()), what="the webhook upstream")
            assert hook["url"] == th.status(pid)["webhook_url"]
            assert hook["url"].startswith("https://levqor.example/hooks/triggers/")

            handshake, challenge = fake.handshake(hook["secret"])
            r = th.deliver(pid, handshake.body, dict(handshake.headers))
            assert r.status_code == 200 and r.json() == {"challenge": challenge}

            signed = fake.delivery(2, hook["secret"])
            r = th.deliver(pid, signed.body, dict(signed.headers))
            assert r.status_code == 200, r.text
            runs = th.wait_runs(pid, 2)
            assert [r["input"]["title"] for r in runs] == ["Pushed item 1", "Pushed item 2"]
            # the API retries a delivery it did not see answered: nothing starts twice
            assert th.deliver(pid, signed.body, dict(signed.headers)).status_code == 200
            forged = fake.delivery(1, "not-the-secret")
            assert th.deliver(pid, forged.body, dict(forged.headers)).status_code == 401
            unsigned = fake.delivery(1, hook["secret"])
            r = th.deliver(pid, unsigned.body, {"content-type": "application/json"})
            assert r.status_code == 401
            assert len(th.wait_runs(pid, 2)) == 2

            th.disable(pid)
            assert fake.webhooks == {}
