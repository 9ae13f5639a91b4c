"""The contract kit's trigger and OAuth2 checks, run against FakeNotion."""

from __future__ import annotations

from typing import Any

import levqor_notion
from levqor_kernel.oauth import sample_oauth_credentials
from levqor_kernel.testing import OAuthContract, PollingTriggerContract, Reply
from levqor_notion.fake import FakeNotion, error_body

TOKEN = "ntn_contract_token_123456"
#: the database the description's examples name
DB = "d9824bdc-8445-4327-be8b-5b47500af6ce"
PAGE = "59833787-2cf9-4fdf-8782-e53db20768a5"


class NotionAdapter:
    plugin = levqor_notion
    connector = "notion"

    def fake(self) -> FakeNotion:
        fake = FakeNotion(token=TOKEN)
        fake.add_database(DB, properties={"Status": "select"})
        return fake

    def credentials(self, fake: FakeNotion) -> dict[str, Any]:
        return {"token": TOKEN}

    def env(self, fake: FakeNotion) -> dict[str, str]:
        return {"LEVQOR_NOTION_API_BASE": fake.url}

    def fail(self, fake: FakeNotion, status: int, retry_after: int | None = None) -> None:
        """Every request fails with Notion's own error body."""
        code = {401: "unauthorized", 429: "rate_limited"}.get(status, "service_unavailable")
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        fake.server.answer_all(Reply(status, error_body(code, status=status), headers))


class TestNewDatabaseItem(NotionAdapter, PollingTriggerContract):
    trigger = "new_database_item"

    def add_item(self, fake: FakeNotion) -> str:
        # a minute later: Notion's timestamps (the trigger's cursor) count whole minutes
        fake.advance(1)
        return fake.add_page(DB, {"Name": "contract row"})


class TestUpdatedDatabaseItem(NotionAdapter, PollingTriggerContract):
    trigger = "updated_database_item"

    def config(self, fake: FakeNotion) -> dict[str, Any]:
        return {"database_id": DB}

    def add_item(self, fake: FakeNotion) -> str:
        fake.advance(1)
        pid = fake.add_page(DB, {"Name": "contract row"})
        return f"{pid}@{fake.row(pid)['last_edited_time']}"


class TestNotionOAuth(NotionAdapter, OAuthContract):
    def fake(self) -> FakeNotion:
        fake = super().fake()
        fake.add_page(DB, {"Name": "x"}, page_id=PAGE)
        return fake

    def oauth_credentials(self, fake: FakeNotion) -> dict[str, Any]:
        return {**sample_oauth_credentials(), "access_token": TOKEN}

    def payload(self, fake: FakeNotion, action: str) -> dict[str, Any]:
        if action == "update_page":
            return {"page_id": PAGE, "properties": {"Status": {"select": {"name": "Done"}}}}
        return super().payload(fake, action)

    def token_response(self, fake: FakeNotion) -> dict[str, Any]:
        return {
            "access_token": TOKEN,
            "token_type": "bearer",
            "bot_id": fake.bot_id,
            "workspace_id": fake.workspace_id,
            "workspace_name": fake.workspace_name,
            "workspace_icon": None,
            "owner": {"type": "user", "user": {"object": "user", "id": "u1"}},
        }
