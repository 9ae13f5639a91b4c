"""Telegram's and Slack's new_message triggers end to end: real Levqor hosts, the connectors'
fakes sending real deliveries (and answering getUpdates), one run per new message across a
restart and across two hosts sharing PostgreSQL; disabling a pipeline unregisters its
instant trigger."""

from __future__ import annotations

import pytest
import requests
from levqor_slack.fake import FakeSlack
from levqor_telegram.fake import FakeTelegram
from trigger_support import TriggerHosts, wait_for

TOPOLOGIES = pytest.mark.parametrize(
    ("hosts", "postgres"), [(1, False), (2, True)], ids=["restart", "two-hosts-pg"]
)


def _texts(runs: list[dict]) -> list[str]:
    return [r["input"]["text"] for r in runs]


# ---------------------------------------------------------------- Telegram, instant


@TOPOLOGIES
def test_telegram_new_message_webhook(tmp_path, hosts: int, postgres: bool) -> None:
    with FakeTelegram() as tg:
        tg.push_message(tg.PRIVATE_CHAT, "before the pipeline")  # never a run
        env = {"LEVQOR_TELEGRAM_API_BASE": tg.url}
        with TriggerHosts(tmp_path, env=env, hosts=hosts, postgres=postgres) as th:
            th.add_credential("bot", "telegram", {"bot_token": tg.token})
            pid = th.create_pipeline(
                {"type": "app", "connector": "telegram", "trigger": "new_message",
                 "credential": "bot", "config": {"updates": ["message"]}}
            )  # fmt: skip
            # enabling set the bot's webhook to the host's URL for this trigger, with a secret
            token_path = th.status(pid)["webhook_url"].split("/hooks/", 1)[1]
            assert tg.webhook["url"].endswith("/hooks/" + token_path)
            assert tg.webhook["secret_token"] and list(tg.pending) == []

            def route_to(host: int) -> None:
                # the public URL reaches host `host` (a load balancer in front of the hosts)
                tg.routes = {th.state.config.base_url: th.hosts[host].url}

            route_to(0)
            one = tg.push_message(tg.PRIVATE_CHAT, "one")
            assert tg.deliveries[-1]["status"] == 200
            runs = th.wait_runs(pid, 1)
            assert runs[0]["input"]["update_id"] == one["update_id"]
            assert runs[0]["input"]["chat_id"] == tg.PRIVATE_CHAT
            assert runs[0]["status"] == "succeeded"
            shown = th.client.get(f"/api/v1/runs/{runs[0]['id']}")
            assert shown.status_code == 200 and tg.token not in shown.text
            shown = th.client.get(f"/api/v1/pipelines/{pid}")
            assert shown.status_code == 200 and tg.webhook["secret_token"] not in shown.text
            # Telegram retries a delivery it did not see answered: on the other host too
            route_to(hosts - 1)
            assert tg.resend(one) == 200
            assert len(th.runs(pid)) == 1
            tg.push_message(tg.PRIVATE_CHAT, "two")
            assert _texts(th.wait_runs(pid, 2)) == ["one", "two"]
            # a delivery without the registration's secret is refused and starts nothing
            r = requests.post(
                th.webhook_url(pid, 0), json={**one, "update_id": one["update_id"] + 100},
                headers={"X-Telegram-Bot-Api-Secret-Token": "forged"}, timeout=30,
            )  # fmt: skip
            assert r.status_code == 401 and len(th.runs(pid)) == 2

            th.restart()  # the same hosts again on the same database
            route_to(0)
            assert tg.resend(one) == 200
            tg.push_message(tg.PRIVATE_CHAT, "three")
            assert _texts(th.wait_runs(pid, 3)) == ["one", "two", "three"]

            th.disable(pid)  # the webhook is deleted at Telegram
            assert tg.webhook == {"url": ""}
            tg.push_message(tg.PRIVATE_CHAT, "after")  # waits for getUpdates, goes nowhere
            assert len(th.runs(pid)) == 3


# ---------------------------------------------------------------- Telegram, polling


@TOPOLOGIES
def test_telegram_new_message_polling(tmp_path, hosts: int, postgres: bool) -> None:
    with FakeTelegram() as tg:
        tg.push_message(tg.PRIVATE_CHAT, "old")  # in the baseline: never a run
        env = {"LEVQOR_TELEGRAM_API_BASE": tg.url}
        with TriggerHosts(tmp_path, env=env, hosts=hosts, postgres=postgres) as th:
            th.add_credential("bot", "telegram", {"bot_token": tg.token})
            pid = th.create_pipeline(
                {"type": "app", "connector": "telegram", "trigger": "new_message_polling",
                 "credential": "bot", "config": {}, "interval": 1}
            )  # fmt: skip
            th.wait_baseline(pid)
            tg.push_message(tg.PRIVATE_CHAT, "a")
            tg.push_message(tg.PRIVATE_CHAT, "b")
            runs = th.wait_runs(pid, 2)
            assert _texts(runs) == ["a", "b"]
            assert all(r["status"] == "succeeded" for r in runs)
            th.restart()
            th.wait_polls(pid, 2)
            assert len(th.runs(pid)) == 2  # nothing started twice
            tg.push_message(tg.PRIVATE_CHAT, "c")
            assert _texts(th.wait_runs(pid, 3)) == ["a", "b", "c"]
            assert list(tg.pending) == []  # the polls after "c" confirmed it at Telegram


