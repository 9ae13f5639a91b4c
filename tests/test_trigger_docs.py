"""docs/pipelines.md's app-trigger section cannot drift: its example validates against the
installed catalog and runs through a real host against FakeTelegram (a message to the bot
after the first check starts one run, which answers it), and the defaults it states are the
configuration's."""

from __future__ import annotations

import json
import re

import pytest
from e2e_support import ROOT
from levqor_host.config import TriggersConfig
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager
from levqor_telegram.fake import FakeTelegram
from trigger_support import TriggerHosts, wait_for

pytestmark = [pytest.mark.backends, pytest.mark.workers]

PAGE = (ROOT / "docs" / "pipelines.md").read_text()
SECTION = PAGE.split("## App triggers\n", 1)[1].split("\n## ", 1)[0]
BLOCKS = {
    m.group(1): json.loads(m.group(2))
    for m in re.finditer(r"<!-- app-trigger example: (\w+) -->\n```json\n(.*?)^```", SECTION, re.S | re.M)
}
EXAMPLE = {"levqor": 1, "name": "Answer new Telegram messages", "trigger": BLOCKS["trigger"],
           "steps": [BLOCKS["step"]]}  # fmt: skip


def test_the_example_is_a_valid_pipeline():
    catalog = make_plugin_manager(schema_cache_dir=None).catalog
    assert validate_pipeline(EXAMPLE, catalog, credentials={"my-bot": "telegram"}) == []
    assert EXAMPLE["trigger"]["type"] == "app"


def test_the_stated_defaults_are_the_configurations():
    d = TriggersConfig()
    assert f"seconds between checks: {d.poll_default_interval} unless" in SECTION
    assert f"at least `LEVQOR_POLL_MIN_INTERVAL` ({d.poll_min_interval} unless set" in SECTION
    assert f"`LEVQOR_TRIGGER_SEEN_MAX` ({d.seen_max})" in SECTION
    assert f"`LEVQOR_TRIGGER_FAIL_AFTER` ({d.fail_after})" in SECTION


def test_the_example_answers_each_new_message_once(tmp_path):
    with FakeTelegram() as tg, TriggerHosts(tmp_path, env={"LEVQOR_TELEGRAM_API_BASE": tg.url}) as th:
        th.add_credential("my-bot", "telegram", {"bot_token": tg.token})
        trigger = {**EXAMPLE["trigger"], "interval": 1}  # the page's 300 s, shortened for the test
        pid = th.create_pipeline(trigger, steps=EXAMPLE["steps"], name=EXAMPLE["name"])
        tg.push_message(tg.PRIVATE_CHAT, "sent before the pipeline")
        th.wait_baseline(pid)
        tg.push_message(tg.PRIVATE_CHAT, "hello")
        [run] = th.wait_runs(pid, 1)
        assert run["status"] == "succeeded" and run["input"]["text"] == "hello"
        wait_for(lambda: [m for m in tg.messages if m["text"] == "You said: hello"], what="the reply")
        assert [m["text"] for m in tg.messages] == ["You said: hello"]
