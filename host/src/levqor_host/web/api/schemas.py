"""The bodies the JSON API takes and answers, as pydantic models.

Request bodies (``...In``) validate what a route receives (strict: see
:class:`levqor_host.web.operations.Body`); answers are described for the OpenAPI document.
A pipeline document is the kernel's JSON Schema (``PipelineDocument``), checked by the
pipeline validation with its JSON pointers rather than here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from levqor_host.errors import MAX_VERSION
from levqor_host.store.rows import RunStatus
from levqor_host.web.operations import Body

#: the pipeline document: a JSON object, described by the kernel's schema
PipelineDocument = Annotated[
    dict[str, Any], WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/PipelineDocument"}]})
]
Timestamp = datetime | None


class Problem(BaseModel):
    """One problem of a document: where (a JSON pointer) and what."""

    pointer: str
    message: str
    step: str | None = None


class TriggerStatus(BaseModel):
    """How a switched-on pipeline's app trigger is doing."""

    connector: str | None = None
    trigger: str | None = None
    kind: Literal["polling", "instant"] | str
    status: Literal["active", "failing", "paused"] | str = Field(
        description="failing after repeated failed polls (its owner is emailed once); paused "
        "when its credential broke (connect it again)"
    )
    failures: int = Field(0, description="consecutive failures")
    last_error: Any = Field(None, description="the last failure: {message, code...}")
    last_polled_at: Timestamp = None
    next_poll_at: Timestamp = None
    interval: int | None = Field(None, description="polling: seconds between checks")
    webhook_url: str | None = Field(None, description="instant: where the app sends events")


class PipelineSummary(BaseModel):
    id: str
    name: str
    version: int
    archived: bool
    created_at: Timestamp = None
    updated_at: Timestamp = None
    webhook_url: str | None = Field(
        description="POST here to start a run; null unless the trigger is a webhook"
    )
    has_webhook_secret: bool = False
    trigger: str | None = Field(None, description="the trigger's type: manual, webhook, schedule, app")
    enabled: bool = Field(
        True,
        description="off: its schedule does not fire and its app trigger is neither polled "
        "nor registered (POST .../enable, .../disable)",
    )
    trigger_status: TriggerStatus | None = Field(
        None, description="an app trigger's state while the pipeline is on; null otherwise"
    )


class PipelineList(BaseModel):
    items: list[PipelineSummary]


class PipelineOut(PipelineSummary):
    pipeline: dict[str, Any] = {}
    warnings: list[Problem] = []


