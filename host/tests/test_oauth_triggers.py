"""A polling app trigger on a connected (OAuth2) account: a poll that gets 401 refreshes the
token once and polls again; a refused refresh token marks the credential broken, pauses the
trigger and starts nothing; connecting the account again resumes it. Real hosts with the
scheduler's poller (tests/trigger_support.py) against the fake authorization server and the
connector's fake API (tests/oauth_support.py)."""

from __future__ import annotations

import pytest
from levqor_kernel.oauth import credential_from_token
from oauth_support import Acme, acme_fakes, connect, signed_in
from trigger_support import TriggerHosts, wait_for

# scripts/test-backends runs this file again on PostgreSQL, embedded and with Celery
pytestmark = [pytest.mark.backends, pytest.mark.workers]

TRIGGER = {"type": "app", "connector": "acme", "trigger": "new_item", "credential": "acme-main",
           "config": {}, "interval": 1}  # fmt: skip


def test_a_poll_refreshes_once_after_a_401_and_a_refused_token_pauses_the_trigger(tmp_path):
    with acme_fakes() as (auth, api, env), TriggerHosts(
        tmp_path, plugins=[("acme", Acme())], env=env
    ) as th:
        store = th.state.store
        spec = th.state.pm.catalog.get("acme").oauth2
        store.credentials.connect(th.user["id"], "acme-main", "acme", credential_from_token(auth.issue(), spec))
        pid = th.create_pipeline(TRIGGER)
        th.wait_baseline(pid)

        # the provider expired the token: the next poll gets 401, refreshes once, polls again
        auth.expire_access_tokens()
        api.add_item()
        runs = th.wait_runs(pid, 1)
        assert runs[0]["input"] == {"n": 1}
        assert auth.refreshes == 1 and api.refused >= 1
        assert th.trigger_row(pid)["status"] == "active"

        # the account's access is revoked: the trigger pauses, nothing starts, the credential is broken
        auth.revoke()
        api.add_item()
        row = wait_for(lambda: (t := th.trigger_row(pid))["status"] == "paused" and t, what="paused")
        assert "connected again" in row["last_error"]["message"]
        assert store.credentials.by_name(th.user["id"], "acme-main")["status"] == "broken"
        assert len(th.runs(pid)) == 1

        # connecting the account again resumes the trigger, and the item waiting upstream runs
        c, _user, _csrf = signed_in(th.hosts[0], "", user=th.user)
        assert connect(c, "acme-main").status_code == 302
        assert store.credentials.by_name(th.user["id"], "acme-main")["status"] is None
        wait_for(lambda: th.trigger_row(pid)["status"] == "active", what="resumed")
        runs = th.wait_runs(pid, 2)
        assert runs[1]["input"] == {"n": 2}
