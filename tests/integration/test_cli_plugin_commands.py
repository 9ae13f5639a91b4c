"""The `levqor` command with a real plugin installed: levqor-stripe's `register_commands` adds
`levqor credits`, found when it is used and listed by `levqor plugins`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from levqor_host.cli import main


def test_a_plugins_command_is_found_when_used_and_listed_by_plugins(tmp_path):
    env = {"LEVQOR_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": ""}
    r = CliRunner().invoke(main, ["credits", "--help"], env=env)
    assert r.exit_code == 0, r.output
    assert "grant" in r.output and "balance" in r.output
    r = CliRunner().invoke(main, ["plugins", "--json"], env=env)
    assert r.exit_code == 0, r.output
    [stripe] = [p for p in json.loads(r.output)["plugins"] if p["name"] == "stripe"]
    assert "credits" in stripe["commands"]
