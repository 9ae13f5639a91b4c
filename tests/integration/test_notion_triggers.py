"""Notion's database triggers end to end: real hosts poll FakeNotion, one run per new item.

A pipeline starts from ``notion.new_database_item`` and marks each item it sees
(``notion.update_page``); rows added upstream start exactly one run each, across a restart of
the hosts and across two hosts sharing PostgreSQL (the poller runs on the scheduler's leader,
the item id is the run's idempotency key).
"""

from __future__ import annotations

import pytest
from levqor_notion.fake import FakeNotion
from trigger_support import TriggerHosts, wait_for

#: one host restarted on SQLite; two hosts sharing a PostgreSQL database
HOSTS = [
    pytest.param(1, False, id="restart"),
    pytest.param(2, True, id="two-hosts-pg", marks=pytest.mark.services),
]
TOKEN = "ntn_e2e_token_1234567890"
COLUMNS = {"Status": "select", "Count": "number"}


def _pipeline(th: TriggerHosts, db: str, trigger: str = "new_database_item") -> str:
    th.add_credential("notion", "notion", {"token": TOKEN})
    return th.create_pipeline(
        {
            "type": "app",
            "connector": "notion",
            "trigger": trigger,
            "credential": "notion",
            "config": {"database_id": db},
            "interval": 1,
        },
        steps=[
            {
                "id": "mark",
                "connector": "notion",
                "action": "update_page",
                "credential": "notion",
                "payload": {
                    "page_id": "{{ trigger.id }}",
                    "properties": {"Status": {"select": {"name": "Seen {{ trigger.title }}"}}},
                },
            }
        ],
        name=f"notion {trigger}",
    )


def _check_runs(runs: list[dict], fake: FakeNotion, rows: list[str]) -> None:
    assert sorted(r["input"]["id"] for r in runs) == sorted(rows)
    assert all(r["status"] == "succeeded" for r in runs), [r["status"] for r in runs]
    for pid in rows:
        assert fake.values(pid)["Status"] == f"Seen {fake.values(pid)['Name']}"


def _scenario(th: TriggerHosts, fake: FakeNotion) -> None:
    db = fake.add_database(properties=COLUMNS)
    before = [fake.add_page(db, {"Name": f"old {i}"}) for i in range(3)]
    pid = _pipeline(th, db)
    th.wait_baseline(pid)  # the rows already there start nothing
    added = [
        fake.add_page(db, {"Name": "first", "Count": 1}),
        fake.add_page(db, {"Name": "second"}),
    ]
    runs = th.wait_runs(pid, 2)
    assert {r["input"]["title"] for r in runs} == {"first", "second"}
    assert runs[0]["input"]["properties"]["Name"] in ("first", "second")
    _check_runs(runs, fake, added)
    assert all(fake.values(p)["Status"] is None for p in before)

    th.restart()  # a deploy: the same database, new processes
    th.wait_polls(pid, 2)
    assert len(th.runs(pid)) == 2  # nothing started twice (the overlap brings them back)
    fake.advance(1)
    added.append(fake.add_page(db, {"Name": "third"}))
    runs = th.wait_runs(pid, 3)
    _check_runs(runs, fake, added)


@pytest.mark.parametrize(("hosts", "postgres"), HOSTS)
def test_new_database_item_starts_one_run_per_item(tmp_path, hosts: int, postgres: bool) -> None:
    with (
        FakeNotion(token=TOKEN) as fake,
        TriggerHosts(
            tmp_path, env={"LEVQOR_NOTION_API_BASE": fake.url}, hosts=hosts, postgres=postgres
        ) as th,
    ):
        _scenario(th, fake)


def test_updated_database_item_one_run_per_edit(tmp_path) -> None:
    with (
        FakeNotion(token=TOKEN) as fake,
        TriggerHosts(tmp_path, env={"LEVQOR_NOTION_API_BASE": fake.url}) as th,
    ):
        db = fake.add_database(properties=COLUMNS)
        row = fake.add_page(db, {"Name": "task", "Count": 1})
        th.add_credential("notion", "notion", {"token": TOKEN})
        pid = th.create_pipeline(
            {
                "type": "app",
                "connector": "notion",
                "trigger": "updated_database_item",
                "credential": "notion",
                "config": {"database_id": db, "include_new": False},
                "interval": 1,
            }
        )
        th.wait_baseline(pid)
        fake.advance(1)
        fake.edit_page(row, {"Count": 2})
        runs = th.wait_runs(pid, 1)
        assert runs[0]["input"]["id"] == row
        assert runs[0]["input"]["properties"]["Count"] == 2
        fake.advance(1)
        fake.edit_page(row, {"Count": 3})
        runs = th.wait_runs(pid, 2)
        assert sorted(r["input"]["properties"]["Count"] for r in runs) == [2, 3]
        wait_for(lambda: th.trigger_row(pid)["state"]["since"] == fake.row(row)["last_edited_time"])
