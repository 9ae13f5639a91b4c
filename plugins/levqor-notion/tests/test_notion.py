"""levqor-notion against its fake Notion API over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import levqor_notion
import pytest
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import ConnectorContract
from levqor_notion.fake import FakeNotion

TOKEN = "ntn_secret_abcdef123456"
DB = "d9824bdc-8445-4327-be8b-5b47500af6ce"


class TestContract(ConnectorContract):
    plugin = levqor_notion

    def credentials(self, base_url: str) -> dict:
        return {"token": TOKEN}

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_NOTION_API_BASE": base_url}


@pytest.fixture(scope="module")
def shared_notion() -> Iterator[FakeNotion]:
    # one server for the module: stopping a server takes up to 0.5 s (serve_forever's poll interval)
    with FakeNotion(token=TOKEN) as fake:
        fake.add_database(DB, title_property="Name", properties=["Status"])
        yield fake


@pytest.fixture
def notion(shared_notion: FakeNotion) -> FakeNotion:
    shared_notion.reset()
    return shared_notion


def ctx(
    fake: FakeNotion | None = None, *, timeout: float = 5.0, env: dict | None = None
) -> StepContext:
    e = {"LEVQOR_NOTION_API_BASE": fake.url} if fake is not None else {}
    return StepContext(
        run_id="r1", step_id="page", deadline=time.monotonic() + timeout, env={**e, **(env or {})}
    )


def run(fake: FakeNotion, payload: dict, creds: dict | None = None, **kw) -> dict:
    return levqor_notion.run_task(
        "notion",
        "create_page",
        payload,
        {"token": TOKEN} if creds is None else creds,
        ctx(fake, **kw),
    )


# ----------------------------------------------------------------------------- success


def test_creates_a_database_row_with_exact_wire_format(notion: FakeNotion) -> None:
    out = run(
        notion,
        {
            "parent": {"database_id": DB},
            "title": "Order 42",
            "properties": {"Status": {"select": {"name": "New"}}},
            "content": "First paragraph\n\nSecond paragraph",
        },
    )
    [req] = notion.requests
    assert req.method == "POST" and req.path == "/v1/pages"
    assert req.header("Authorization") == f"Bearer {TOKEN}"
    assert req.header("Notion-Version") == "2022-06-28"
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {
        "parent": {"database_id": DB},
        "properties": {
            "Status": {"select": {"name": "New"}},
            "Name": {"title": [{"type": "text", "text": {"content": "Order 42"}}]},
        },
        "children": [
            {
                "object": "block",
                "type": "paragraph",
                "paragraph": {
                    "rich_text": [{"type": "text", "text": {"content": "First paragraph"}}]
                },
            },
            {
                "object": "block",
                "type": "paragraph",
                "paragraph": {
                    "rich_text": [{"type": "text", "text": {"content": "Second paragraph"}}]
                },
            },
        ],
    }
    page = notion.pages[0]
    assert out == {
        "id": page["id"],
        "url": f"https://www.notion.so/{page['id'].replace('-', '')}",
        "created_time": out["created_time"],
    }
    assert out["created_time"].endswith("Z")


def test_custom_title_property_and_url_parent(notion: FakeNotion) -> None:
    db = notion.add_database(title_property="Task")
    url = (
        f"https://www.notion.so/acme/Tasks-{db.replace('-', '')}?v=0123456789abcdef0123456789abcdef"
    )
    run(notion, {"parent": {"database_id": url}, "title": "Ship it", "title_property": "Task"})
    body = notion.requests[-1].json()
    assert body["parent"] == {"database_id": db}
    assert body["properties"] == {
        "Task": {"title": [{"type": "text", "text": {"content": "Ship it"}}]}
    }
    assert "children" not in body


def test_page_parent_puts_title_in_properties_title(notion: FakeNotion) -> None:
    parent = notion.share_page()
    children = [
        {
            "object": "block",
            "type": "heading_2",
            "heading_2": {"rich_text": [{"type": "text", "text": {"content": "Notes"}}]},
        }
    ]
    run(
        notion,
        {
            "parent": {"page_id": parent.replace("-", "")},
            "title": "Meeting",
            "children": children,
            "content": "Body",
        },
    )
    body = notion.requests[-1].json()
    assert body["parent"] == {"page_id": parent}
    assert body["properties"] == {
        "title": {"title": [{"type": "text", "text": {"content": "Meeting"}}]}
    }
    assert body["children"][0] == children[0]
    assert body["children"][1]["paragraph"]["rich_text"][0]["text"]["content"] == "Body"
    assert FakeNotion.title_of(notion.pages[0]) == "Meeting"


def test_long_content_is_split_into_2000_char_blocks(notion: FakeNotion) -> None:
    text = "a" * 4500
    run(notion, {"parent": {"database_id": DB}, "title": "Long", "content": text})
    children = notion.requests[-1].json()["children"]
    sizes = [len(c["paragraph"]["rich_text"][0]["text"]["content"]) for c in children]
    assert sizes == [2000, 2000, 500]
    assert len(notion.pages) == 1  # the fake accepted it: each rich text is within Notion's limit


def test_title_only_via_raw_properties(notion: FakeNotion) -> None:
    props = {"Name": {"title": [{"text": {"content": "Raw"}}]}}
    run(notion, {"parent": {"database_id": DB}, "properties": props})
    assert notion.requests[-1].json()["properties"] == props


# ----------------------------------------------------------------------------- payload rules


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (
            {"parent": {"page_id": "0" * 32}, "title": "x", "properties": {"Status": {}}},
            "can only have a title",
        ),
        ({"parent": {"database_id": DB}}, "give a title"),
        (
            {"parent": {"database_id": DB}, "title": "x", "properties": {"Name": {"title": []}}},
            "not both",
        ),
        (
            {"parent": {"database_id": "not-an-id-at-all-not-an-id-at-all"}, "title": "x"},
            "no Notion id",
        ),
        (
            {"parent": {"database_id": DB}, "title": "x", "content": "\n\n".join(["p"] * 101)},
            "at most 100",
        ),
        (
            {"parent": {"page_id": "0" * 32}, "title": "x", "title_property": "Task"},
            "database parent",
        ),
    ],
)
def test_cross_field_rules(notion: FakeNotion, payload: dict, fragment: str) -> None:
    problems = levqor_notion.validate_payload("notion", "create_page", payload)
    assert problems and any(fragment in p for p in problems), problems
    with pytest.raises(PayloadError) as e:
        run(notion, payload)
    assert fragment in str(e.value)
    assert notion.requests == []  # nothing was sent


def test_schema_and_example_are_valid() -> None:
    pm = make_plugin_manager(
        entry_points=False, builtins=False, plugins=[("notion", levqor_notion)]
    )
    assert not pm.failures
    action = pm.catalog.action("notion", "create_page")
    assert pm.catalog.validate_payload("notion", "create_page", action.example) == []
    assert levqor_notion.validate_payload("notion", "create_page", action.example) == []
    assert pm.catalog.validate_payload(
        "notion", "create_page", {"parent": {"database_id": DB, "page_id": DB}}
    )
    assert (
        pm.catalog.get("notion").credentials["anyOf"][0]["properties"]["token"]["writeOnly"] is True
    )


def test_unknown_action() -> None:
    with pytest.raises(PayloadError):
        levqor_notion.run_task("notion", "delete_everything", {}, {"token": TOKEN}, ctx())


# ----------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "creds", [None, {}, {"token": ""}, {"token": "has space in it"}, {"token": 12345678}]
)
def test_bad_credentials_fail_before_any_request(notion: FakeNotion, creds) -> None:
    with pytest.raises(CredentialError):
        levqor_notion.run_task(
            "notion",
            "create_page",
            {"parent": {"database_id": DB}, "title": "x"},
            creds,
            ctx(notion),
        )
    assert notion.requests == []


def test_wrong_token_is_a_credential_error_without_leaking(notion: FakeNotion) -> None:
    with pytest.raises(CredentialError) as e:
        run(
            notion,
            {"parent": {"database_id": DB}, "title": "x"},
            creds={"token": "ntn_wrong_token_999999"},
        )
    assert "unauthorized" in str(e.value) and "API token is invalid" in str(e.value)
    assert "ntn_wrong_token_999999" not in str(e.value)


def test_check_credentials(notion: FakeNotion) -> None:
    out = levqor_notion.check_credentials("notion", {"token": TOKEN}, ctx(notion))
    assert out == {"ok": True, "account": "Levqor test", "bot_id": notion.bot_id, "type": "bot"}
    req = notion.requests[-1]
    assert (req.method, req.path, req.header("Notion-Version")) == (
        "GET",
        "/v1/users/me",
        "2022-06-28",
    )
    with pytest.raises(CredentialError):
        levqor_notion.check_credentials("notion", {"token": "ntn_other_token_1234"}, ctx(notion))


# ----------------------------------------------------------------------------- documented errors


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "validation_error", PayloadError),
        (400, "invalid_json", PayloadError),
        (400, "missing_version", PermanentError),
        (401, "unauthorized", CredentialError),
        (403, "restricted_resource", CredentialError),
        (404, "object_not_found", PermanentError),
        (409, "conflict_error", RetryableError),
        (500, "internal_server_error", RetryableError),
        (503, "service_unavailable", RetryableError),
        (503, "database_connection_unavailable", RetryableError),
        (504, "gateway_timeout", RetryableError),
    ],
)
def test_documented_errors(notion: FakeNotion, status: int, code: str, cls: type) -> None:
    notion.fail_next(status, code, f"explained {code}")
    with pytest.raises(cls) as e:
        run(notion, {"parent": {"database_id": DB}, "title": "x"})
    assert type(e.value) is cls
    assert e.value.status == status
    assert f"{code}: explained {code}" in str(e.value)
    assert TOKEN not in str(e.value)
    if code == "object_not_found":
        assert "shared with your integration" in str(e.value)


def test_real_validation_error_from_fake(notion: FakeNotion) -> None:
    with pytest.raises(PayloadError) as e:
        run(
            notion,
            {
                "parent": {"database_id": DB},
                "title": "x",
                "properties": {"Nope": {"select": {"name": "a"}}},
            },
        )
    assert "Nope is not a property that exists" in str(e.value)


def test_database_not_shared_is_permanent(notion: FakeNotion) -> None:
    with pytest.raises(PermanentError) as e:
        run(notion, {"parent": {"database_id": "1" * 32}, "title": "x"})
    assert (
        not isinstance(e.value, RetryableError)
        and e.value.status == 404
        and e.value.code == "object_not_found"
    )


def test_rate_limit_keeps_retry_after(notion: FakeNotion) -> None:
    notion.fail_next(429, retry_after=7)
    with pytest.raises(RetryableError) as e:
        run(notion, {"parent": {"database_id": DB}, "title": "x"})
    assert e.value.retry_after == 7 and e.value.status == 429
    assert "rate_limited" in str(e.value)


def test_5xx_then_success(notion: FakeNotion) -> None:
    notion.fail_next(503)
    payload = {"parent": {"database_id": DB}, "title": "retry me"}
    with pytest.raises(RetryableError):
        run(notion, payload)
    assert notion.pages == []
    out = run(notion, payload)
    assert [p["id"] for p in notion.pages] == [out["id"]]
    assert len(notion.requests) == 2


def test_timeout_is_retryable(notion: FakeNotion) -> None:
    notion.delay_next(1.5)
    with pytest.raises(RetryableError) as e:  # the client's deadline, not the late answer
        run(notion, {"parent": {"database_id": DB}, "title": "slow"}, timeout=0.5)
    assert e.value.code == "timeout"


@pytest.mark.parametrize(
    "body", [b"<html>oops</html>", {"object": "list", "results": []}, {"ok": True}]
)
def test_malformed_success_fails_closed(notion: FakeNotion, body) -> None:
    notion.fail_next(
        200, body=body, headers={"Content-Type": "text/html"} if isinstance(body, bytes) else None
    )
    with pytest.raises(PermanentError) as e:
        run(notion, {"parent": {"database_id": DB}, "title": "x"})
    assert not isinstance(e.value, RetryableError)


# ----------------------------------------------------------------------------- SSRF


def test_user_supplied_api_base_is_guarded(notion: FakeNotion) -> None:
    creds = {"token": TOKEN, "api_base": notion.url}
    c = StepContext(run_id="r", step_id="s", deadline=time.monotonic() + 5, env={})
    with pytest.raises(BlockedURLError):
        levqor_notion.run_task(
            "notion", "create_page", {"parent": {"database_id": DB}, "title": "x"}, creds, c
        )
    assert notion.requests == []
    # an operator allow-list lets it through
    c2 = StepContext(
        run_id="r",
        step_id="s",
        deadline=time.monotonic() + 5,
        env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"},
    )
    out = levqor_notion.run_task(
        "notion", "create_page", {"parent": {"database_id": DB}, "title": "x"}, creds, c2
    )
    assert out["id"] == notion.pages[0]["id"]


def test_normalize_id() -> None:
    h = "d9824bdc84454327be8b5b47500af6ce"
    assert levqor_notion.normalize_id(h) == DB
    assert levqor_notion.normalize_id(DB.upper()) == DB
    assert levqor_notion.normalize_id(f"https://www.notion.so/ws/My-Page-{h}#abc") == DB
    assert levqor_notion.normalize_id("https://www.notion.so/ws/no-id") is None


def test_create_page_is_marked_as_writing_upstream():
    (desc,) = levqor_notion.describe_schema()
    assert desc["actions"]["create_page"]["writes"] is True
