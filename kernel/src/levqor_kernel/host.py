"""The host's face for plugins: what a subsystem plugin (billing, a planner) receives from the
host, typed, and the errors that cross between them.

A plugin never imports the host. It annotates what it is handed with these protocols and
catches or raises these exceptions by class:

- :class:`Host`: the service object (``app.extensions["levqor"]`` in a blueprint, the
  ``state`` of ``register_blueprints``, ``levqor_state()`` of the command group), with
  :class:`HostConfig`, :class:`HostStore` (with :class:`HostUsers`) and the credit
  :class:`Ledger`;
- :class:`BillingTransaction`: one write transaction over the billing tables
  (``Ledger.transaction()``);
- :class:`RunGate` and :class:`RunSettlement`: the ``ledger`` of the ``gate_run`` and
  ``record_run_cost`` hooks;
- :class:`HttpError`, :class:`InsufficientCredits` and the :class:`UserFault` marker;
- :class:`DashboardPage`: a page a plugin adds to the dashboard (the host's
  ``register_dashboard_pages`` hook);
- :class:`PipelineCalls`: a caller's pipelines started as runs and waited for
  (``host.pipeline_calls``: the MCP server's tools), with API-key sign-in outside a request.

The protocols are ``runtime_checkable``: ``isinstance(obj, Ledger)`` checks that ``obj`` has
every member (not their signatures; a type checker does that).

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "BillingTransaction",
    "DashboardPage",
    "Host",
    "HostCommandGroup",
    "HostConfig",
    "HostStore",
    "HostUsers",
    "HttpError",
    "InsufficientCredits",
    "Ledger",
    "PipelineCalls",
    "RunGate",
    "RunSettlement",
    "UserFault",
    "is_user_fault",
]


# --------------------------------------------------------------------------- errors
class UserFault:
    """Mixin marking an exception as the user's fault (their input, their balance), not the
    platform's: the host answers it with a 4xx and logs it as information, never as a server
    error. ``user_fault`` is the marker; :func:`is_user_fault` reads it.

    .. versionadded:: 0.2
    """

    user_fault: ClassVar[bool] = True


def is_user_fault(exc: BaseException) -> bool:
    """True when ``exc`` says it is the user's fault (:class:`UserFault`, or an
    :class:`HttpError` with a 4xx status).

    .. versionadded:: 0.2
    """
    if isinstance(exc, HttpError):
        return exc.user_fault
    return isinstance(exc, UserFault)


class HttpError(Exception):
    """An HTTP error answer from a plugin's route, rendered by the host exactly like its own
    errors: status ``status`` and ``{"error": {"code", "message", "details"?}}`` (``details``
    only when given), plus ``headers`` (``Retry-After``, for example).

    Its ``user_fault`` is true for a 4xx status and false for a 5xx one.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def user_fault(self) -> bool:
        return 400 <= self.status < 500

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


class InsufficientCredits(UserFault, Exception):
    """A debit would take a balance below zero (raised by :meth:`BillingTransaction.add_line`,
    :meth:`RunGate.charge` and :meth:`Ledger.grant`). The host answers it with a 402 when it
    escapes a route.

    .. versionadded:: 0.2
    """

    def __init__(self, needed: int, balance: int) -> None:
        super().__init__(f"needs {needed} credits, balance is {balance}")
        self.needed = needed
        self.balance = balance


# --------------------------------------------------------------------------- the host
@runtime_checkable
class HostConfig(Protocol):
    """The part of the host's configuration plugins read.

    The host reads its environment once, at start; a plugin reads its own variables through
    :meth:`plugin_settings`, never ``os.environ`` (so a test or a second app in one process
    hands it other values).

    .. versionadded:: 0.2
    .. versionchanged:: 0.2
       :meth:`plugin_settings` replaces the ``env`` mapping.
    """

    #: the deployment's public address (``LEVQOR_BASE_URL``), for links
    base_url: str

    def plugin_settings(self, *prefixes: str) -> Mapping[str, str]:
        """The variables the host was configured from whose names start with one of
        ``prefixes`` (``"STRIPE_"``, ``"LEVQOR_STRIPE_"``, or an exact name such as
        ``"LEVQOR_BILLING"``), read-only; all of them when none is given."""
        ...


@runtime_checkable
class HostUsers(Protocol):
    """The users of the deployment (``store.users``).

    .. versionadded:: 0.3
    """

    def get_by_email(self, email: str) -> dict[str, Any] | None:
        """The user with this email (``id``, ``email``, ``plan``, ...), or None."""
        ...


@runtime_checkable
class HostStore(Protocol):
    """The store operations plugins call, by repository (``store.users.get_by_email(...)``).

    .. versionadded:: 0.2
    .. versionchanged:: 0.3
       ``get_user_by_email`` moved to ``users.get_by_email``.
    """

    @property
    def users(self) -> HostUsers: ...


