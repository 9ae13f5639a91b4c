"""A harness for end-to-end tests of app triggers: real Levqor hosts, one database, a pipeline
whose trigger is an app's, and the runs it starts.

Use it for a connector's "Done when" test (tests/integration, beside the connector's fake)::

    from trigger_support import TriggerHosts

    def test_new_message_starts_one_run_per_message(tmp_path):
        with FakeTelegram() as fake, TriggerHosts(
            tmp_path, env={"LEVQOR_TELEGRAM_API_BASE": fake.url}, hosts=2, postgres=True
        ) as th:
            th.add_credential("bot", "telegram", {"bot_token": fake.token})
            pid = th.create_pipeline(
                {"type": "app", "connector": "telegram", "trigger": "new_message",
                 "credential": "bot", "config": {}, "interval": 1}
            )
            th.wait_baseline(pid)                  # polling: the first poll starts nothing
            fake.add_message("hello")
            runs = th.wait_runs(pid, 1)            # exactly one run, its input the item's data
            assert runs[0]["input"]["text"] == "hello"
            th.restart()                           # the same hosts again, same database
            th.wait_polls(pid, 2)
            assert len(th.runs(pid)) == 1          # nothing started twice
            th.disable(pid)                        # an instant trigger is unregistered upstream

``TriggerHosts(tmp_path, plugins=None, env=None, hosts=1, postgres=False)`` starts ``hosts``
in-process Levqor apps (each a :class:`~e2e_support.LiveServer` with workers and the
scheduler, so the poller runs on the leader) on one database: SQLite in ``tmp_path`` or, with
``postgres=True``, a fresh PostgreSQL database (skipped when PostgreSQL is not running, or
failed with ``LEVQOR_REQUIRE_SERVICES=1``; dropped afterwards). ``plugins`` adds plugin objects
beside the installed ones; ``env`` adds variables (``LEVQOR_<NAME>_API_BASE`` of the fake).
``LEVQOR_POLL_MIN_INTERVAL`` is 1, so a pipeline may poll every second.

What it offers: ``user`` and ``client`` (an API client of the first host, signed in as the
pipeline's owner), :meth:`add_credential`, :meth:`create_pipeline`, :meth:`enable`,
:meth:`disable`, :meth:`status`, :meth:`trigger_row`, :meth:`runs`, :meth:`wait_runs`
(waits for at least n app runs, then checks over two more polls that no more come),
:meth:`wait_baseline`, :meth:`wait_polls`, :meth:`webhook_url`, :meth:`deliver` (POSTs to an
instant trigger's webhook URL on any host), :meth:`post_to`, :meth:`restart`, :meth:`stop`.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_support import LiveServer, make_app, require_services

DEFAULT_PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_TIMEOUT = 60.0


def wait_for(pred: Any, timeout: float = DEFAULT_TIMEOUT, step: float = 0.1, what: str = "") -> Any:
    """``pred()`` once it is truthy; fails after ``timeout`` seconds, saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(step)


