"""An app trigger's secrets (the registration secret the host generates for an instant
trigger, the credential a poll uses) never reach an API answer, a log line or a file in the
data folder, even when the upstream echoes the refused credential in its error."""

from __future__ import annotations

import logging

from feeds_fake import Feeds, FeedsUpstream
from trigger_support import TriggerHosts, wait_for


def test_trigger_secrets_never_appear_anywhere(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    key = "feeds-key-" + "k" * 24
    with FeedsUpstream(key=key) as up, TriggerHosts(
        tmp_path, plugins=[Feeds()], env={"LEVQOR_FEEDS_API_BASE": up.url}
    ) as th:
        th.add_credential("feeds", "feeds", {"key": key})
        instant = th.create_pipeline(
            {"type": "app", "connector": "feeds", "trigger": "pushed", "credential": "feeds",
             "config": {"list": "inbox"}}  # fmt: skip
        )
        polling = th.create_pipeline(
            {"type": "app", "connector": "feeds", "trigger": "new_item", "credential": "feeds",
             "config": {"list": "inbox"}, "interval": 1}  # fmt: skip
        )
        th.wait_baseline(polling)
        up.key = "rotated-" + "r" * 24  # the stored key is now refused, and echoed in the error
        wait_for(lambda: th.trigger_row(polling)["failures"] >= 2, what="two failed polls")
        [secret] = [w["secret"] for w in up.webhooks.values()]
        answers = [th.client.get("/api/v1/pipelines").text]
        for pid in (instant, polling):
            answers.append(th.client.get(f"/api/v1/pipelines/{pid}").text)
            answers.append(str(th.status(pid)))
        answers.append(th.client.get("/api/v1/credentials").text)
        # testing the trigger (saved, or as the builder sends it) answers the upstream's refusal
        tested = th.client.post(f"/api/v1/pipelines/{polling}/trigger/test", json={})
        assert tested.status_code == 400 or tested.status_code == 422, tested.text
        assert "bad key" in tested.text  # the echo reached the answer, its key did not
        answers.append(tested.text)
        trigger = th.client.get(f"/api/v1/pipelines/{polling}").json()["pipeline"]["trigger"]
        answers.append(th.client.post("/api/v1/triggers/test", json={"trigger": trigger}).text)
        assert "bad key" in th.status(polling)["last_error"]["message"]  # the echo was seen
        leaks = [secret, key]
        for text in answers:
            for s in leaks:
                assert s not in text, text[:300]
        for rec in caplog.records:
            line = rec.getMessage() + (str(rec.exc_info[1]) if rec.exc_info else "")
            for s in leaks:
                assert s not in line, (rec.name, line[:300])
        th.stop()  # the database and the logs written out
        for path in (p for p in (tmp_path / "data").rglob("*") if p.is_file()):
            blob = path.read_bytes()
            for s in leaks:
                assert s.encode() not in blob, str(path)
