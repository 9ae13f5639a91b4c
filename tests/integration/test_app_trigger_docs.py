"""docs/app-triggers.md cannot drift: its shell example (test a Telegram trigger, save a pipeline
with it, read its status, switch it off and on) runs against a live host and FakeTelegram."""

from __future__ import annotations

import json
import subprocess

import pytest
from e2e_support import ROOT, LiveServer, clean_env, extract_files, make_app
from levqor_telegram.fake import FakeTelegram

pytestmark = pytest.mark.backends


def answers(text: str) -> list:
    """The JSON values printed one after another (with or without newlines between them)."""
    out, i, decoder = [], 0, json.JSONDecoder()
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out


def test_the_api_example_tests_saves_and_switches_a_telegram_trigger(tmp_path):
    files = extract_files((ROOT / "docs" / "app-triggers.md").read_text())
    assert "app_trigger.sh" in files
    with FakeTelegram() as tg:
        s = LiveServer(
            make_app(tmp_path, start_workers=False, env={"LEVQOR_TELEGRAM_API_BASE": tg.url})
        )
        try:
            _, key = s.user_with_key("docs@example.com")
            c = s.client(key)
            r = c.post("/api/v1/credentials", json={"name": "my-bot", "connector": "telegram",
                                                    "values": {"bot_token": tg.token}})  # fmt: skip
            assert r.status_code == 201, r.text
            tg.push_message(tg.PRIVATE_CHAT, "Is order 1042 on its way?")
            script = tmp_path / "app_trigger.sh"
            script.write_text(files["app_trigger.sh"])
            out = subprocess.run(
                ["bash", "-eu", str(script)], env=clean_env(LEVQOR=s.url, KEY=key),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
            # curl printed four JSON answers: the test, the pipeline, off, on
            tested, got, off, on = answers(out.stdout)
            assert tested["kind"] == "polling" and tested["source"] == "upstream"
            assert [i["text"] for i in tested["items"]] == ["Is order 1042 on its way?"]
            assert got["enabled"] is True and got["trigger_status"]["kind"] == "polling"
            assert got["trigger_status"]["interval"] == 300
            assert off["enabled"] is False and off["trigger_status"] is None
            assert on["enabled"] is True and on["trigger_status"]["status"] == "active"
            assert c.get(f"/api/v1/runs?pipeline_id={got['id']}").json()["items"] == []
        finally:
            s.stop()
