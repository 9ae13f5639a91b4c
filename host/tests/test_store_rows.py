"""The one row mapper of the store (store/rows.py) and the row shapes repositories hand out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

import pytest
from levqor_host.store import Store
from levqor_host.store.rows import (
    ApiKeyRow,
    PipelineRow,
    RowMapper,
    RunRow,
    Timestamp,
    UserRow,
)

AT = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


class _Thing(TypedDict):
    id: str
    flag: bool
    tags: list[str]
    seen_at: Timestamp | None
    gone: bool


def test_a_row_becomes_the_typed_dict_iso_times_booleans_and_lists() -> None:
    m = RowMapper(_Thing, gone=lambda r: r["deleted_at"] is not None)
    out = m({"id": "t1", "flag": 1, "tags": None, "seen_at": AT, "deleted_at": AT, "extra": 9})
    assert out == {
        "id": "t1",
        "flag": True,
        "tags": [],
        "seen_at": "2025-01-02T03:04:05.600000+00:00",
        "gone": True,
    }
    assert type(out["flag"]) is bool


def test_columns_labelled_with_a_prefix_and_renamed_columns() -> None:
    m = RowMapper(_Thing, flag="is_flag")
    row = {"x_id": "t2", "x_is_flag": 0, "x_tags": ("a",), "x_seen_at": None, "x_gone": 0}
    assert m(row, "x_") == {
        "id": "t2",
        "flag": False,
        "tags": ["a"],
        "seen_at": None,
        "gone": False,
    }


def test_a_derived_key_the_row_type_lacks_is_refused() -> None:
    with pytest.raises(TypeError, match="nope"):
        RowMapper(_Thing, nope="id")


def test_repositories_hand_out_exactly_the_keys_of_their_row_types(store: Store) -> None:
    user = store.users.create("rows@example.com")
    assert set(user) == set(UserRow.__annotations__)
    _, key = store.api_keys.create(user["id"], name="k", scopes=["runs:read"])
    assert set(key) == set(ApiKeyRow.__annotations__) and key["revoked"] is False
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": []}
    pipeline = store.pipelines.create(user["id"], "p", doc)
    assert set(pipeline) == set(PipelineRow.__annotations__)
    assert pipeline["version"] == 1 and pipeline["has_webhook_secret"] is False
    run, created = store.runs.create(user["id"], pipeline["id"], None, {})
    assert created and set(run) == set(RunRow.__annotations__)
    full = store.runs.get(user["id"], run["id"])
    assert full is not None and full["steps"] == [] and full["created_at"] == run["created_at"]
    listed = store.users.list()
    assert listed == [user] and store.users.get(user["id"]) == user