class _Postgres:
    """A fresh PostgreSQL database for one harness, dropped by :meth:`drop`."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import OperationalError

        server = os.environ.get("LEVQOR_TEST_PG_URL") or DEFAULT_PG_SERVER
        self.admin = create_engine(
            server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        self.name = f"levqor_trig_{secrets.token_hex(6)}"
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        except OperationalError:
            self.admin.dispose()
            message = "PostgreSQL not reachable: start it (service postgresql start) or set LEVQOR_TEST_PG_URL"
            if require_services():
                pytest.fail(message)
            pytest.skip(message)
        self.url = make_url(server).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


class TriggerHosts:
    """One or more Levqor hosts on one database, with an owner whose pipelines use app
    triggers (see the module's docstring)."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        plugins: list | None = None,
        env: dict[str, str] | None = None,
        hosts: int = 1,
        postgres: bool = False,
        email: str = "owner@example.com",
    ) -> None:
        self.tmp_path = Path(tmp_path)
        self.plugins = plugins
        self.n = hosts
        self._pg = _Postgres() if postgres else None
        self.env = {"LEVQOR_POLL_MIN_INTERVAL": "1", **(env or {})}
        if self._pg is not None:
            self.env["DATABASE_URL"] = self._pg.url
        self.hosts: list[LiveServer] = []
        self.email = email
        self.user: dict = {}
        self.key = ""
        self.start()

    # ------------------------------------------------------------------ hosts
    def _host(self, i: int) -> LiveServer:
        app = make_app(
            self.tmp_path,
            env=self.env,
            plugins=self.plugins,
            start_scheduler=True,
            executor={"workers": 2},
        )
        return LiveServer(app)

    def start(self) -> None:
        """Start the hosts (a new owner and API key the first time)."""
        self.hosts = [self._host(i) for i in range(self.n)]
        if not self.user:
            self.user, self.key = self.hosts[0].user_with_key(
                self.email, scopes=["pipelines:read", "pipelines:write", "runs:execute",
                                    "credentials:write"],
            )  # fmt: skip

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()
        self.hosts = []

    def restart(self) -> None:
        """Stop every host and start as many again on the same database (a deploy)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._pg is not None:
            self._pg.drop()
            self._pg = None

    def __enter__(self) -> TriggerHosts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def state(self) -> Any:
        """The first host's services."""
        return self.hosts[0].state

    @property
    def client(self) -> Any:
        return self.hosts[0].client(self.key)

    # ------------------------------------------------------------------ the owner's things
    def add_credential(self, name: str, connector: str, values: dict) -> dict:
        r = self.client.post(
            "/api/v1/credentials", json={"name": name, "connector": connector, "values": values}
        )
        assert r.status_code == 201, r.text
        return r.json()

    def create_pipeline(
        self, trigger: dict, steps: list | None = None, name: str = "app trigger"
    ) -> str:
        """Save a pipeline with ``trigger`` (enabled, so its trigger is live at once); its id.
        The default step echoes the item (``{{ trigger }}``)."""
        doc = {
            "levqor": 1,
            "name": name,
            "trigger": trigger,
            "steps": steps
            or [{"id": "echo", "connector": "core", "action": "transform",
                 "payload": {"value": "{{ trigger }}"}}],  # fmt: skip
        }
        r = self.client.post("/api/v1/pipelines", json={"pipeline": doc})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def enable(self, pipeline_id: str) -> dict:
        """Switch the pipeline on (``POST /api/v1/pipelines/<id>/enable``); the pipeline."""
        r = self.client.post(f"/api/v1/pipelines/{pipeline_id}/enable")
        assert r.status_code == 200, r.text
        return r.json()

    def disable(self, pipeline_id: str) -> dict:
        """Switch the pipeline off (``POST /api/v1/pipelines/<id>/disable``); the pipeline."""
        r = self.client.post(f"/api/v1/pipelines/{pipeline_id}/disable")
        assert r.status_code == 200, r.text
        return r.json()

    def status(self, pipeline_id: str) -> dict | None:
        return self.state.triggers.status(pipeline_id)

    def trigger_row(self, pipeline_id: str) -> dict | None:
        return self.state.store.triggers.get_by_pipeline(pipeline_id)

    def webhook_url(self, pipeline_id: str, host: int = 0) -> str:
        """An instant trigger's webhook URL, on host ``host`` (every host takes deliveries)."""
        status = self.status(pipeline_id)
        assert status is not None and status["webhook_url"], status
        base = self.state.config.base_url
        return status["webhook_url"].replace(base, self.hosts[host].url, 1)

    def deliver(
        self, pipeline_id: str, body: bytes | dict, headers: dict[str, str] | None = None,
        host: int = 0,
    ) -> requests.Response:  # fmt: skip
        """POST a delivery to the pipeline's webhook URL on host ``host``, as the upstream."""
        return self.post_to(self.webhook_url(pipeline_id, host), body, headers)

    def post_to(
        self, url: str, body: bytes | dict, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """POST ``body`` (bytes as they are, else JSON) to ``url``: a path (``/hooks/apps/x``) is
        on the first host."""
        if url.startswith("/"):
            url = self.hosts[0].url + url
        data = body if isinstance(body, bytes) else None
        return requests.post(
            url, data=data, json=None if data is not None else body, headers=headers or {},
            timeout=30,
        )  # fmt: skip

    # ------------------------------------------------------------------ runs
    def runs(self, pipeline_id: str) -> list[dict]:
        """The pipeline's runs started by its app trigger, oldest first (each host sees all)."""
        found, _ = self.state.store.runs.list(self.user["id"], pipeline_id=pipeline_id, limit=1000)
        return sorted(
            (r for r in found if r["trigger"] == "app"), key=lambda r: (r["created_at"], r["id"])
        )

    def wait_baseline(self, pipeline_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Wait for a polling trigger's first poll (its baseline); the trigger row."""
        return wait_for(
            lambda: (t := self.trigger_row(pipeline_id)) is not None and t["state"] is not None and t,
            timeout, what=f"the first poll of {pipeline_id}",
        )  # fmt: skip

    def wait_polls(self, pipeline_id: str, polls: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the trigger was polled ``polls`` more times (successfully or not)."""
        for _ in range(polls):
            before = (self.trigger_row(pipeline_id) or {}).get("last_polled_at")
            wait_for(
                lambda b=before: (self.trigger_row(pipeline_id) or {}).get("last_polled_at") not in (None, b),
                timeout, what=f"a poll of {pipeline_id}",
            )  # fmt: skip

    def wait_runs(
        self, pipeline_id: str, n: int, timeout: float = DEFAULT_TIMEOUT, settle_polls: int = 2,
        final: bool = True,
    ) -> list[dict]:  # fmt: skip
        """Wait for ``n`` app runs of the pipeline (and, with ``final``, for each to finish);
        then, for a polling trigger, ``settle_polls`` more polls, and check it is still
        exactly ``n``. The runs, oldest first."""
        wait_for(lambda: len(self.runs(pipeline_id)) >= n, timeout, what=f"{n} runs of {pipeline_id}")
        row = self.trigger_row(pipeline_id)
        if row is not None and row["kind"] == "polling" and settle_polls:
            self.wait_polls(pipeline_id, settle_polls, timeout)
        if final:
            wait_for(
                lambda: all(r["status"] in ("succeeded", "failed", "cancelled") for r in self.runs(pipeline_id)),
                timeout, what=f"the runs of {pipeline_id} to finish",
            )  # fmt: skip
        runs = self.runs(pipeline_id)
        assert len(runs) == n, [r["input"] for r in runs]
        return runs
