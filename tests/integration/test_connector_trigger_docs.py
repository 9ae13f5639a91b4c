"""docs/connectors.md's trigger example (levqor-acme-feed, the scaffold's output) in real Levqor
hosts: its polling ``new_item`` starts one run per new item, nothing for the items there before,
and nothing twice across a restart."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from e2e_support import ROOT, extract_files
from trigger_support import TriggerHosts

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
