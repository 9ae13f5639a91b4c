"""App triggers (``"trigger": {"type": "app", ...}``): polling, instant deliveries, tests.

The :class:`TriggerService` keeps one ``triggers`` row per enabled pipeline with an app trigger
(:meth:`~TriggerService.save` and :meth:`~TriggerService.sync`, called wherever a pipeline is
created, saved, switched on or off or archived), registers instant triggers upstream, polls
polling ones when the poller hands them over (:meth:`~TriggerService.poll`) and turns
deliveries into runs (:meth:`~TriggerService.deliver`).

Exactly one run per item: every item starts its run with the idempotency key
``app:<pipeline id>:<item id>``, so a poll repeated after a crash, a second host or a retried
delivery finds the run already there. The first poll of a trigger (no state yet) is a baseline:
what is upstream now is recorded as seen and starts nothing. Deduplication is by item id, in a
bounded set per trigger (``LEVQOR_TRIGGER_SEEN_MAX``), and by delivery id for instant triggers.

A run the billing gate refuses (402) leaves its item unseen and the trigger's state as it was,
so the same items come back at the next poll and start then, once the owner has credits again;
a run that cannot start for another reason (the pipeline became invalid) counts as a failed
poll. No personal data in logs: ids, connector and trigger names, error types only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from levqor_kernel.context import StepContext
from levqor_kernel.errors import ConnectorError, CredentialError, SignatureError
from levqor_kernel.pipeline import validate_app_trigger
from levqor_kernel.triggers import Delivery, TriggerItem, as_delivery_result, as_poll

from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.config import Config
    from levqor_host.runs.service import RunService
    from levqor_host.store import Store
    from levqor_host.store.rows import PipelineRow, TriggerRow

log = logging.getLogger("levqor.triggers")

__all__ = ["TriggerService", "TriggerSpec"]

#: seconds a poll, a registration or a delivery's parsing may take
HOOK_TIMEOUT = 60.0
#: how many sample items "test trigger" answers with
SAMPLE_ITEMS = 3


@dataclass(frozen=True)
class TriggerSpec:
    """What a pipeline's ``app`` trigger asks for, with what the catalog says of it."""

    connector: str
    trigger: str
    kind: str  # polling | instant
    credential: str | None
    config: dict[str, Any]
    interval: int | None  # polling only
    webhook: str = "trigger"  # instant: trigger (a URL per registration) | connector

    @property
    def spec_hash(self) -> str:
        """What decides whether the trigger starts over (a new baseline, a new registration):
        connector, trigger, credential and config; not the interval."""
        raw = json.dumps(
            [self.connector, self.trigger, self.credential, self.config],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Registration:
    """An instant trigger registered upstream (or paused for its credential) before the row
    that records it is written."""

    spec: TriggerSpec
    token: str
    secret: str
    registration: dict[str, Any] | None
    paused: str | None = None  # why it could not be registered (no credential yet)


@dataclass
class Prepared:
    """What :meth:`TriggerService.prepare` did before a pipeline is written, for
    :meth:`~TriggerService.commit` or :meth:`~TriggerService.abort`."""

    user_id: str
    spec: TriggerSpec | None
    new: Registration | None = None
    #: the trigger row before (its registration removed upstream when ``replaced``)
    old: TriggerRow | None = None
    replaced: bool = False
    old_pipeline: PipelineRow | None = None


class TriggerService:
    """The app triggers of one app: handed its configuration, store, plugin manager, run
    service and (optionally) the mailer that emails owners of failing triggers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        pm: LevqorPluginManager,
        runs: RunService,
        mailer: Any = None,
    ) -> None:
        self.config = config
        self.settings = config.triggers
        self.store = store
        self.pm = pm
        self.runs = runs
        self.mailer = mailer
        #: ``(user_id, credential name, connector) -> values or None``: the one place trigger
        #: hooks get credentials from (the OAuth service puts its refreshing resolver here)
        self.resolve_credentials: Callable[[str, str, str], dict | None] = self._stored_credentials
        #: ``(user_id, credential name, connector, fn) -> fn(values)``: how a poll calls its
        #: hook (the OAuth service's calls once more with a refreshed token after a 401)
        self.call_with_credentials: Callable[
            [str, str | None, str, Callable[[dict | None], Any]], Any
        ] = self._call_with_stored
        self.polled = 0  # polls done by this process (the bench reads it)

    # ------------------------------------------------------------------ the spec
    def spec_of(self, doc: Any) -> TriggerSpec | None:
        """The app trigger of a pipeline document (None for any other trigger, or when the
        connector or trigger is not installed)."""
        trig = doc.get("trigger") if isinstance(doc, dict) else None
        if not isinstance(trig, dict) or trig.get("type") != "app":
            return None
        info = self.pm.catalog.trigger(str(trig.get("connector")), str(trig.get("trigger")))
        if info is None:
            return None
        interval = None
        if info.kind == "polling":
            interval = int(trig.get("interval") or self.settings.poll_default_interval)
        return TriggerSpec(
            connector=info.connector,
            trigger=info.name,
            kind=info.kind,
            credential=trig.get("credential") or None,
            config=dict(trig.get("config") or {}),
            interval=interval,
            webhook=info.webhook,
        )

    def check_interval(self, doc: Any) -> None:
        """400 when a polling trigger asks for an interval below ``LEVQOR_POLL_MIN_INTERVAL``."""
        spec = self.spec_of(doc)
        low = self.settings.poll_min_interval
        if spec is None or spec.kind != "polling" or spec.interval is None or spec.interval >= low:
            return
        message = f"interval must be at least {low} seconds on this host"
        raise ApiError(
            400,
            "invalid_pipeline",
            message,
            {"problems": [{"pointer": "/trigger/interval", "message": message, "step": None}]},
        )

    def webhook_url(self, spec: TriggerSpec | TriggerRow, token: str) -> str:
        """Where an instant trigger's deliveries go."""
        base = self.config.base_url
        webhook = spec.webhook if isinstance(spec, TriggerSpec) else self._webhook_of(spec)
        if webhook == "connector":
            connector = spec.connector if isinstance(spec, TriggerSpec) else spec["connector"]
            return f"{base}/hooks/apps/{connector}"
        return f"{base}/hooks/triggers/{token}"

    def _webhook_of(self, row: TriggerRow) -> str:
        info = self.pm.catalog.trigger(row["connector"], row["trigger"])
        return info.webhook if info is not None else "trigger"

    # ------------------------------------------------------------------ saving pipelines
    def save(
        self,
        user_id: str,
        doc: Any,
        write: Callable[[], PipelineRow | None],
        *,
        pipeline: PipelineRow | None = None,
    ) -> PipelineRow | None:
        """Write a pipeline (``write()`` creates or updates it) with its app trigger: the
        interval is checked and an instant trigger registered upstream *before* the write, the
        trigger row after it. A registration the connector refuses raises :class:`ApiError`
        (4xx with the connector's message) and nothing is written; a write that fails undoes
        the registration. ``pipeline``: the pipeline as it was (an update)."""
        self.check_interval(doc)
        enabled = pipeline is None or (pipeline.get("enabled", True) and not pipeline.get("archived"))
        prepared = self.prepare(user_id, doc if enabled else None, pipeline)
        try:
            p = write()
        except BaseException:
            self.abort(prepared)
            raise
        if p is None:
            self.abort(prepared)
            return None
        self.commit(p, prepared)
        return p

    def sync(self, pipeline: PipelineRow) -> TriggerRow | None:
        """Make the pipeline's trigger row (and upstream registration) match the pipeline as
        stored: its current document while it is enabled and not archived, nothing otherwise.
        Raises :class:`ApiError` when the connector refuses a registration (no row is left
        claiming one)."""
        live = pipeline.get("enabled", True) and not pipeline.get("archived")
        prepared = self.prepare(pipeline["user_id"], pipeline["doc"] if live else None, pipeline)
        return self.commit(pipeline, prepared)

    def set_enabled(self, user: dict, pipeline_id: str, enabled: bool) -> PipelineRow:
        """Switch the user's pipeline on (its instant trigger registered, its polling trigger
        due for a baseline) or off (unregistered, its trigger row and seen ids gone). 404 for a
        pipeline that is not the user's; a refused registration (4xx) leaves it off."""
        p = self.store.pipelines.get(user["id"], pipeline_id)
        if p is None or p.get("archived"):
            raise ApiError(404, "not_found", "pipeline not found")
        if enabled:
            prepared = self.prepare(user["id"], p["doc"], p)
            try:
                q = self.store.pipelines.set_enabled(user["id"], pipeline_id, True)
            except BaseException:
                self.abort(prepared)
                raise
            if q is None:
                self.abort(prepared)
                raise ApiError(404, "not_found", "pipeline not found")
            self.commit(q, prepared)
            return q
        q = self.store.pipelines.set_enabled(user["id"], pipeline_id, False)
        if q is None:
            raise ApiError(404, "not_found", "pipeline not found")
        self.sync(q)
        return q

    def archived(self, pipeline_id: str) -> None:
        """A pipeline was archived: its trigger goes (unregistered upstream)."""
        row = self.store.triggers.delete(pipeline_id)
        if row is not None:
            self._unregister_row(row)

    def prepare(self, user_id: str, doc: Any, pipeline: PipelineRow | None) -> Prepared:
        """Before ``doc`` is stored for ``pipeline`` (None: a new one; ``doc`` None: the
        pipeline is off): register a new or changed instant trigger upstream, after removing
        the registration it replaces. Raises :class:`ApiError` when the connector refuses, with
        the replaced registration restored."""
        spec = self.spec_of(doc) if doc is not None else None
        old = self.store.triggers.get_by_pipeline(pipeline["id"]) if pipeline else None
        prepared = Prepared(user_id=user_id, spec=spec, old=old, old_pipeline=pipeline)
        if spec is None or spec.kind != "instant":
            return prepared
        if old is not None and old["spec_hash"] == spec.spec_hash:
            return prepared  # registered already
        if old is not None and old["kind"] == "instant":
            self._unregister_row(old)  # one webhook per bot or channel: the old one goes first
            prepared.replaced = True
        try:
            prepared.new = self._register(user_id, spec)
        except BaseException:
            self._restore(prepared)
            raise
        return prepared

    def commit(self, pipeline: PipelineRow, prepared: Prepared) -> TriggerRow | None:
        """After the pipeline was written: its trigger row as :meth:`prepare` planned it. A
        row replaced by another kind of trigger, or by none, is unregistered upstream."""
        spec, old = prepared.spec, prepared.old
        live = pipeline.get("enabled", True) and not pipeline.get("archived")
        if spec is None or not live:
            if prepared.new is not None:
                self._unregister_new(prepared.new)
            row = self.store.triggers.delete(pipeline["id"])
            if row is not None and not prepared.replaced:
                self._unregister_row(row)
            return None
        new = prepared.new
        try:
            row = self.store.triggers.save(
                pipeline["id"],
                pipeline["user_id"],
                connector=spec.connector,
                trigger=spec.trigger,
                kind=spec.kind,
                credential=spec.credential,
                config=spec.config,
                spec_hash=spec.spec_hash,
                interval=spec.interval,
                token=new.token if new else None,
                secret=new.secret if new else None,
                registration=new.registration if new else None,
                route=_route_of(new.registration) if new else None,
            )
        except BaseException:
            if new is not None:
                self._unregister_new(new)
            raise
        paused = new.paused if new is not None else None
        if paused is None and spec.kind == "polling" and spec.credential:
            if spec.credential not in self.runs.credential_map(pipeline["user_id"]):
                paused = _missing(spec.credential, spec.connector)
        if paused is not None:  # it waits for the credential (credential_changed resumes it)
            self.store.triggers.pause_for_credential(pipeline["user_id"], spec.credential or "", paused)
            row = self.store.triggers.get_by_pipeline(pipeline["id"]) or row
        if old is not None and old["kind"] == "instant" and not prepared.replaced:
            if old["spec_hash"] != spec.spec_hash:
                self._unregister_row(old)
        return row

    def abort(self, prepared: Prepared) -> None:
        """The pipeline write failed: undo what :meth:`prepare` registered, restore what it
        removed."""
        if prepared.new is not None:
            self._unregister_new(prepared.new)
            prepared.new = None
        self._restore(prepared)

    def _restore(self, prepared: Prepared) -> None:
        old = prepared.old
        if not prepared.replaced or old is None:
            return
        spec = TriggerSpec(
            connector=old["connector"], trigger=old["trigger"], kind=old["kind"],
            credential=old["credential"], config=old["config"], interval=old["interval"],
            webhook=self._webhook_of(old),
        )  # fmt: skip
        try:
            again = self._register(
                prepared.user_id, spec, token=old["token"], secret=self.store.triggers.secret(old["id"])
            )
        except Exception as e:  # noqa: BLE001 - the old registration could not come back
            log.warning("trigger %s could not be registered again: %s", old["id"], type(e).__name__)
            self.store.triggers.delete(old["pipeline_id"])
            return
        self.store.triggers.set_registration(old["id"], again.registration, _route_of(again.registration))
        prepared.replaced = False

    def credential_changed(self, user_id: str, name: str) -> int:
        """The user's credential ``name`` was added, replaced or connected again: triggers
        paused for it resume (an instant one that could not be registered without it is
        registered now; one registered before takes deliveries again). How many resumed."""
        n = 0
        for row in self.store.triggers.paused_for(user_id, name):
            p = self.store.pipelines.get_any(row["pipeline_id"])
            if p is None:
                continue
            if row["kind"] == "instant" and row["registration"] is None:  # never registered
                self.store.triggers.delete(p["id"])
                try:
                    self.sync(p)
                except ApiError as e:
                    log.info("trigger of pipeline %s stays off: %s", p["id"], e.code)
                    continue
            n += 1
        return n + self.store.triggers.resume_for_credential(user_id, name)

    # ------------------------------------------------------------------ registering
    def _register(
        self, user_id: str, spec: TriggerSpec, *, token: str | None = None, secret: str | None = None
    ) -> Registration:
        token = token or secrets.token_urlsafe(24)
        secret = secret or secrets.token_urlsafe(32)
        try:
            creds = self._credentials_or_none(user_id, spec.credential, spec.connector)
        except CredentialError as e:
            return Registration(spec, token, secret, None, paused=e.message)
        ctx = self._context(user_id, f"register:{spec.connector}.{spec.trigger}")
        try:
            reg = self.pm.call_owner(
                "register_trigger",
                spec.connector,
                connector=spec.connector,
                trigger=spec.trigger,
                config=spec.config,
                credentials=creds,
                webhook_url=self.webhook_url(spec, token),
                secret=secret,
                context=ctx,
            )
        except KeyError:
            raise ApiError(
                422, "trigger_not_registered",
                f"connector {spec.connector!r} cannot register trigger {spec.trigger!r}",
            ) from None  # fmt: skip
        except ConnectorError as e:
            raise _registration_error(spec, e) from None
        except Exception as e:  # noqa: BLE001 - a broken connector refuses, it does not crash
            log.warning("register_trigger of %s failed: %s", spec.connector, type(e).__name__)
            raise ApiError(
                422, "trigger_not_registered",
                f"{spec.connector} could not register the trigger ({type(e).__name__})",
            ) from None  # fmt: skip
        if reg is not None and not isinstance(reg, dict):
            raise ApiError(
                422, "trigger_not_registered",
                f"{spec.connector} answered the registration with {type(reg).__name__}, not an object",
            )  # fmt: skip
        return Registration(spec, token, secret, reg)

    def _unregister_new(self, new: Registration) -> None:
        if new.registration is None and new.paused:
            return
        self._unregister(new.spec.connector, new.spec.trigger, new.spec.config,
                         new.spec.credential, new.registration or {}, None)  # fmt: skip

    def _unregister_row(self, row: TriggerRow) -> None:
        if row["kind"] != "instant" or row["registration"] is None:
            return
        self._unregister(row["connector"], row["trigger"], row["config"], row["credential"],
                         row["registration"], row["user_id"])  # fmt: skip

    def _unregister(
        self, connector: str, trigger: str, config: dict, credential: str | None,
        registration: dict, user_id: str | None,
    ) -> None:  # fmt: skip
        """Remove a registration upstream; a failure is logged, never raised (the row goes
        either way: a webhook left behind upstream gets 404 answers)."""
        try:
            creds = None
            if user_id is not None:
                creds = self._credentials_or_none(user_id, credential, connector)
            self.pm.call_owner(
                "unregister_trigger", connector, connector=connector, trigger=trigger,
                config=config, credentials=creds, registration=registration,
                context=self._context(user_id, f"unregister:{connector}.{trigger}"),
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001
            log.warning("unregister_trigger of %s.%s failed: %s", connector, trigger, type(e).__name__)

    # ------------------------------------------------------------------ credentials
    def _stored_credentials(self, user_id: str, name: str, connector: str) -> dict | None:
        found = self.store.credentials.values(user_id, name)
        if found is None or found[0] != connector:
            return None
        return found[1]

    def _credentials_or_none(self, user_id: str, name: str | None, connector: str) -> dict | None:
        """The values of credential ``name`` (None when the trigger names none); a
        :class:`CredentialError` when it names one that does not exist."""
        if not name:
            return None
        values = self.resolve_credentials(user_id, name, connector)
        if values is None:
            raise CredentialError(_missing(name, connector), code="missing_credentials")
        return values

    def _context(self, user_id: str | None, what: str) -> StepContext:
        return StepContext(
            run_id=f"trigger:{what}",
            step_id="trigger",
            deadline=time.monotonic() + HOOK_TIMEOUT,
            env=self.runs.runner.env,
            user_id=user_id,
        )

    def _call_with_stored(
        self, user_id: str, name: str | None, connector: str, fn: Callable[[dict | None], Any]
    ) -> Any:
        return fn(self._credentials_or_none(user_id, name, connector))

    def _call_poll(self, user_id: str, spec: TriggerSpec | TriggerRow, state: Any) -> Any:
        """``poll_trigger`` of the owning plugin with the trigger's credentials (the one call
        site of a poll: the OAuth service's refresh-and-retry wraps it)."""
        get = (lambda k: getattr(spec, k)) if isinstance(spec, TriggerSpec) else spec.get
        connector = get("connector")

        def poll(creds: dict | None) -> Any:
            return as_poll(
                self.pm.call_owner(
                    "poll_trigger", connector, connector=connector, trigger=get("trigger"),
                    config=get("config"), credentials=creds, state=state,
                    context=self._context(user_id, f"poll:{connector}.{get('trigger')}"),
                )
            )  # fmt: skip

        return self.call_with_credentials(user_id, get("credential"), connector, poll)

    # ------------------------------------------------------------------ polling
    def poll(self, t: TriggerRow) -> dict[str, Any]:
        """Poll one due trigger (the poller calls it) and start a run per new item. Returns
        ``{"baseline": bool, "started": n, "error": ...}``; never raises."""
        self.polled += 1
        interval = int(t["interval"] or self.settings.poll_default_interval)
        try:
            res = self._call_poll(t["user_id"], t, t["state"])
        except CredentialError as e:
            if e.code != "missing_credentials":
                return self._failed(t, e, interval)
            # the credential was deleted: wait for it rather than fail every interval
            self.store.triggers.pause_for_credential(t["user_id"], t["credential"] or "", e.message)
            return {"baseline": False, "started": 0, "error": e.to_dict()}
        except Exception as e:  # noqa: BLE001 - a failed poll is recorded, never raised
            return self._failed(t, e, interval)
        if t["state"] is None:  # the first poll: a baseline, no runs
            self.store.triggers.add_seen(t["id"], [i.id for i in res.items])
            self.store.triggers.record_success(t["id"], t["spec_hash"], res.state, interval)
            return {"baseline": True, "started": 0, "error": None}
        try:
            started, refused = self._start_runs(t, res.items)
        except Exception as e:  # noqa: BLE001
            return self._failed(t, e, interval)
        if refused is not None:  # keep the state: the refused items come back next poll
            self.store.triggers.record_success(
                t["id"], t["spec_hash"], t["state"], interval, note=refused
            )
            return {"baseline": False, "started": started, "error": refused}
        self.store.triggers.record_success(t["id"], t["spec_hash"], res.state, interval)
        return {"baseline": False, "started": started, "error": None}

    def _start_runs(self, t: TriggerRow, items: list[TriggerItem]) -> tuple[int, dict | None]:
        """A run per unseen item, oldest first; each started item is then seen. Stops at the
        first run the billing gate refuses: (runs started, the refusal or None)."""
        if not items:
            return 0, None
        seen = self.store.triggers.seen(t["id"], [i.id for i in items])
        fresh: list[TriggerItem] = []
        for item in items:
            if item.id not in seen:
                seen.add(item.id)
                fresh.append(item)
        if not fresh:
            return 0, None
        pipeline = self.store.pipelines.get_any(t["pipeline_id"])
        user = self.store.users.get(t["user_id"])
        if pipeline is None or user is None or pipeline.get("archived") or not pipeline.get("enabled", True):
            return 0, None
        started, done = 0, []
        try:
            for item in fresh:
                try:
                    _run, created = self.runs.start(
                        user, pipeline, item.data, trigger="app",
                        idempotency_key=f"app:{pipeline['id']}:{item.id}",
                    )  # fmt: skip
                except ApiError as e:
                    if e.status == 402:
                        log.info("trigger %s: a run of pipeline %s was refused (%s)",
                                 t["id"], pipeline["id"], e.code)  # fmt: skip
                        return started, {"type": "RunRefused", "message": e.message, "status": 402}
                    raise
                started += int(created)
                done.append(item.id)
        finally:
            self.store.triggers.add_seen(t["id"], done)
        return started, None

    def _failed(self, t: TriggerRow, exc: BaseException, interval: int) -> dict[str, Any]:
        error = _error_dict(exc)
        if not isinstance(exc, ConnectorError | ApiError):  # a bug, here or in the connector
            log.warning("trigger %s: unexpected %s", t["id"], type(exc).__name__, exc_info=exc)
        retry_after = getattr(exc, "retry_after", None)
        row = self.store.triggers.record_failure(
            t["id"], t["spec_hash"], error, interval,
            fail_after=self.settings.fail_after, retry_after=retry_after,
        )  # fmt: skip
        log.info("trigger %s (%s.%s) poll failed: %s", t["id"], t["connector"], t["trigger"], error["type"])
        if row is not None and row["status"] == "failing" and row["notified_at"] is None:
            self._notify_failing(row)
        return {"baseline": False, "started": 0, "error": error}

    def _notify_failing(self, row: TriggerRow) -> None:
        if self.mailer is None or not getattr(self.mailer, "configured", False):
            return
        if not self.store.triggers.claim_notice(row["id"]):
            return  # emailed already in this failing spell
        fresh = self.store.triggers.get(row["id"]) or row
        self.mailer.trigger_failing(fresh, fresh["notified_at"] or "")

    # ------------------------------------------------------------------ deliveries
    def deliver(
        self, delivery: Delivery, *, token: str | None = None, connector: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One HTTP delivery to ``/hooks/triggers/<token>`` (``token``) or
        ``/hooks/apps/<connector>`` (``connector``): verified and parsed by the connector, one
        run per new item for every registration it is for. Returns ``(status, body,
        headers)``: the connector's own answer to a handshake, 200 ``{"ok": true}``, 401 for a
        bad signature, 400 for a body the connector cannot read, 404 for an unknown token or a
        pipeline that is off."""
        if token is not None:
            row = self.store.triggers.get_by_token(token)
            if row is None or row["kind"] != "instant" or row["status"] == "paused":
                return _answer(404, "not_found", "no trigger takes deliveries here")
            if not self._live(row):
                return _answer(404, "not_found", "no trigger takes deliveries here")
            d = replace(delivery, secret=self.store.triggers.secret(row["id"]))
            result = self._receive(row["connector"], row["trigger"], row["config"], d, row["registration"], row["user_id"])
            if isinstance(result, tuple):
                return result
            targets: Callable[[TriggerItem], list[TriggerRow]] = lambda _item: [row]  # noqa: E731
            rows = [row]
        else:
            info = self.pm.catalog.get(connector or "")
            if info is None or not any(
                t.kind == "instant" and t.webhook == "connector" for t in info.triggers.values()
            ):
                return _answer(404, "not_found", "no trigger takes deliveries here")
            result = self._receive(info.name, None, None, replace(delivery, secret=None), None, None)
            if isinstance(result, tuple):
                return result
            rows = [r for r in self.store.triggers.by_connector(info.name) if self._live(r)]

            def targets(item: TriggerItem) -> list[TriggerRow]:
                from levqor_host.store.triggers import route_matches

                return [r for r in rows if route_matches(r["route"], item.route)]

        claimed: list[TriggerRow] = []
        if result.delivery_id:
            for r in rows:
                if self.store.triggers.claim_seen(r["id"], f"delivery:{result.delivery_id}"):
                    claimed.append(r)
            fresh_ids = {r["id"] for r in claimed}
        else:
            fresh_ids = {r["id"] for r in rows}
        started = 0
        try:
            for item in result.items:
                for r in targets(item):
                    if r["id"] in fresh_ids:
                        started += self._deliver_item(r, item)
        except Exception:
            # the database failed under us: the upstream's retry of this delivery must find it new
            for r in claimed:
                self.store.triggers.forget_seen(r["id"], f"delivery:{result.delivery_id}")
            raise
        if result.response is not None:
            status, body, headers = result.response
            return status, body, headers
        return 200, {"ok": True}, {}

    def _live(self, row: TriggerRow) -> bool:
        p = self.store.pipelines.get_any(row["pipeline_id"])
        return p is not None and not p.get("archived") and bool(p.get("enabled", True))

    def _receive(
        self, connector: str, trigger: str | None, config: dict | None, delivery: Delivery,
        registration: dict | None, user_id: str | None,
    ) -> Any:  # fmt: skip
        try:
            return as_delivery_result(
                self.pm.call_owner(
                    "receive_delivery", connector, connector=connector, trigger=trigger,
                    config=config, delivery=delivery, registration=registration,
                    context=self._context(user_id, f"delivery:{connector}"),
                )
            )  # fmt: skip
        except SignatureError as e:
            return _answer(401, e.code or "bad_signature", e.message)
        except KeyError:
            return _answer(404, "not_found", "no trigger takes deliveries here")
        except ConnectorError as e:
            from levqor_host.observability import scrub

            if e.retryable:  # the connector could not finish reading it now: the sender retries a 503
                status, body, headers = _answer(503, e.code or "unavailable", scrub(e.message)[:500])
                if e.retry_after is not None:
                    headers["Retry-After"] = str(max(1, int(e.retry_after)))
                return status, body, headers
            status = e.status if e.status and 400 <= e.status < 500 else 400
            return _answer(status, e.code or "bad_delivery", scrub(e.message)[:500])
        except Exception as e:  # noqa: BLE001 - a delivery the connector cannot read is bad input
            log.warning("receive_delivery of %s failed: %s", connector, type(e).__name__)
            return _answer(400, "bad_delivery", "the delivery could not be read")

    def _deliver_item(self, row: TriggerRow, item: TriggerItem) -> int:
        """One run of ``row``'s pipeline for ``item`` unless the item was seen."""
        if not self.store.triggers.claim_seen(row["id"], item.id):
            return 0
        pipeline = self.store.pipelines.get_any(row["pipeline_id"])
        user = self.store.users.get(row["user_id"])
        if pipeline is None or user is None:
            return 0
        try:
            _run, created = self.runs.start(
                user, pipeline, item.data, trigger="app",
                idempotency_key=f"app:{pipeline['id']}:{item.id}",
            )  # fmt: skip
        except ApiError as e:
            self.store.triggers.forget_seen(row["id"], item.id)
            log.info("trigger %s: delivered item not started (%s)", row["id"], e.code)
            return 0
        except BaseException:
            self.store.triggers.forget_seen(row["id"], item.id)
            raise
        return int(created)

    # ------------------------------------------------------------------ test and status
    def test(self, user: dict, trigger: Any) -> dict[str, Any]:
        """Sample items for building later steps, recording nothing: a polling trigger is
        polled as if for the first time and the newest few items' data returned; an instant
        trigger answers the connector's sample item (events arrive only once it is enabled).
        422 for an invalid trigger, 422/503 when the upstream refuses or cannot be reached."""
        problems = validate_app_trigger(
            trigger, self.pm.catalog, credentials=self.runs.credential_map(user["id"])
        )
        if problems:
            raise ApiError(
                422, "invalid_trigger", "the trigger is not valid",
                {"problems": [p.to_dict() for p in problems]},
            )  # fmt: skip
        spec = self.spec_of({"trigger": trigger})
        assert spec is not None  # validated above
        info = self.pm.catalog.trigger(spec.connector, spec.trigger)
        if spec.kind == "instant":
            return {
                "kind": "instant",
                "source": "sample",
                "items": [info.sample] if info is not None else [],
                "message": "an instant trigger receives events once its pipeline is enabled; "
                "this is the connector's sample item",
            }
        try:
            res = self._call_poll(user["id"], spec, None)
        except ConnectorError as e:  # its message scrubbed like a failed poll's (an echoed key)
            from levqor_host.observability import scrub

            status = 503 if e.retryable else 422
            raise ApiError(status, "trigger_failed", f"{spec.connector}: {scrub(e.message)[:500]}") from None
        except Exception as e:  # noqa: BLE001
            raise ApiError(
                422, "trigger_failed", f"{spec.connector} could not be polled ({type(e).__name__})"
            ) from None
        items = [i.data for i in res.items[-SAMPLE_ITEMS:]][::-1]
        return {"kind": "polling", "source": "upstream", "items": items}

    def status(self, pipeline_id: str) -> dict[str, Any] | None:
        """The trigger of a pipeline as the API shows it (None when it has none: another
        trigger type, or the pipeline is off)."""
        row = self.store.triggers.get_by_pipeline(pipeline_id)
        if row is None:
            return None
        out: dict[str, Any] = {
            "connector": row["connector"],
            "trigger": row["trigger"],
            "kind": row["kind"],
            "status": row["status"],
            "failures": row["failures"],
            "last_error": row["last_error"],
            "last_polled_at": row["last_polled_at"],
            "next_poll_at": row["next_poll_at"],
            "interval": row["interval"],
            "webhook_url": None,
        }
        if row["kind"] == "instant":
            out["webhook_url"] = self.webhook_url(row, row["token"])
        return out


def _missing(name: str, connector: str) -> str:
    return f"credential {name!r} does not exist or is not for {connector!r}: add it"


def _route_of(registration: dict | None) -> dict | None:
    route = (registration or {}).get("route")
    return route if isinstance(route, dict) else None


def _answer(status: int, code: str, message: str) -> tuple[int, dict, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


def _error_dict(exc: BaseException) -> dict[str, Any]:
    from levqor_host.observability import scrub

    if isinstance(exc, ConnectorError):
        out = exc.to_dict()
        out["message"] = scrub(out.get("message"))[:500]
        return out
    if isinstance(exc, ApiError):
        return {"type": "RunNotStarted", "message": scrub(exc.message)[:500], "status": exc.status,
                "code": exc.code}  # fmt: skip
    return {"type": type(exc).__name__, "message": "the trigger failed unexpectedly", "retryable": False}


def _registration_error(spec: TriggerSpec, e: ConnectorError) -> ApiError:
    """A connector's refusal to register, as the API's error: 400 for credentials it refuses,
    409 for a conflict upstream, 503 for an upstream that is down or rate limiting (try again),
    422 otherwise; the connector's message, never a 5xx for the user's mistake."""
    from levqor_host.observability import scrub

    message = f"{spec.connector} refused to register the trigger: {scrub(e.message)[:300]}"
    if e.retryable:
        return ApiError(503, "upstream_unavailable", message + " (try again)")
    if isinstance(e, CredentialError):
        return ApiError(400, "trigger_credentials", message)
    if e.status == 409:
        return ApiError(409, "conflict", message)
    return ApiError(422, "trigger_not_registered", message)