class PipelineIn(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    pipeline: PipelineDocument


class VersionItem(BaseModel):
    version: int
    created_at: Timestamp = None


class VersionList(BaseModel):
    items: list[VersionItem]


class VersionOut(BaseModel):
    pipeline_id: str
    version: int
    created_at: Timestamp = None
    pipeline: dict[str, Any]


class WebhookSecret(BaseModel):
    pipeline_id: str
    secret: str = Field(description="shown only in this answer")
    header: str
    scheme: str


class WebhookSecretRemoved(BaseModel):
    pipeline_id: str
    has_webhook_secret: bool


class Archived(BaseModel):
    id: str
    archived: bool


class Credential(BaseModel):
    id: str
    name: str
    connector: str
    created_at: Timestamp = None
    auth: Literal["values", "oauth2"] = Field(
        "values", description="values pasted in, or an account connected with Connect (OAuth2)"
    )
    account: str | None = Field(None, description="the connected account, as the provider names it")
    status: Literal["ok", "broken"] = Field(
        "ok", description="broken: the provider refused the refresh token; connect it again"
    )
    expires_at: Timestamp = Field(None, description="when the access token expires (refreshed before)")


class CredentialList(BaseModel):
    items: list[Credential]


class CredentialIn(Body):
    name: str = Field(min_length=1, max_length=100)
    connector: str
    values: dict[str, Any] = Field(description="as the connector's credential schema says")


class Deleted(BaseModel):
    id: str
    deleted: bool


class CredentialCheck(BaseModel):
    id: str
    supported: bool
    ok: bool | None
    message: str | None = None
    details: dict[str, Any] | None = None


class RunIn(Body):
    pipeline_id: str
    input: Any = Field(
        default_factory=dict, description="trigger data, available to templates as trigger.*"
    )
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    version: int | None = Field(None, ge=1, le=MAX_VERSION)


class RunAccepted(BaseModel):
    run_id: str
    status: str
    created: bool | None = None
    output: Any = None
    error: Any = None


StepStatus = Literal["running", "waiting", "succeeded", "failed", "skipped", "cancelled"]


class StepUsage(BaseModel):
    """The tokens a metered step (a model call) used."""

    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ModelTokens(BaseModel):
    input_tokens: int
    output_tokens: int


class RunUsage(BaseModel):
    """The tokens a run's metered steps used, in all and by model."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    by_model: dict[str, ModelTokens]


class Step(BaseModel):
    """A step record; its ``id`` is its path in the document (``each[17].send``)."""

    id: str
    position: int | None = None
    connector: str | None = None
    action: str | None = None
    status: StepStatus
    attempts: int
    input: Any = None
    output: Any = None
    error: Any = None
    started_at: Timestamp = None
    finished_at: Timestamp = None
    scope: str | None = Field(
        None,
        description="where in its parent the step is: paths[n] or default (a branch or "
        "parallel path), on_error (fallback steps), on_failure (the pipeline's failure steps); "
        "null at the top and in a loop item",
    )
    children: list[Step] = Field(
        default_factory=list, description="a construct's steps (not a loop's items)"
    )
    items: LoopItems | None = Field(None, description="a for_each step's items")
    usage: StepUsage | None = Field(
        None, description="the tokens a metered step (a model call) used; null for others"
    )


class LoopItem(BaseModel):
    index: int
    status: StepStatus = Field(description="the most pressing status of the item's steps")
    steps: list[Step]


class LoopItems(BaseModel):
    total: int = Field(description="items that have started")
    by_status: dict[str, int]
    page: list[LoopItem] | None = Field(
        description="the first items; null for a loop inside a loop item (read its items page)"
    )
    next: str | None = Field(description="the cursor of the next page of items")


class LoopPage(BaseModel):
    loop: str
    total: int
    by_status: dict[str, int]
    items: list[LoopItem]
    next: str | None = None


Step.model_rebuild()


class RunWait(BaseModel):
    """What a waiting run waits for."""

    kind: Literal["time", "approval", "pipeline"] | str
    step: str | None = None
    since: Timestamp = None
    until: Timestamp = Field(None, description="a timed wait: when it ends")
    expires_at: Timestamp = Field(None, description="an approval: when its timeout decides it")
    message: str | None = Field(None, description="an approval's message")
    on_timeout: str | None = None
    pipeline: str | None = Field(None, description="a sub-pipeline: the pipeline it runs")
    child_run_id: str | None = None


class ApprovalIn(Body):
    comment: str | None = Field(None, max_length=2000)


class Run(BaseModel):
    id: str
    pipeline_id: str
    version: int
    status: RunStatus
    trigger: str | None = None
    input: Any = None
    error: Any = None
    retry_of: str | None = None
    cancel_requested: bool = False
    created_at: Timestamp = None
    started_at: Timestamp = None
    finished_at: Timestamp = None
    output: Any = None
    parent_run_id: str | None = None
    parent_step: str | None = None
    wait: RunWait | None = None
    approve_url: str | None = None
    reject_url: str | None = None
    children: list[str] = []
    steps: list[Step] = []
    usage: RunUsage | None = Field(
        None, description="the tokens the run's metered steps used (loop items included); "
        "null when it ran none"
    )


class RunList(BaseModel):
    items: list[Run]
    next_cursor: str | None = None


class PollingLimits(BaseModel):
    """How often this host lets a polling app trigger be checked (an app trigger's interval)."""

    min_interval: int = Field(description="the shortest interval, seconds (LEVQOR_POLL_MIN_INTERVAL)")
    default_interval: int = Field(
        description="the interval when a trigger names none, seconds (LEVQOR_POLL_DEFAULT_INTERVAL)"
    )


class Catalog(BaseModel):
    connectors: list[dict[str, Any]] = Field(description="the connectors installed plugins offer")
    failures: list[dict[str, Any]] = Field(description="plugins skipped, and why")
    polling: PollingLimits


class OptionsIn(Body):
    credential: str | None = Field(
        None, min_length=1, max_length=100,
        description="one of the caller's credentials of the connector, to ask the upstream with",
    )  # fmt: skip
    payload: dict[str, Any] = Field(
        default_factory=dict, description="what the step's form holds so far (not rendered)"
    )


class Option(BaseModel):
    value: str | int | float | bool
    label: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="the JSON Schema of what the choice takes"
    )


class OptionList(BaseModel):
    options: list[Option]


class Me(BaseModel):
    id: str
    email: str
    name: str | None = None
    plan: str | None = None
    is_admin: bool = False
    referral_code: str | None = None


class PinIn(Body):
    output: dict[str, Any] = Field(description="the step's output to use as sample data")


class PickerField(BaseModel):
    ref: str = Field(description="the template reference to insert, {{ steps.x.output.a }}")
    label: str
    sample: Any = None


class FieldSource(BaseModel):
    id: str = Field(description="trigger, a step id, or <loop id>.item for a loop's item")
    kind: Literal["trigger", "step", "item"]
    path: str | None = Field(None, description="where the step is, each[*].send")
    pointer: str = Field(description="JSON pointer in the document")
    source: str = Field(
        description="where the sample comes from: pinned, run, schema, sample (an app "
        "trigger's own), schedule, none"
    )
    run_id: str | None = None
    connector: str | None = None
    action: str | None = None
    loops: list[str] = []
    loop: str | None = None
    writes: bool = Field(False, description="the step writes upstream: testing it really does")
    fields: list[PickerField]


class FieldList(BaseModel):
    pipeline_id: str
    version: int
    sources: list[FieldSource]


class StepTestIn(Body):
    run_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="a past run of this pipeline: its trigger data and step outputs",
    )  # fmt: skip
    trigger: dict[str, Any] | None = Field(
        None, description="trigger data (default: the past run's, else {})"
    )
    use_pinned: bool = Field(False, description="use the pipeline's pinned outputs")
    version: int | None = Field(None, ge=1, le=MAX_VERSION, description="default: the latest")


class StepTestOut(BaseModel):
    status: Literal["succeeded", "failed", "skipped", "waiting", "cancelled"]
    input: Any = None
    output: Any = None
    error: Any = None
    writes: bool = Field(description="the step writes upstream: the test really did")
    warning: str | None = None
    wait: dict[str, Any] | None = Field(None, description="what a wait step would wait for")


class AppTriggerIn(Body):
    trigger: dict[str, Any] = Field(
        description='an app trigger as in a pipeline document: {"type": "app", "connector", '
        '"trigger", "credential", "config", "interval"}'
    )


class TriggerTestOut(BaseModel):
    kind: Literal["polling", "instant"]
    source: Literal["upstream", "sample"] = Field(
        description="upstream: fetched now; sample: the connector's sample item (an instant "
        "trigger's events arrive only once its pipeline is on)"
    )
    items: list[dict[str, Any]] = Field(
        description="what a run started by each item would see as trigger, newest first; "
        "nothing is recorded"
    )
    message: str | None = None
