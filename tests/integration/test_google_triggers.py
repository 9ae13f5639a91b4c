"""Google Sheets' new_row and Gmail's new_email triggers end to end: real Levqor hosts poll the
connectors' fakes, one run per new item, across a restart and across two hosts sharing
PostgreSQL."""

from __future__ import annotations

import pytest
from levqor_gmail.fake import READ_SCOPE, SEND_SCOPE, FakeGmail
from levqor_sheets.fake import FakeGoogleSheets
from trigger_support import TriggerHosts

SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
ACME = "Acme Billing <billing@acme.example>"
#: one host restarted on SQLite; two hosts sharing a PostgreSQL database
HOSTS = [
    pytest.param(1, False, id="restart"),
    pytest.param(2, True, id="two-hosts-pg", marks=pytest.mark.services),
]


def _sheets_pipeline(th: TriggerHosts, google: FakeGoogleSheets) -> str:
    th.add_credential("google-bot", "sheets", google.service_account())
    return th.create_pipeline(
        {
            "type": "app",
            "connector": "sheets",
            "trigger": "new_row",
            "credential": "google-bot",
            "config": {"spreadsheet_id": SHEET_ID, "sheet": "Orders"},
            "interval": 1,
        }
    )


@pytest.mark.parametrize(("hosts", "postgres"), HOSTS)
def test_sheets_new_row_starts_one_run_per_row(tmp_path, hosts: int, postgres: bool) -> None:
    with FakeGoogleSheets() as google:
        google.add_spreadsheet(SHEET_ID, ["Orders"])
        google.set_rows(SHEET_ID, "Orders", [["Order", "Email"], ["A-0", "old@x.example"]])
        env = {"LEVQOR_SHEETS_API_BASE": google.url, "LEVQOR_SSRF_ALLOW": "127.0.0.1"}
        with TriggerHosts(tmp_path, env=env, hosts=hosts, postgres=postgres) as th:
            pid = _sheets_pipeline(th, google)
            th.wait_baseline(pid)  # the row already there starts nothing
            google.add_row(SHEET_ID, "Orders", ["A-1", "ada@x.example"])
            google.add_row(SHEET_ID, "Orders", ["A-2", "grace@x.example"])
            runs = th.wait_runs(pid, 2)
            assert [r["input"] for r in runs] == [
                {"row_number": 3, "Order": "A-1", "Email": "ada@x.example"},
                {"row_number": 4, "Order": "A-2", "Email": "grace@x.example"},
            ]
            assert all(r["status"] == "succeeded" for r in runs)
            th.restart()  # the same hosts again on the same database
            th.wait_polls(pid, 2)
            assert len(th.runs(pid)) == 2  # nothing started twice
            google.add_row(SHEET_ID, "Orders", ["A-3", "linus@x.example"])
            runs = th.wait_runs(pid, 3)
            assert runs[-1]["input"]["Order"] == "A-3"


def _gmail_pipeline(th: TriggerHosts, gmail: FakeGmail) -> str:
    th.add_credential("mailbox", "gmail", {"google_access_token": gmail.token})
    return th.create_pipeline(
        {
            "type": "app",
            "connector": "gmail",
            "trigger": "new_email",
            "credential": "mailbox",
            "config": {"q": "from:billing@acme.example subject:invoice", "label": "INBOX"},
            "interval": 1,
        }
    )


@pytest.mark.parametrize(("hosts", "postgres"), HOSTS)
def test_gmail_new_email_starts_one_run_per_matching_message(
    tmp_path, hosts: int, postgres: bool
) -> None:
    with FakeGmail(scopes=(SEND_SCOPE, READ_SCOPE), email_address="ada@example.com") as gmail:
        gmail.deliver(ACME, "Invoice 0")  # before the trigger: never a run
        env = {"LEVQOR_GMAIL_API_BASE": gmail.url}
        with TriggerHosts(tmp_path, env=env, hosts=hosts, postgres=postgres) as th:
            pid = _gmail_pipeline(th, gmail)
            th.wait_baseline(pid)
            first = gmail.deliver(ACME, "Invoice 1", text="Attached.")
            gmail.deliver("Grace <grace@example.com>", "Invoice from Grace")  # not from Acme
            second = gmail.deliver(ACME, "Invoice 2")
            runs = th.wait_runs(pid, 2)
            assert [r["input"]["id"] for r in runs] == [first, second]
            assert runs[0]["input"]["subject"] == "Invoice 1"
            assert runs[0]["input"]["snippet"] == "Attached."
            th.restart()
            th.wait_polls(pid, 2)
            assert len(th.runs(pid)) == 2
            third = gmail.deliver(ACME, "Invoice 3")
            assert th.wait_runs(pid, 3)[-1]["input"]["id"] == third
