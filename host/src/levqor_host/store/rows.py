"""The rows repositories hand out: one TypedDict per table, and one mapper for them all.

A row of SQLAlchemy (or the dict of values just inserted) becomes a plain dict with the keys of
its TypedDict: datetimes become ISO 8601 strings, ``bool`` fields are made booleans (SQLite
stores integers), ``list`` fields lists. A key whose value is not a column of the same name is
derived: a column of another name, or a function of the row (``RowMapper(..., revoked=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from operator import itemgetter
from typing import (
    Any,
    Generic,
    Literal,
    NewType,
    TypedDict,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

__all__ = [
    "RunStatus",
    "ApiKeyRow",
    "CredentialRow",
    "LockRow",
    "PipelineRow",
    "RowMapper",
    "RunRow",
    "RunWithSteps",
    "SessionRow",
    "StepRow",
    "Timestamp",
    "TriggerRow",
    "UserRow",
    "VersionRow",
]

#: an ISO 8601 time in UTC, ``2025-01-01T12:00:00.123456+00:00`` (a datetime in the database)
Timestamp = NewType("Timestamp", str)


class UserRow(TypedDict):
    id: str
    email: str
    name: str | None
    plan: str
    is_admin: bool
    referral_code: str
    created_at: Timestamp


class ApiKeyRow(TypedDict):
    id: str
    user_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    revoked: bool


class PipelineRow(TypedDict):
    id: str
    user_id: str
    name: str
    version: int
    webhook_token: str
    has_webhook_secret: bool
    archived: bool
    archived_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    enabled: bool
    doc: dict[str, Any]


class VersionRow(TypedDict):
    pipeline_id: str
    version: int
    doc: dict[str, Any]
    created_at: Timestamp


class TriggerRow(TypedDict):
    """An enabled pipeline's app trigger (``triggers``); its secret stays in the store."""

    id: str
    pipeline_id: str
    user_id: str
    connector: str
    trigger: str
    kind: str  # polling | instant
    credential: str | None
    config: dict[str, Any]
    spec_hash: str
    interval: int | None
    token: str
    registration: dict[str, Any] | None
    route: dict[str, Any] | None
    state: dict[str, Any] | None
    status: str  # active | failing | paused
    failures: int
    last_error: dict[str, Any] | None
    next_poll_at: Timestamp | None
    last_polled_at: Timestamp | None
    notified_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class CredentialRow(TypedDict):
    id: str
    name: str
    connector: str
    created_at: Timestamp
    #: "oauth2" for a connected account ("Connect"), None for values pasted in
    auth: str | None
    #: the connected account as shown to the user (an email, a workspace)
    account: str | None
    #: None (usable) or "broken" (the provider refused its refresh token: connect it again)
    status: str | None
    #: when its access token expires (refreshed before)
    expires_at: Timestamp | None


# A run's states, in the order a run goes through them; the last three are final. A run that
# waits (a timer, an approval, a child run) holds no lease and is queued again when resumed.
RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]


class RunRow(TypedDict):
    id: str
    user_id: str
    pipeline_id: str
    version: int
    status: RunStatus
    trigger: str
    input: Any
    idempotency_key: str | None
    retry_of: str | None
    error: Any
    lease_owner: str | None
    lease_expires_at: Timestamp | None
    claims: int
    claims_since_progress: int
    finished_steps: int
    cancel_requested: bool
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    output: Any
    parent_run_id: str | None
    parent_step: str | None
    wait: Any
    resume_at: Timestamp | None


class StepRow(TypedDict):
    step_id: str
    position: int
    connector: str
    action: str
    status: str
    attempts: int
    input: Any
    output: Any
    error: Any
    started_at: Timestamp | None
    finished_at: Timestamp | None
    #: a metered step's tokens ({model, input_tokens, output_tokens, total_tokens}), else None
    usage: dict[str, Any] | None


class RunWithSteps(RunRow):
    steps: list[StepRow]


class LockRow(TypedDict):
    name: str
    owner: str
    acquired_at: Timestamp
    expires_at: Timestamp


class SessionRow(TypedDict):
    user_id: str
    csrf_token: str
    created_at: Timestamp
    expires_at: Timestamp


R = TypeVar("R")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _as_list(value: Any) -> list:
    return list(value or [])


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """How a value becomes the type ``hint`` says (None: as it is)."""
    if hint is bool:
        return bool
    if hint is list or get_origin(hint) is list:
        return _as_list
    if hint is Timestamp or Timestamp in get_args(hint):
        return _iso
    return None


class RowMapper(Generic[R]):
    """Turns rows into ``row_type`` dicts. ``derived`` names, per key of ``row_type``, the
    column it comes from (a string) or a function of the row's mapping."""

    def __init__(
        self, row_type: type[R], **derived: str | Callable[[Mapping[str, Any]], Any]
    ) -> None:
        hints = get_type_hints(row_type)
        unknown = set(derived) - set(hints)
        if unknown:
            raise TypeError(f"{row_type.__name__} has no keys {sorted(unknown)}")
        self.keys: tuple[str, ...] = tuple(hints)
        self._fields = tuple((k, derived.get(k, k), _converter(hints[k])) for k in hints)
        self._plans: dict[str, tuple] = {}

    def _plan(self, prefix: str) -> tuple:
        plan = self._plans.get(prefix)
        if plan is None:
            plan = tuple(
                (key, itemgetter(prefix + source) if isinstance(source, str) else source, convert)
                for key, source, convert in self._fields
            )
            self._plans[prefix] = plan
        return plan

    def __call__(self, row: Any, prefix: str = "") -> R:
        """The dict of ``row`` (a Row or a dict); ``prefix``: its columns are labelled
        ``<prefix><column>`` (in joins)."""
        m = row if type(row) is dict else row._mapping
        return {  # type: ignore[return-value]
            key: get(m) if convert is None else convert(get(m))
            for key, get, convert in self._plans.get(prefix) or self._plan(prefix)
        }

    def all(self, rows: Any) -> list[R]:
        """The dicts of ``rows``, in order."""
        return [self(r) for r in rows]