@runtime_checkable
class BillingTransaction(Protocol):
    """One write transaction over the billing tables, from :meth:`Ledger.transaction`: all of
    its changes commit together or not at all.

    .. versionadded:: 0.2
    """

    @property
    def config(self) -> HostConfig:
        """The host's configuration (its plugin settings)."""
        ...

    def after_commit(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once the transaction has committed (never when it rolls back)."""
        ...

    def lock_user(self, user_id: str) -> dict[str, Any] | None:
        """The user row, locked until the transaction ends; None when there is no such user."""
        ...

    def set_plan(self, user_id: str, plan: str) -> bool: ...

    def balance(self, user_id: str) -> int: ...

    def add_line(
        self,
        user_id: str,
        delta: int,
        reason: str,
        *,
        run_id: str | None = None,
        external_id: str | None = None,
    ) -> bool:
        """Append a ledger line; a negative ``delta`` never takes the balance below zero
        (:class:`InsufficientCredits`); an ``external_id`` seen before adds nothing (False)."""
        ...

    def claim_event(self, key: str, type: str) -> bool:
        """Store an external event id; False when it was processed before."""
        ...

    def account(self, user_id: str) -> dict[str, Any] | None:
        """The user's billing account (``customer_id``, ``subscription_id``, ``status``,
        ``plan_event_at``, ``plan_event_rank``), or None."""
        ...

    def user_id_for_customer(self, customer_id: str) -> str | None: ...

    def save_account(self, user_id: str, provider: str, **values: Any) -> None:
        """Insert or update the user's billing account (the fields of :meth:`account`)."""
        ...

    def event(
        self,
        type: str,
        user_id: str | None = None,
        *,
        email: str | None = None,
        props: dict[str, Any] | None = None,
    ) -> None:
        """Record an analytics event."""
        ...