# ---------------------------------------------------------------- Slack, Events API


def _slack_credential(slack: FakeSlack) -> dict:
    return {
        "auth": "oauth2",
        "access_token": slack.bot_token,
        "token_type": "bot",
        "scope": ",".join(sorted(slack.scopes)),
        "account": slack.team_name,
        "team_id": slack.team,
        "team_name": slack.team_name,
        "bot_user_id": slack.bot_user_id,
    }


@TOPOLOGIES
def test_slack_new_message_events(tmp_path, hosts: int, postgres: bool) -> None:
    with FakeSlack(team="T0LEVQOR01") as slack:
        env = {
            "LEVQOR_SLACK_API_BASE": slack.url,
            "LEVQOR_SLACK_SIGNING_SECRET": slack.signing_secret,
        }
        with TriggerHosts(tmp_path, env=env, hosts=hosts, postgres=postgres) as th:
            th.add_credential("slack-app", "slack", _slack_credential(slack))
            # a pipeline for #general that answers in the message's thread (its own post comes
            # back as an event and must not start it again), one for every channel
            general = th.create_pipeline(
                {"type": "app", "connector": "slack", "trigger": "new_message",
                 "credential": "slack-app", "config": {"channel": slack.GENERAL}},
                steps=[{"id": "answer", "connector": "slack", "action": "post_message",
                        "credential": "slack-app",
                        "payload": {"channel": "{{ trigger.channel }}",
                                    "thread_ts": "{{ trigger.ts }}", "text": "On it"}}],
                name="general",
            )  # fmt: skip
            anywhere = th.create_pipeline(
                {"type": "app", "connector": "slack", "trigger": "new_message",
                 "credential": "slack-app", "config": {}},
                name="anywhere",
            )  # fmt: skip
            assert slack.requests == []  # enabling calls nothing at Slack: the route is ours

            def events_url(host: int) -> str:
                return th.hosts[host].url + "/hooks/apps/slack"

            # the operator sets the app's Request URL: Slack's challenge is answered
            assert slack.set_request_url(events_url(0)) is True

            one = slack.post_user_message(slack.GENERAL, "deploy api?")
            assert one["status"] == 200
            [run] = th.wait_runs(general, 1)
            assert run["input"]["text"] == "deploy api?" and run["input"]["channel"] == slack.GENERAL
            assert run["status"] == "succeeded"
            assert th.wait_runs(anywhere, 1)[0]["input"]["ts"] == one["event"]["ts"]
            # the answer was posted in the thread, and its event started nothing
            wait_for(lambda: slack.posted, what="the pipeline's answer")
            assert slack.posted[0]["thread_ts"] == one["event"]["ts"]
            # the bot token and the signing secret appear in no run record or API answer
            shown = th.client.get(f"/api/v1/runs/{run['id']}")
            assert shown.status_code == 200 and shown.json()["steps"]
            assert slack.bot_token not in shown.text and slack.signing_secret not in shown.text
            assert any(d["body"].get("event", {}).get("bot_id") for d in slack.event_deliveries)
            assert len(th.runs(general)) == 1 and len(th.runs(anywhere)) == 1

            # Slack retries the event at another host: nothing starts twice
            slack.request_url = events_url(hosts - 1)
            _env, status = slack.send_event(one["event"], event_id=one["event_id"], retry_num=1)
            assert status == 200
            assert len(th.runs(general)) == 1 and len(th.runs(anywhere)) == 1
            # a private channel reaches only the pipeline for every channel
            slack.post_user_message(slack.PRIVATE, "psst")
            assert _texts(th.wait_runs(anywhere, 2)) == ["deploy api?", "psst"]
            assert len(th.runs(general)) == 1
            # a forged request is refused
            r = requests.post(
                events_url(0), data=b'{"type": "event_callback"}',
                headers={**slack.sign(b"{}"), "Content-Type": "application/json"}, timeout=30,
            )  # fmt: skip
            assert r.status_code == 401

            th.restart()
            slack.request_url = events_url(0)
            slack.send_event(one["event"], event_id=one["event_id"], retry_num=2)
            slack.post_user_message(slack.GENERAL, "and web?")
            assert _texts(th.wait_runs(general, 2)) == ["deploy api?", "and web?"]
            assert len(th.wait_runs(anywhere, 3)) == 3

            th.disable(general)  # its route is dropped; the app's subscription stays
            slack.post_user_message(slack.GENERAL, "anyone?")
            assert len(th.wait_runs(anywhere, 4)) == 4
            assert len(th.runs(general)) == 2
