"""The configuration object: sections, overrides, clear errors, and the plugin settings it hands
out (the host and the kernel read no environment of their own)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from e2e_support import make_app, stop_app
from levqor_host.config import Config


def test_each_concern_reads_its_own_section():
    cfg = Config.from_env(
        {
            "LEVQOR_WORKERS": "7",
            "LEVQOR_EXECUTOR": "OFF",
            "DATABASE_URL": "postgresql+psycopg://u@db/levqor",
            "LEVQOR_BACKUP_CRON": " 0 3 * * * ",
            "GUNICORN_WORKERS": "5",
            "LEVQOR_PLUGINS": "slack, notion",
            "LEVQOR_CACHE_DIR": "",
            "LEVQOR_SECRET_KEY": "k1,k2",
            "LEVQOR_PLAN_PRICE_CREDITS": "3",
        }
    )
    assert (cfg.executor.workers, cfg.executor.kind) == (7, "off")
    assert cfg.database.url == "postgresql+psycopg://u@db/levqor"
    assert cfg.backup.cron == "0 3 * * *"
    assert cfg.gunicorn.workers == 5 and cfg.gunicorn.threads == 4
    assert cfg.plugins.allow == ("slack", "notion") and cfg.plugins.block == ()
    assert cfg.plugins.manager_options() == {
        "allow": ("slack", "notion"),
        "block": (),
        "schema_cache_dir": None,
    }
    assert cfg.security.secret_key == "k1,k2"
    assert cfg.planner.price_credits == 3


def test_defaults_and_the_sqlite_database_in_the_data_folder(tmp_path):
    cfg = Config.from_env({}, data_dir=tmp_path)
    assert cfg.database.url == f"sqlite:///{(tmp_path / 'levqor.db').resolve()}"
    assert cfg.backups_dir == tmp_path / "backups"
    assert (cfg.base_url, cfg.base_url_given) == ("http://127.0.0.1:8000", False)
    assert cfg.plugins.manager_options() == {"allow": None, "block": ()}  # the kernel's cache
    assert Config.from_env({"LEVQOR_BASE_URL": "https://x.example/"}).base_url_given


def test_the_configuration_is_frozen():
    cfg = Config.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.executor.workers = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.base_url = "x"  # type: ignore[misc]


def test_overrides_name_a_top_level_field_or_a_section(tmp_path):
    cfg = Config.from_env(
        {"LEVQOR_WORKERS": "7"}, data_dir=str(tmp_path), executor={"poll_interval": 0.05}
    )
    assert cfg.data_dir == Path(tmp_path)
    assert (cfg.executor.workers, cfg.executor.poll_interval) == (7, 0.05)
    with pytest.raises(TypeError, match="unknown config keys: workers"):
        Config.from_env({}, workers=2)
    with pytest.raises(TypeError):
        Config.from_env({}, executor={"threads": 2})
    # overrides are validated like the environment
    with pytest.raises(ValueError, match="LEVQOR_BROKER_URL"):
        Config.from_env({}, executor={"kind": "celery"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LEVQOR_WORKERS", "four", "LEVQOR_WORKERS must be an integer, got 'four'"),
        ("LEVQOR_LEASE_SECONDS", "soon", "LEVQOR_LEASE_SECONDS must be a number"),
        ("GUNICORN_WORKERS", "many", "GUNICORN_WORKERS must be an integer"),
        ("LEVQOR_PORT", "http", "LEVQOR_PORT must be an integer"),
        ("LEVQOR_SETTLE_AFTER_SECONDS", "x", "LEVQOR_SETTLE_AFTER_SECONDS must be a number"),
        ("LEVQOR_SUPPORT_RATE_LIMIT", "often", "LEVQOR_SUPPORT_RATE_LIMIT must be a rate limit"),
        ("LEVQOR_SCHEDULER", "sometimes", "LEVQOR_SCHEDULER must be auto, on or off"),
        ("LEVQOR_RATE_LIMIT_STRATEGY", "leaky", "LEVQOR_RATE_LIMIT_STRATEGY must be"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name, value, message):
    with pytest.raises(ValueError, match=message):
        Config.from_env({name: value})


def test_plugin_settings_are_the_variables_of_the_given_prefixes_read_only():
    env = {"STRIPE_SECRET_KEY": "sk", "LEVQOR_BILLING": "local", "LEVQOR_WORKERS": "2"}
    cfg = Config.from_env(env)
    env["STRIPE_SECRET_KEY"] = "changed later"  # read once, at start
    stripe = cfg.plugin_settings("STRIPE_", "LEVQOR_BILLING")
    assert dict(stripe) == {"STRIPE_SECRET_KEY": "sk", "LEVQOR_BILLING": "local"}
    assert dict(cfg.plugin_settings()) == {
        "STRIPE_SECRET_KEY": "sk",
        "LEVQOR_BILLING": "local",
        "LEVQOR_WORKERS": "2",
    }
    with pytest.raises(TypeError):
        stripe["STRIPE_SECRET_KEY"] = "x"  # type: ignore[index]


def test_the_app_hands_plugins_and_steps_its_config_not_the_process_environment(
    tmp_path, monkeypatch
):
    # the process environment says otherwise: the kernel and the plugins never look there
    monkeypatch.setenv("LEVQOR_DISABLE_PLUGINS", "")
    monkeypatch.setenv("LEVQOR_SSRF_ALLOW", "10.0.0.0/8")
    app = make_app(
        tmp_path,
        start_workers=False,
        env={"LEVQOR_DISABLE_PLUGINS": "core", "LEVQOR_ACME_API_BASE": "http://127.0.0.1:9"},
    )
    try:
        st = app.extensions["levqor"]
        assert "core" not in st.pm.catalog
        assert st.runner.env["LEVQOR_ACME_API_BASE"] == "http://127.0.0.1:9"
        assert st.runner.env["LEVQOR_SSRF_ALLOW"] == "127.0.0.1"  # make_app's, not the process's
        assert st.ledger.config is st.config
    finally:
        stop_app(app)