@runtime_checkable
class Ledger(Protocol):
    """The host's credit ledger (``host.ledger``): a balance is the sum of a user's lines.

    .. versionadded:: 0.2
    """

    @property
    def config(self) -> HostConfig:
        """The host's configuration (its plugin settings)."""
        ...

    def transaction(self) -> AbstractContextManager[BillingTransaction]:
        """``with ledger.transaction() as tx:``: one :class:`BillingTransaction`."""
        ...

    def balance(self, user_id: str) -> int: ...

    def runs_today(self, user_id: str) -> int:
        """The user's runs since midnight UTC, refunded ones excepted."""
        ...

    def account(self, user_id: str) -> dict[str, Any] | None: ...

    def lines(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ledger lines (``delta``, ``reason``, ``run_id``, ``created_at``)."""
        ...

    def grant(
        self, user_id: str, amount: int, reason: str = "grant", external_id: str | None = None
    ) -> bool:
        """Add ``amount`` credits (negative: take away, never below zero:
        :class:`InsufficientCredits`); an ``external_id`` seen before adds nothing (False)."""
        ...


@runtime_checkable
class RunGate(Protocol):
    """The ``ledger`` of the ``gate_run`` hook: one user's credits inside the transaction that
    will create the run, with the user locked.

    .. versionadded:: 0.2
    """

    tx: BillingTransaction
    user_id: str
    #: the user's plan name (``free`` when none)
    plan: str
    #: credits reserved so far by :meth:`charge`
    charged: int
    #: the time of the gate (UTC)
    now: datetime

    @property
    def config(self) -> HostConfig:
        """The host's configuration (its plugin settings)."""
        ...

    @property
    def base_url(self) -> str: ...

    @property
    def day_started_at(self) -> datetime: ...

    @property
    def next_day_at(self) -> datetime: ...

    def balance(self) -> int: ...

    def runs_today(self) -> int: ...

    def charge(self, amount: int, reason: str = "run") -> None:
        """Reserve ``amount`` credits for the run (:class:`InsufficientCredits`)."""
        ...


@runtime_checkable
class RunSettlement(Protocol):
    """The ``ledger`` of the ``record_run_cost`` hook, when a run is final.

    .. versionadded:: 0.2
    """

    @property
    def config(self) -> HostConfig:
        """The host's configuration (its plugin settings)."""
        ...

    @property
    def charged(self) -> int:
        """Credits reserved for the run."""
        ...

    @property
    def refunded(self) -> int: ...

    def refund(self, amount: int | None = None, reason: str = "refund") -> bool:
        """Give back ``amount`` (default: all that is left) once per reason (``refund``, which
        also stops the run counting towards daily limits, or ``unused``)."""
        ...

    def charge_extra(self, amount: int) -> int:
        """Charge ``amount`` credits beyond the reservation (steps that ran more often than
        once, such as a loop's), once per run, never taking the balance below zero; returns
        what was charged.

        .. versionadded:: 0.3
        """
        ...


@runtime_checkable
class PipelineCalls(Protocol):
    """A caller's pipelines as things to call (``host.pipeline_calls``): which ones may be
    started by a client (a manual or webhook trigger, switched on, not archived), a run of one
    started as any run is (validated with the document's ``input`` schema, gated, billed,
    recorded) and waited for, and the sign-in of a caller outside a web request (a stdio
    server run by ``levqor mcp serve``).

    Every method raises :class:`HttpError` (4xx: the caller's fault, with a message meant for
    them) or lets a platform failure propagate.

    .. versionadded:: 0.3
    """

    def user_for_key(self, api_key: str, scope: str | None = None) -> dict[str, Any]:
        """The user of an API key (``lvq_...``) holding ``scope`` when given (``admin`` holds
        every scope). :class:`HttpError` 401 for an invalid or revoked key, 403 for a missing
        scope."""
        ...

    def callable_pipelines(self, user_id: str) -> list[dict[str, Any]]:
        """The user's pipelines a client may start, newest first: ``id``, ``name``,
        ``description`` (or None), ``input`` (the declared JSON Schema, or None), ``trigger``
        (``manual`` or ``webhook``) and ``version``. Never another user's."""
        ...

    def call_pipeline(
        self,
        user: dict[str, Any],
        pipeline_id: str,
        input: Any,
        *,
        trigger: str,
        wait_seconds: float,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a run of one of :meth:`callable_pipelines` with ``input`` as its trigger data,
        recorded with ``trigger`` as its source (``mcp``), and wait up to ``wait_seconds``
        for it to finish or wait (an approval, a timer). Answers ``{"run_id", "status",
        "output", "error", "final"}`` (``error``: the run's redacted error dict, or None;
        ``final``: the status is succeeded, failed or cancelled). :class:`HttpError` 404 (no
        such callable pipeline of the user's), 422 (``invalid_input`` against the declared
        schema, ``invalid_pipeline``), 402 (refused by billing); nothing is queued then."""
        ...

    def run_status(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        """One of the user's runs as :meth:`call_pipeline` answers it, None when there is no
        such run of theirs."""
        ...

    def start_workers(self) -> bool:
        """Make runs started in this process execute: start the embedded executor's workers
        here when the host's executor is ``embedded`` and none run yet (a command such as
        ``levqor mcp serve``); with Celery the workers elsewhere take them. True when runs
        will execute (workers here or a Celery dispatcher), False when nothing takes them."""
        ...


@runtime_checkable
class Host(Protocol):
    """The host's service object as plugins see it: ``state`` of ``register_blueprints``,
    ``current_app.extensions["levqor"]`` in a route, ``levqor_state()`` in a command.

    .. versionadded:: 0.2
    """

    config: HostConfig
    store: HostStore
    ledger: Ledger
    #: a caller's pipelines started and waited for (.. versionadded:: 0.3)
    pipeline_calls: PipelineCalls

    def authenticate(self, scope: str | None = None) -> dict[str, Any]:
        """The signed-in user of the current request (an API key, a Supabase JWT or the
        dashboard's session with its CSRF token), holding ``scope`` when given. Raises an
        :class:`HttpError` (401/403/503): let it propagate."""
        ...

    def json_body(self, *, required: bool = False, max_bytes: int | None = None) -> Any:
        """The request's JSON body through the host's parser (an empty body is ``{}`` unless
        ``required``). Raises an :class:`HttpError` (400/413/415): let it propagate."""
        ...


@runtime_checkable
class HostCommandGroup(Protocol):
    """The ``levqor`` click group handed to ``register_commands``, found again in a command
    with ``click.get_current_context().find_root().command``.

    .. versionadded:: 0.2
    """

    def levqor_state(self) -> Host:
        """The host for the environment's configuration."""
        ...


# --------------------------------------------------------------------------- the dashboard
@dataclass(frozen=True)
class DashboardPage:
    """A dashboard page a plugin adds (the host's ``register_dashboard_pages`` hook).

    The host serves ``path`` as an HTML shell: ``template`` (found through the plugin's
    blueprint's ``template_folder``; it extends ``"base.html"`` and fills ``{% block content
    %}``) under the host's navigation and strict Content-Security-Policy, loading ``script``, a
    same-origin ES module path (the plugin's blueprint serves it as a static file). Nothing
    inline: no ``<script>`` body, no ``on*=`` or ``style=`` attribute. The page's data comes
    from the JSON API, like every dashboard page.

    .. versionadded:: 0.2
    """

    #: the endpoint name, unique in the app (also the page's navigation section)
    name: str
    #: the URL rule, e.g. ``/billing``
    path: str
    #: the Jinja template (e.g. ``levqor_stripe/billing.html``)
    template: str
    #: the page's ES module, a same-origin path such as ``/billing/static/billing.js``
    script: str
    #: the page title
    title: str
    #: the label of its navigation entry; None: no entry
    nav_label: str | None = None
    #: where the entry goes; the host's entries are 10 (Pipelines), 20 (Runs), 30
    #: (Credentials), 40 (Usage), 60 (Referrals) and 70 (Marketplace)
    order: int = 100

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.startswith("//"):
            raise ValueError(f"dashboard page {self.name}: path must start with one /")
        if not self.script.startswith("/") or self.script.startswith("//"):
            raise ValueError(f"dashboard page {self.name}: script must be a same-origin path")
