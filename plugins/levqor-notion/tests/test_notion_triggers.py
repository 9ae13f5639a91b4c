"""levqor-notion's database triggers, query and update actions, and OAuth2 against the fake."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import datetime

import levqor_notion
import pytest
import requests
from levqor_kernel.context import StepContext
from levqor_kernel.errors import CredentialError, PayloadError, PermanentError, RetryableError
from levqor_kernel.oauth import sample_oauth_credentials
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.triggers import as_poll
from levqor_notion.fake import FakeNotion

TOKEN = "ntn_secret_abcdef123456"
COLUMNS = {
    "Status": "select",
    "Tags": "multi_select",
    "Count": "number",
    "Due": "date",
    "Done": "checkbox",
    "Link": "url",
    "Mail": "email",
    "Notes": "rich_text",
    "Owner": "people",
}


@pytest.fixture(scope="module")
def shared_notion() -> Iterator[FakeNotion]:
    with FakeNotion(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def notion(shared_notion: FakeNotion) -> FakeNotion:
    shared_notion.reset()
    shared_notion.databases.clear()
    shared_notion.refresh_tokens = True
    return shared_notion


@pytest.fixture
def db(notion: FakeNotion) -> str:
    return notion.add_database(properties=COLUMNS)


def ctx(fake: FakeNotion) -> StepContext:
    return StepContext(
        run_id="r1",
        step_id="s",
        deadline=time.monotonic() + 10,
        env={"LEVQOR_NOTION_API_BASE": fake.url},
    )


def poll(fake: FakeNotion, trigger: str, config: dict, state: dict | None, creds=None):
    return as_poll(
        levqor_notion.poll_trigger(
            "notion", trigger, config, creds or {"token": TOKEN}, state, ctx(fake)
        )
    )


def act(fake: FakeNotion, action: str, payload: dict, creds=None) -> dict:
    return levqor_notion.run_task("notion", action, payload, creds or {"token": TOKEN}, ctx(fake))


def queries(fake: FakeNotion) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/query")]


# ----------------------------------------------------------------------------- new items


def test_new_item_first_poll_is_a_baseline_then_each_new_row_once(notion, db) -> None:
    old = [notion.add_page(db, {"Name": f"old {i}"}) for i in range(3)]
    first = poll(notion, "new_database_item", {"database_id": db}, None)
    # the baseline: what is there, oldest first (the host records these ids and starts nothing)
    assert [i.id for i in first.items] == old
    assert first.state["since"] == notion.row(old[-1])["created_time"]
    body = queries(notion)[-1].json()
    assert body["sorts"] == [{"timestamp": "created_time", "direction": "descending"}]
    assert "filter" not in body
    assert queries(notion)[-1].header("Notion-Version") == "2022-06-28"

    notion.advance(1)
    a = notion.add_page(db, {"Name": "A", "Status": "Todo", "Count": 3})
    b = notion.add_page(db, {"Name": "B"})
    nxt = poll(notion, "new_database_item", {"database_id": db}, first.state)
    ids = [i.id for i in nxt.items]
    # the window overlaps (Notion stamps to the minute): the old rows come again, the host drops them
    assert ids[-2:] == [a, b] and set(ids) <= {*old, a, b}
    item = {i.id: i for i in nxt.items}[a]
    assert item.data["title"] == "A"
    assert item.data["properties"]["Status"] == "Todo"
    assert item.data["properties"]["Count"] == 3
    assert item.data["url"].startswith("https://www.notion.so/")
    body = queries(notion)[-1].json()
    since = datetime.fromisoformat(first.state["since"].replace("Z", "+00:00"))
    start = datetime.fromisoformat(
        body["filter"]["created_time"]["on_or_after"].replace("Z", "+00:00")
    )
    assert body["filter"]["timestamp"] == "created_time"
    assert (since - start).total_seconds() == levqor_notion.POLL_OVERLAP.total_seconds()
    assert body["sorts"] == [{"timestamp": "created_time", "direction": "ascending"}]
    assert nxt.state["since"] == notion.row(b)["created_time"]


def test_items_are_flattened_to_plain_values(notion, db) -> None:
    pid = notion.add_page(
        db,
        {
            "Name": "Kale",
            "Status": "In stock",
            "Tags": ["Leafy", "Green"],
            "Count": 2.5,
            "Due": "2026-02-20",
            "Done": True,
            "Link": "https://example.com",
            "Mail": "ada@example.com",
            "Notes": "fresh",
            "Owner": [{"id": "u1", "name": "Ada Lovelace"}],
        },
    )
    (item,) = poll(notion, "new_database_item", {"database_id": db}, {"since": None}).items
    assert item.id == pid
    assert item.data["properties"] == {
        "Name": "Kale",
        "Status": "In stock",
        "Tags": ["Leafy", "Green"],
        "Count": 2.5,
        "Due": "2026-02-20",
        "Done": True,
        "Link": "https://example.com",
        "Mail": "ada@example.com",
        "Notes": "fresh",
        "Owner": ["Ada Lovelace"],
    }
    row = notion.row(pid)
    assert item.data["created_time"] == row["created_time"]
    assert item.data["last_edited_time"] == row["last_edited_time"]
    assert item.data["database_id"] == db and item.data["archived"] is False


def test_empty_database_baseline_then_everything_is_new(notion, db) -> None:
    first = poll(notion, "new_database_item", {"database_id": db}, None)
    assert first.items == [] and first.state == {"since": None}
    a = notion.add_page(db, {"Name": "first ever"})
    nxt = poll(notion, "new_database_item", {"database_id": db}, first.state)
    assert [i.id for i in nxt.items] == [a]
    assert "filter" not in queries(notion)[-1].json()


def test_paging_follows_has_more_and_is_bounded(notion, db) -> None:
    for i in range(levqor_notion.PAGE_SIZE * levqor_notion.MAX_POLL_PAGES + 30):
        notion.add_page(db, {"Name": f"row {i}"})
    state = {"since": None}
    out = poll(notion, "new_database_item", {"database_id": db}, state)
    assert len(out.items) == levqor_notion.PAGE_SIZE * levqor_notion.MAX_POLL_PAGES
    assert len(queries(notion)) == levqor_notion.MAX_POLL_PAGES
    cursors = [q.json().get("start_cursor") for q in queries(notion)]
    assert cursors[0] is None and all(cursors[1:])
    # a burst larger than one poll (all within one minute here): the next poll reads on from
    # Notion's cursor in the same window, instead of from the window's start again
    assert out.state["cursor"] and "window" in out.state
    rest = poll(notion, "new_database_item", {"database_id": db}, out.state)
    assert len(rest.items) == 30 and "cursor" not in rest.state
    assert queries(notion)[-1].json()["start_cursor"] == out.state["cursor"]
    seen = {i.id for i in out.items} | {i.id for i in rest.items}
    assert len(seen) == len(notion.rows)
    # a cursor Notion no longer knows: the window is read again from its start
    stale = poll(notion, "new_database_item", {"database_id": db}, {**out.state, "cursor": "gone"})
    assert len(stale.items) == levqor_notion.PAGE_SIZE * levqor_notion.MAX_POLL_PAGES


def test_user_filter_is_anded_with_the_time_window(notion, db) -> None:
    config = {"database_id": db, "filter": {"property": "Status", "select": {"equals": "Done"}}}
    notion.add_page(db, {"Name": "before", "Status": "Done"})
    first = poll(notion, "new_database_item", config, None)
    assert queries(notion)[-1].json()["filter"] == config["filter"]
    notion.add_page(db, {"Name": "skip", "Status": "Todo"})
    keep = notion.add_page(db, {"Name": "keep", "Status": "Done"})
    nxt = poll(notion, "new_database_item", config, first.state)
    assert [i.id for i in nxt.items][-1:] == [keep]
    assert "skip" not in {i.data["title"] for i in nxt.items}
    flt = queries(notion)[-1].json()["filter"]
    assert flt["and"][1] == config["filter"] and flt["and"][0]["timestamp"] == "created_time"
    # a user "and" is merged, not nested
    config2 = {
        "database_id": db,
        "filter": {"and": [config["filter"], {"property": "Done", "checkbox": {"equals": False}}]},
    }
    poll(notion, "new_database_item", config2, first.state)
    flt = queries(notion)[-1].json()["filter"]
    assert len(flt["and"]) == 3 and "timestamp" in flt["and"][0]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"database_id": "not an id at all, not an id at all"}, "no Notion id"),
        ({"database_id": "0" * 32, "filter": {"property": "Status"}}, "one type key"),
        (
            {"database_id": "0" * 32, "filter": {"timestamp": "edited"}},
            "created_time or last_edited_time",
        ),
        (
            {
                "database_id": "0" * 32,
                "filter": {"or": [{"and": [{"property": "A", "checkbox": {"equals": True}}]}]},
            },
            "one level only",
        ),
    ],
)
def test_bad_trigger_config_fails_before_any_request(notion, config, fragment) -> None:
    with pytest.raises(PayloadError) as e:
        poll(notion, "new_database_item", config, None)
    assert fragment in str(e.value)
    assert notion.requests == []


def test_database_not_shared_is_a_permanent_error(notion) -> None:
    with pytest.raises(PermanentError) as e:
        poll(notion, "new_database_item", {"database_id": "1" * 32}, None)
    assert e.value.status == 404 and "shared with your integration" in str(e.value)


def test_poll_error_mapping(notion, db) -> None:
    path = f"/v1/databases/{db}/query"
    notion.fail_next(429, retry_after=9, path=path)
    with pytest.raises(RetryableError) as e:
        poll(notion, "new_database_item", {"database_id": db}, None)
    assert e.value.retry_after == 9 and e.value.status == 429
    notion.fail_next(503, path=path)
    with pytest.raises(RetryableError):
        poll(notion, "new_database_item", {"database_id": db}, None)
    with pytest.raises(CredentialError) as e:
        poll(
            notion,
            "new_database_item",
            {"database_id": db},
            None,
            creds={"token": "ntn_wrong_token_1234"},
        )
    assert e.value.status == 401 and "ntn_wrong_token_1234" not in str(e.value)
    notion.fail_next(200, body={"object": "list", "results": "nope"}, path=path)
    with pytest.raises(PermanentError):
        poll(notion, "new_database_item", {"database_id": db}, None)


# ----------------------------------------------------------------------------- updated items


def test_updated_items_fire_once_per_edit_minute(notion, db) -> None:
    row = notion.add_page(db, {"Name": "Task", "Status": "Todo"})
    first = poll(notion, "updated_database_item", {"database_id": db}, None)
    stamp0 = notion.row(row)["last_edited_time"]
    assert [i.id for i in first.items] == [f"{row}@{stamp0}"]
    assert queries(notion)[-1].json()["sorts"] == [
        {"timestamp": "last_edited_time", "direction": "descending"}
    ]

    notion.advance(1)
    notion.edit_page(row, {"Status": "Doing"})
    notion.edit_page(row, {"Status": "Done"})  # same minute: one item, the latest values
    nxt = poll(notion, "updated_database_item", {"database_id": db}, first.state)
    stamp1 = notion.row(row)["last_edited_time"]
    assert stamp1 > stamp0
    assert [i.id for i in nxt.items] == [f"{row}@{stamp1}"]
    assert nxt.items[0].data["properties"]["Status"] == "Done"
    assert queries(notion)[-1].json()["filter"]["timestamp"] == "last_edited_time"
    assert nxt.state["since"] == stamp1

    # seen again inside the overlap: the same id, so the host drops it
    again = poll(notion, "updated_database_item", {"database_id": db}, nxt.state)
    assert [i.id for i in again.items] == [f"{row}@{stamp1}"]


def test_updated_include_new_false_skips_untouched_new_rows(notion, db) -> None:
    config = {"database_id": db, "include_new": False}
    first = poll(notion, "updated_database_item", config, None)
    old = notion.add_page(db, {"Name": "old"})
    notion.advance(2)
    fresh = notion.add_page(db, {"Name": "fresh"})
    notion.edit_page(old, {"Status": "Done"})
    nxt = poll(notion, "updated_database_item", config, first.state)
    assert [i.data["id"] for i in nxt.items] == [old]
    assert fresh not in {i.data["id"] for i in nxt.items}


def test_archived_rows_do_not_fire(notion, db) -> None:
    first = poll(notion, "updated_database_item", {"database_id": db}, None)
    row = notion.add_page(db, {"Name": "gone"})
    notion.edit_page(row, archived=True)
    nxt = poll(notion, "updated_database_item", {"database_id": db}, first.state)
    assert nxt.items == []


# ----------------------------------------------------------------------------- query_database


def test_query_database_filter_sorts_and_limit(notion, db) -> None:
    for i, status in enumerate(["Todo", "Done", "Done", "Todo", "Done"]):
        notion.add_page(db, {"Name": f"t{i}", "Status": status, "Count": i})
    out = act(
        notion,
        "query_database",
        {
            "database_id": db.replace("-", ""),
            "filter": {"property": "Status", "select": {"equals": "Done"}},
            "sorts": [{"property": "Count", "direction": "descending"}],
            "limit": 2,
        },
    )
    assert [i["title"] for i in out["items"]] == ["t4", "t2"]
    assert out["count"] == 2 and out["has_more"] is True and out["next_cursor"]
    assert [p["id"] for p in out["raw"]] == [i["id"] for i in out["items"]]
    assert out["raw"][0]["properties"]["Status"]["select"]["name"] == "Done"
    req = queries(notion)[-1]
    assert req.path == f"/v1/databases/{db}/query"
    assert req.json() == {
        "filter": {"property": "Status", "select": {"equals": "Done"}},
        "sorts": [{"property": "Count", "direction": "descending"}],
        "page_size": 2,
    }
    rest = act(
        notion,
        "query_database",
        {
            "database_id": db,
            "filter": {"property": "Status", "select": {"equals": "Done"}},
            "sorts": [{"property": "Count", "direction": "descending"}],
            "start_cursor": out["next_cursor"],
        },
    )
    assert [i["title"] for i in rest["items"]] == ["t1"]
    assert rest["has_more"] is False and rest["next_cursor"] is None


def test_query_database_pages_up_to_the_limit(notion, db) -> None:
    for i in range(230):
        notion.add_page(db, {"Name": f"r{i}"})
    out = act(notion, "query_database", {"database_id": db, "limit": 250})
    assert out["count"] == 230 and out["has_more"] is False
    assert [q.json()["page_size"] for q in queries(notion)] == [100, 100, 50]
    out = act(notion, "query_database", {"database_id": db, "limit": 150})
    assert out["count"] == 150 and out["has_more"] is True


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"database_id": "x" * 32}, "no Notion id"),
        ({"database_id": "0" * 32, "filter": {"and": []}}, "non-empty array"),
        (
            {
                "database_id": "0" * 32,
                "filter": {
                    "or": [{"and": [{"or": [{"property": "A", "checkbox": {"equals": True}}]}]}]
                },
            },
            "at most 2 levels",
        ),
        (
            {
                "database_id": "0" * 32,
                "sorts": [{"property": "A", "timestamp": "created_time", "direction": "ascending"}],
            },
            "either a property or a timestamp",
        ),
    ],
)
def test_query_database_refuses_bad_filters_before_sending(notion, payload, fragment) -> None:
    assert any(
        fragment in p for p in levqor_notion.validate_payload("notion", "query_database", payload)
    )
    with pytest.raises(PayloadError):
        act(notion, "query_database", payload)
    assert notion.requests == []


def test_query_database_validation_error_from_notion(notion, db) -> None:
    with pytest.raises(PayloadError) as e:
        act(
            notion,
            "query_database",
            {"database_id": db, "filter": {"property": "Nope", "checkbox": {"equals": True}}},
        )
    assert "Nope" in str(e.value) and e.value.status == 400


# ----------------------------------------------------------------------------- update_page


def test_update_page_properties_and_archive(notion, db) -> None:
    row = notion.add_page(db, {"Name": "Task", "Status": "Todo"})
    notion.advance(1)
    out = act(
        notion,
        "update_page",
        {
            "page_id": f"https://www.notion.so/acme/Task-{row.replace('-', '')}",
            "properties": {"Status": {"select": {"name": "Done"}}},
        },
    )
    req = notion.requests[-1]
    assert (req.method, req.path) == ("PATCH", f"/v1/pages/{row}")
    assert req.json() == {"properties": {"Status": {"select": {"name": "Done"}}}}
    assert out["id"] == row and out["archived"] is False
    assert out["properties"]["Status"] == "Done"
    assert out["last_edited_time"] == notion.row(row)["last_edited_time"]
    assert notion.values(row)["Status"] == "Done"

    out = act(notion, "update_page", {"page_id": row, "archived": True})
    assert notion.requests[-1].json() == {"archived": True}
    assert out["archived"] is True and notion.row(row)["archived"] is True


def test_update_page_errors(notion, db) -> None:
    with pytest.raises(PayloadError) as e:
        act(notion, "update_page", {"page_id": "0" * 32})
    assert "give properties to change" in str(e.value)
    assert notion.requests == []
    with pytest.raises(PermanentError) as e:
        act(notion, "update_page", {"page_id": "2" * 32, "archived": True})
    assert e.value.status == 404 and e.value.code == "object_not_found"
    row = notion.add_page(db, {"Name": "x"})
    with pytest.raises(PayloadError) as e:
        act(notion, "update_page", {"page_id": row, "properties": {"Nope": {"checkbox": True}}})
    assert "Nope is not a property that exists" in str(e.value)


def test_created_page_is_a_row_the_trigger_sees(notion, db) -> None:
    first = poll(notion, "new_database_item", {"database_id": db}, None)
    out = act(
        notion,
        "create_page",
        {
            "parent": {"database_id": db},
            "title": "via action",
            "properties": {"Status": {"select": {"name": "New"}}},
        },
    )
    nxt = poll(notion, "new_database_item", {"database_id": db}, first.state)
    assert [i.id for i in nxt.items] == [out["id"]]
    assert nxt.items[0].data["properties"]["Status"] == "New"


# ----------------------------------------------------------------------------- OAuth2


def test_description_declares_oauth2_for_a_public_integration() -> None:
    pm = make_plugin_manager(
        entry_points=False, builtins=False, plugins=[("notion", levqor_notion)]
    )
    assert not pm.failures
    info = pm.catalog.get("notion")
    assert info.oauth2 == {
        "authorization_url": "https://api.notion.com/v1/oauth/authorize",
        "token_url": "https://api.notion.com/v1/oauth/token",
        "scopes": [],
        "pkce": False,
        "client_auth": "basic",
        "token_body": "json",
        "extra_params": {"owner": "user"},
        "account": "/workspace_name",
        "title": "Connect a Notion workspace",
    }
    from jsonschema import Draft202012Validator

    v = Draft202012Validator(info.credentials)
    assert v.is_valid(sample_oauth_credentials())
    assert v.is_valid({"token": TOKEN})
    assert not v.is_valid({"access_token": "x"})
    assert set(info.triggers) == {"new_database_item", "updated_database_item"}
    assert all(t.kind == "polling" for t in info.triggers.values())
    for name, action in info.actions.items():
        assert levqor_notion.validate_payload("notion", name, action.example) == [], name


def _exchange(
    fake: FakeNotion, body: dict, auth=("notion-client-id", "notion-client-secret")
) -> requests.Response:
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return requests.post(
        fake.token_url, json=body, headers={"Authorization": f"Basic {basic}"}, timeout=5
    )


def test_fake_oauth_flow_and_refresh(notion, db) -> None:
    redirect = "http://127.0.0.1:9/oauth/callback"
    r = requests.get(
        notion.authorization_url,
        params={
            "client_id": "notion-client-id",
            "redirect_uri": redirect,
            "response_type": "code",
            "owner": "user",
            "state": "s1",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert r.status_code == 302
    loc = r.headers["Location"]
    assert loc.startswith(redirect + "?") and "state=s1" in loc
    code = loc.split("code=")[1].split("&")[0]
    assert (
        _exchange(
            notion,
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
            auth=("notion-client-id", "wrong"),
        ).status_code
        == 401
    )
    tok = _exchange(
        notion, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
    ).json()
    assert tok["token_type"] == "bearer" and tok["workspace_name"] == "Acme workspace"
    assert {"access_token", "refresh_token", "bot_id", "workspace_id", "owner"} <= set(tok)
    # a code works once
    again = _exchange(
        notion, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    extra = levqor_notion.oauth_credentials("notion", tok, ctx(notion))
    assert extra == {
        "workspace_id": tok["workspace_id"],
        "workspace_name": "Acme workspace",
        "bot_id": tok["bot_id"],
        "account": "Acme workspace",
    }
    creds = {
        "auth": "oauth2",
        "access_token": tok["access_token"],
        "refresh_token": tok["refresh_token"],
        "token_type": "bearer",
        **extra,
    }
    row = notion.add_page(db, {"Name": "with oauth"})
    out = act(notion, "query_database", {"database_id": db}, creds=creds)
    assert [i["id"] for i in out["items"]] == [row]
    assert notion.requests[-1].header("Authorization") == f"Bearer {tok['access_token']}"

    # the access token stops working: a 401 CredentialError, so the host refreshes and retries once
    notion.revoke(tok["access_token"])
    with pytest.raises(CredentialError) as e:
        poll(notion, "new_database_item", {"database_id": db}, None, creds=creds)
    assert e.value.status == 401
    assert tok["access_token"] not in str(e.value) and tok["refresh_token"] not in str(e.value)
    new = _exchange(
        notion, {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]}
    ).json()
    assert new["access_token"] != tok["access_token"]
    creds = {**creds, "access_token": new["access_token"], "refresh_token": new["refresh_token"]}
    assert [
        i.id
        for i in poll(notion, "new_database_item", {"database_id": db}, None, creds=creds).items
    ] == [row]
    # the old refresh token was rotated away
    stale = _exchange(
        notion, {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]}
    )
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"


def test_fake_oauth_without_refresh_tokens(notion) -> None:
    notion.refresh_tokens = False
    code = notion.issue_code()
    tok = _exchange(notion, {"grant_type": "authorization_code", "code": code}).json()
    assert "refresh_token" not in tok and tok["access_token"]
    assert (
        levqor_notion.oauth_credentials("notion", tok, ctx(notion))["account"] == "Acme workspace"
    )
    form = requests.post(
        notion.token_url,
        data={"grant_type": "authorization_code", "code": notion.issue_code()},
        auth=("notion-client-id", "notion-client-secret"),
        timeout=5,
    )
    assert form.status_code == 400 and form.json()["error"] == "invalid_request"


def test_oauth_credential_without_access_token_fails_closed(notion, db) -> None:
    with pytest.raises(CredentialError):
        act(
            notion,
            "query_database",
            {"database_id": db},
            creds={"auth": "oauth2", "access_token": ""},
        )
    assert notion.requests == []


def test_the_kernel_oauth_client_connects_and_refreshes_against_notion(notion, db) -> None:
    """The host's path: OAuthClient with the connector's oauth2 description (HTTP Basic, a JSON
    body), credential_from_token + oauth_credentials, then a 401 refreshed once by
    call_with_refresh."""
    from levqor_kernel.http import Http
    from levqor_kernel.oauth import (
        OAuthClient,
        RefreshRefused,
        call_with_refresh,
        credential_from_token,
    )

    spec = levqor_notion.OAUTH2
    client = OAuthClient(
        "notion",
        spec,
        notion.client_id,
        notion.client_secret,
        authorization_endpoint=notion.authorization_url,
        token_endpoint=notion.token_url,
    )
    redirect = "http://127.0.0.1:9/oauth/callback"
    url = client.authorization_url(redirect, "signed-state")
    assert "owner=user" in url and "response_type=code" in url and "code_challenge" not in url
    assert "scope=" not in url
    r = requests.get(url, allow_redirects=False, timeout=5)
    code = r.headers["Location"].split("code=")[1].split("&")[0]
    http = Http()
    token = client.exchange(http, code, redirect)
    req = notion.token_requests[-1]
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
    }
    assert req.header("Authorization").startswith("Basic ")
    extra = levqor_notion.oauth_credentials("notion", token, ctx(notion))
    cred = credential_from_token(token, spec, extra=extra)
    assert cred["account"] == "Acme workspace" and cred["workspace_id"] == notion.workspace_id
    assert "expires_at" not in cred  # Notion's tokens carry no expiry

    row = notion.add_page(db, {"Name": "after connect"})
    notion.revoke(cred["access_token"])  # the access token is refused from now on
    refreshed: list[dict] = []

    def refresh(old):
        new = credential_from_token(client.refresh(http, old["refresh_token"]), spec, previous=old)
        refreshed.append(new)
        return new

    def do_poll(c):
        return poll(notion, "new_database_item", {"database_id": db}, None, creds=c)

    out = call_with_refresh(do_poll, cred, refresh)
    assert [i.id for i in out.items] == [row] and len(refreshed) == 1
    assert notion.token_requests[-1].json()["grant_type"] == "refresh_token"
    assert refreshed[0]["workspace_id"] == notion.workspace_id  # kept from the first credential
    # the old refresh token was rotated away: refusing it marks the credential broken upstream
    with pytest.raises(RefreshRefused):
        client.refresh(http, cred["refresh_token"])
