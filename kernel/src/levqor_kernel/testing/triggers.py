"""Contract checks for triggers, run against the connector's own fake.

Subclass :class:`PollingTriggerContract` or :class:`InstantTriggerContract` in your tests (name
the subclass ``Test...`` so pytest collects it) and answer a few questions about your fake; the
kit then checks what the host relies on:

* polling: the first poll (state ``None``) returns a JSON state and the items upstream now
  (the host records them as the baseline and starts no runs); an item added upstream shows up in
  the next poll with one new id, the same id when polled again with the same state; an unchanged
  upstream yields no id never seen; the cursor advances; items match the output schema; 401, 429
  with ``Retry-After`` and 503 map to the errors the host acts on;
* instant: ``register_trigger`` subscribes at the fake and ``unregister_trigger`` removes it; a
  delivery signed with the wrong secret, or with its headers stripped, raises ``SignatureError``;
  a handshake gets the expected answer and starts nothing; one delivery with several events
  gives several items with stable, distinct ids; register's errors map like a poll's.

The same checks run as functions, :func:`check_polling_trigger` and
:func:`check_instant_trigger`, returning a :class:`~levqor_kernel.testing.ContractResult`.
"""

from __future__ import annotations

import dataclasses
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from ..catalog import TriggerInfo
from ..errors import ConnectorError, SignatureError
from ..plugins import LevqorPluginManager
from ..triggers import Delivery, DeliveryResult, Poll, as_delivery_result, as_poll
from .adapter import FakeAdapter, as_json, check_error_mapping, describe, leaked
from .contract import ContractResult

__all__ = [
    "InstantTriggerContract",
    "PollingTriggerContract",
    "check_instant_trigger",
    "check_polling_trigger",
]

POLLING_GROUPS = ("description", "baseline", "errors")
INSTANT_GROUPS = ("description", "registration", "deliveries", "errors")


class _TriggerContract(FakeAdapter):
    #: the trigger's name in your description
    trigger: str = ""

    def config(self, fake: Any) -> dict[str, Any]:
        """The trigger's settings for the fake (default: the trigger's ``example``, else {})."""
        info = self.plugin_manager().catalog.trigger(self.connector, self.trigger)
        return dict(info.example) if info is not None and info.example else {}


def _describe_trigger(
    res: ContractResult, spec: _TriggerContract, kind: str, hooks: tuple[str, ...]
) -> tuple[LevqorPluginManager, TriggerInfo] | None:
    """The description checks: valid schemas, a sample matching the output, the hooks exist."""
    name = f"{spec.connector}.{spec.trigger}: the description is valid (schemas, sample, example)"
    res.checks.append(name)
    pm = spec.plugin_manager()
    if pm.failures:
        res.problems += [f"{name}: {f.error}" for f in pm.failures]
        return None
    info = pm.catalog.trigger(spec.connector, spec.trigger)
    if info is None:
        conn = pm.catalog.get(spec.connector)
        have = sorted(conn.triggers) if conn is not None else []
        res.problems.append(
            f"{name}: connector {spec.connector!r} has no trigger {spec.trigger!r} "
            f"(it has {have or 'none'}; set `connector` and `trigger`)"
        )
        return None
    if info.kind != kind:
        res.problems.append(f"{name}: the trigger's kind is {info.kind!r}, this contract checks {kind} triggers")
        return None
    for hook in hooks:
        if pm.owner_impl(hook, spec.connector) is None:
            res.problems.append(f"{name}: the plugin does not implement {hook}")
    return None if res.problems else (pm, info)


def _schema_problems(info: TriggerInfo, data: Any, what: str) -> list[str]:
    errors = sorted(Draft202012Validator(info.output).iter_errors(data), key=lambda e: list(e.path))
    return [
        f"{what} does not match the output schema at /{'/'.join(map(str, e.path))}: {e.message}"
        for e in errors[:3]
    ]


def _config_problems(info: TriggerInfo, config: Any) -> list[str]:
    return [f"config(fake) does not match the config schema: {e.message}" for e in info.validator.iter_errors(config)][:3]


def _ids(poll: Poll) -> list[str]:
    return [i.id for i in poll.items]


def _repeats(ids: list[str]) -> list[str]:
    return sorted({i for i in ids if ids.count(i) > 1})


# ================================================================== polling
class PollingTriggerContract(_TriggerContract):
    """Checks a polling trigger against your fake. Subclass it::

        class TestNewNote(PollingTriggerContract):
            plugin = levqor_acme
            connector = "acme"
            trigger = "new_note"

            def fake(self):
                return FakeAcme()

            def credentials(self, fake):
                return {"token": fake.token}

            def env(self, fake):
                return {"LEVQOR_ACME_API_BASE": fake.url}

            def add_item(self, fake):
                return "note:" + fake.add_note("hello")["id"]   # the id the item will have

    Also override ``config(fake)`` (default: the trigger's ``example``), and ``fail`` when
    your API reports errors in a shape of its own.
    """

    #: False for a trigger that keeps no cursor and relies on the host's deduplication alone
    cursor: bool = True
    #: False when the first poll returns only a starting state, never the items there are now
    first_poll_items: bool = True

    def add_item(self, fake: Any) -> str | None:
        """Add one item upstream (a row, a message) and return the id the trigger will give it,
        or None when you cannot tell in advance (the kit then expects exactly one new id)."""
        raise NotImplementedError(
            f"{type(self).__name__}: override add_item(fake) to add one item upstream in your fake"
        )

    def test_levqor_contract_polling_description(self) -> None:
        _assert(check_polling_trigger(self, ["description"]))

    def test_levqor_contract_polling_baseline_and_new_items(self) -> None:
        _assert(check_polling_trigger(self, ["baseline"]))

    def test_levqor_contract_polling_errors(self) -> None:
        _assert(check_polling_trigger(self, ["errors"]))


def check_polling_trigger(
    spec: PollingTriggerContract, groups: list[str] | tuple[str, ...] = POLLING_GROUPS
) -> ContractResult:
    """Run the polling checks (``groups``: description, baseline, errors). Never raises for
    what the connector does; a broken adapter (no ``fake()``) raises."""
    res = ContractResult()
    found = _describe_trigger(res, spec, "polling", ("poll_trigger",))
    if found is None:
        return res
    pm, info = found
    for group in groups:
        if group == "baseline":
            with spec.fake() as fake:
                _polling_baseline(res, spec, pm, info, fake)
        elif group == "errors":
            with spec.fake() as fake:
                _polling_errors(res, spec, pm, fake)
        elif group != "description":
            raise ValueError(f"unknown group {group!r} (use {POLLING_GROUPS})")
    return res


class _Poller:
    def __init__(self, spec: PollingTriggerContract, pm: LevqorPluginManager, fake: Any) -> None:
        self.spec, self.pm, self.fake = spec, pm, fake
        self.config = spec.config(fake)
        self.credentials = spec.credentials(fake)
        self.secrets = spec.secrets(self.credentials)

    def __call__(self, state: dict[str, Any] | None) -> Poll:
        return as_poll(
            self.pm.call_owner(
                "poll_trigger",
                self.spec.connector,
                connector=self.spec.connector,
                trigger=self.spec.trigger,
                config=self.config,
                credentials=self.credentials,
                state=state,
                context=self.spec.context(self.fake, f"poll-{self.spec.trigger}"),
            )
        )


def _polling_baseline(
    res: ContractResult, spec: PollingTriggerContract, pm: LevqorPluginManager, info: TriggerInfo, fake: Any
) -> None:
    where = f"{spec.connector}.{spec.trigger}"
    poll = _Poller(spec, pm, fake)
    bad = _config_problems(info, poll.config)
    if bad:
        res.problems += [f"{where}: {b}" for b in bad]
        return

    def step(title: str, state: dict[str, Any] | None) -> Poll | None:
        res.checks.append(f"{where}: {title}")
        try:
            return poll(state)
        except Exception as e:  # noqa: BLE001
            res.problems.append(f"{where}: {title}: raised {describe(e)}")
            return None

    def state_ok(p: Poll, title: str) -> None:
        text = as_json(p.state)
        if text is None:
            res.problems.append(f"{where}: {title}: the state is not JSON (the host stores it): {p.state!r:.100}")
        elif leaked(text, poll.secrets):
            res.problems.append(f"{where}: {title}: a credential value appears in the state (the host stores it in clear)")

    def items_ok(p: Poll, title: str) -> None:
        dup = _repeats(_ids(p))
        if dup:
            res.problems.append(f"{where}: {title}: ids repeat within one poll: {dup[:5]}")
        for item in p.items[:20]:
            for msg in _schema_problems(info, item.data, f"item {item.id!r}"):
                res.problems.append(f"{where}: {title}: {msg}")

    # 1. the first poll: the baseline
    first_added = spec.add_item(fake)
    title = "the first poll (state None) returns a state and the items there are now"
    p1 = step(title, None)
    if p1 is None:
        return
    state_ok(p1, title)
    items_ok(p1, title)
    if spec.first_poll_items:
        if not p1.items:
            res.problems.append(
                f"{where}: {title}: it returned no items although the fake has one upstream; return "
                "the current items (the host records them as the baseline and starts no runs), or "
                "set first_poll_items = False"
            )
        elif first_added is not None and first_added not in _ids(p1):
            res.problems.append(
                f"{where}: {title}: the item added upstream (id {first_added!r}) is not among its "
                f"ids {_ids(p1)[:10]}"
            )
    seen = set(_ids(p1))

    # 2. nothing changed upstream
    title = "with nothing new upstream, the next poll (with the returned state) has no unseen id"
    p2 = step(title, p1.state)
    if p2 is None:
        return
    state_ok(p2, title)
    items_ok(p2, title)
    fresh = sorted(set(_ids(p2)) - seen)
    if fresh:
        res.problems.append(
            f"{where}: {title}: it returned ids the first poll did not: {fresh[:5]} (an id that "
            "changes between polls starts a run for an old item)"
        )
    seen |= set(_ids(p2))

    # 3. one item added upstream
    expected = spec.add_item(fake)
    title = "after one item is added upstream, the next poll has exactly one new id"
    p3 = step(title, p2.state)
    if p3 is None:
        return
    state_ok(p3, title)
    items_ok(p3, title)
    new = sorted(set(_ids(p3)) - seen)
    if not new:
        res.problems.append(
            f"{where}: {title}: the poll with the previous state returned no new id (ids "
            f"{_ids(p3)[:10]}); is the state used as the cursor?"
        )
    elif len(new) > 1:
        res.problems.append(f"{where}: {title}: it returned {len(new)} new ids {new[:5]} for one new item")
    elif expected is not None and new != [expected]:
        res.problems.append(f"{where}: {title}: the new item's id is {new[0]!r}, add_item said {expected!r}")
    if spec.cursor:
        res.checks.append(f"{where}: the state (cursor) advances after a new item")
        if as_json(p3.state) == as_json(p2.state):
            res.problems.append(
                f"{where}: the state (cursor) advances after a new item: it stayed {p3.state!r:.100}; "
                "advance it so the next poll skips what was seen (or set cursor = False when the "
                "trigger keeps no cursor)"
            )
    seen |= set(_ids(p3))

    # 4. the same state again (the host polls with it again when it could not save the answer)
    if len(new) == 1:
        title = "polling again with the same state gives the new item the same id"
        again = step(title, p2.state)
        if again is not None and new[0] not in _ids(again):
            res.problems.append(
                f"{where}: {title}: the new item's id {new[0]!r} is not among {_ids(again)[:10]} "
                "(ids must be stable: the id is the run's idempotency key)"
            )

    # 5. nothing new again
    title = "with nothing new upstream after that, the next poll has no unseen id"
    p4 = step(title, p3.state)
    if p4 is None:
        return
    state_ok(p4, title)
    fresh = sorted(set(_ids(p4)) - seen)
    if fresh:
        res.problems.append(f"{where}: {title}: it returned ids never seen: {fresh[:5]}")


def _polling_errors(
    res: ContractResult, spec: PollingTriggerContract, pm: LevqorPluginManager, fake: Any
) -> None:
    where = f"{spec.connector}.{spec.trigger}"
    poll = _Poller(spec, pm, fake)
    spec.add_item(fake)
    res.checks.append(f"{where}: a poll succeeds before the failures")
    try:
        state = poll(None).state
    except Exception as e:  # noqa: BLE001
        res.problems.append(f"{where}: the first poll raised {describe(e)}; the error checks need it to work")
        return
    check_error_mapping(res, spec, fake, f"{where}: poll", lambda: poll(state), poll.secrets)


# ================================================================== instant
class InstantTriggerContract(_TriggerContract):
    """Checks an instant trigger against your fake. Subclass it::

        class TestNoteCreated(InstantTriggerContract):
            plugin = levqor_acme
            connector = "acme"
            trigger = "note_created"

            def fake(self): return FakeAcme()
            def credentials(self, fake): return {"token": fake.token}
            def env(self, fake): return {"LEVQOR_ACME_API_BASE": fake.url}

            def delivery(self, fake, events, sign_with):
                return fake.delivery([fake.new_note_event() for _ in range(events)], secret=sign_with)

            def is_registered(self, fake, webhook_url):
                return webhook_url in fake.webhooks

    ``delivery`` builds a request as the upstream sends it, signed with ``sign_with`` (the kit
    passes the registration's secret, and a wrong one to see it refused); the kit sets
    ``Delivery.secret`` as the host does. For an app-wide signing secret (Slack's), return it
    from ``env`` as ``self.secret``.
    """

    #: how many events the upstream can put in one delivery (1 for Telegram and Slack)
    events_per_delivery: int = 3
    #: True when the signature covers the body (an HMAC): a changed body must be refused
    signs_body: bool = False
    #: the secret the kit registers with and signs valid deliveries with
    secret: str = "levqor-contract-secret-" + _secrets.token_hex(8)
    #: where the kit says deliveries go
    webhook_url: str = "https://levqor.example/hooks/triggers/contract-token"

    def delivery(self, fake: Any, events: int, sign_with: str) -> Delivery:
        """One HTTP request carrying ``events`` new events, signed with ``sign_with``."""
        raise NotImplementedError(
            f"{type(self).__name__}: override delivery(fake, events, sign_with) to build a "
            "delivery as your upstream sends it"
        )

    def handshake(self, fake: Any, sign_with: str) -> tuple[Delivery, tuple] | None:
        """A handshake delivery (a URL challenge) and the ``(status, body)`` or ``(status, body,
        headers)`` it must be answered with; None when the upstream has no handshake."""
        return None

    def is_registered(self, fake: Any, webhook_url: str) -> bool | None:
        """Whether the fake holds a subscription sending to ``webhook_url``; None when this
        trigger subscribes nothing upstream (a connector-wide webhook the operator sets once)."""
        return None

    def test_levqor_contract_instant_description(self) -> None:
        _assert(check_instant_trigger(self, ["description"]))

    def test_levqor_contract_instant_registration(self) -> None:
        _assert(check_instant_trigger(self, ["registration"]))

    def test_levqor_contract_instant_deliveries(self) -> None:
        _assert(check_instant_trigger(self, ["deliveries"]))

    def test_levqor_contract_instant_errors(self) -> None:
        _assert(check_instant_trigger(self, ["errors"]))


def check_instant_trigger(
    spec: InstantTriggerContract, groups: list[str] | tuple[str, ...] = INSTANT_GROUPS
) -> ContractResult:
    """Run the instant checks (``groups``: description, registration, deliveries, errors)."""
    res = ContractResult()
    found = _describe_trigger(res, spec, "instant", ("register_trigger", "receive_delivery"))
    if found is None:
        return res
    pm, info = found
    if info.webhook == "trigger" and pm.owner_impl("unregister_trigger", spec.connector) is None:
        res.problems.append(
            f"{spec.connector}.{spec.trigger}: the plugin does not implement unregister_trigger "
            "(a disabled pipeline must stop its upstream webhook)"
        )
        return res
    for group in groups:
        if group in ("registration", "deliveries", "errors"):
            with spec.fake() as fake:
                hooks = _Instant(spec, pm, info, fake)
                {"registration": _instant_registration, "deliveries": _instant_deliveries,
                 "errors": _instant_errors}[group](res, hooks)
        elif group != "description":
            raise ValueError(f"unknown group {group!r} (use {INSTANT_GROUPS})")
    return res


class _Instant:
    def __init__(self, spec: InstantTriggerContract, pm: LevqorPluginManager, info: TriggerInfo, fake: Any) -> None:
        self.spec, self.pm, self.info, self.fake = spec, pm, info, fake
        self.where = f"{spec.connector}.{spec.trigger}"
        self.wide = info.webhook == "connector"
        self.config = spec.config(fake)
        self.credentials = spec.credentials(fake)
        self.secrets = spec.secrets(self.credentials)
        self.url = (
            spec.webhook_url if not self.wide else f"https://levqor.example/hooks/apps/{spec.connector}"
        )

    def _call(self, hook: str, **kw: Any) -> Any:
        return self.pm.call_owner(
            hook, self.spec.connector, connector=self.spec.connector,
            context=self.spec.context(self.fake, f"{hook}-{self.spec.trigger}"), **kw,
        )

    def register(self) -> dict[str, Any] | None:
        return self._call(
            "register_trigger", trigger=self.spec.trigger, config=self.config,
            credentials=self.credentials, webhook_url=self.url, secret=self.spec.secret,
        )

    def unregister(self, registration: dict[str, Any]) -> None:
        self._call(
            "unregister_trigger", trigger=self.spec.trigger, config=self.config,
            credentials=self.credentials, registration=registration,
        )

    def receive(self, delivery: Delivery, registration: dict[str, Any] | None) -> DeliveryResult:
        # the host hands the delivery what it knows: the registration's secret, or for a
        # connector-wide webhook nothing (no trigger, config or registration)
        d = dataclasses.replace(
            delivery,
            headers={k.lower(): v for k, v in dict(delivery.headers).items()},
            secret=None if self.wide else self.spec.secret,
        )
        return as_delivery_result(self._call(
            "receive_delivery",
            trigger=None if self.wide else self.spec.trigger,
            config=None if self.wide else self.config,
            delivery=d,
            registration=None if self.wide else registration,
        ))

    def registered(self) -> bool | None:
        return self.spec.is_registered(self.fake, self.url)


def _instant_register(res: ContractResult, h: _Instant, title: str) -> dict[str, Any] | None:
    """register_trigger, with the checks of its answer; None when it failed (reported)."""
    res.checks.append(f"{h.where}: {title}")
    try:
        reg = h.register()
    except Exception as e:  # noqa: BLE001
        res.problems.append(f"{h.where}: {title}: register_trigger raised {describe(e)}")
        return None
    if reg is not None and not isinstance(reg, Mapping):
        res.problems.append(f"{h.where}: {title}: register_trigger returned {type(reg).__name__}, not a dict or None")
        return None
    reg = dict(reg or {})
    text = as_json(reg)
    if text is None:
        res.problems.append(f"{h.where}: {title}: the registration is not JSON (the host stores it)")
    elif leaked(text, h.secrets):
        res.problems.append(f"{h.where}: {title}: a credential value appears in the registration")
    if h.wide and not isinstance(reg.get("route"), Mapping):
        res.problems.append(
            f"{h.where}: {title}: a connector-wide trigger's registration must hold a route object "
            "(deliveries reach the registrations whose route their items contain)"
        )
    return reg


def _instant_registration(res: ContractResult, h: _Instant) -> None:
    before = h.registered()
    if before is None:
        if not h.wide:
            res.checks.append(f"{h.where}: register_trigger subscribes at the fake")
            res.problems.append(
                f"{h.where}: register_trigger subscribes at the fake: override is_registered(fake, "
                "webhook_url) to say whether your fake holds a webhook for that URL"
            )
            return
        _instant_register(res, h, "register_trigger answers with a route")
        return
    if before:
        res.problems.append(f"{h.where}: is_registered says the fake has a webhook before register_trigger ran")
        return
    reg = _instant_register(res, h, "register_trigger subscribes at the fake")
    if reg is None:
        return
    if not h.registered():
        res.problems.append(
            f"{h.where}: register_trigger subscribes at the fake: afterwards the fake has no webhook "
            f"for {h.url}"
        )
        return
    title = "unregister_trigger removes the subscription"
    res.checks.append(f"{h.where}: {title}")
    try:
        h.unregister(reg)
    except Exception as e:  # noqa: BLE001
        res.problems.append(f"{h.where}: {title}: raised {describe(e)}")
        return
    if h.registered():
        res.problems.append(f"{h.where}: {title}: the fake still has a webhook for {h.url}")


def _route_problems(h: _Instant, result: DeliveryResult, reg: Mapping[str, Any]) -> list[str]:
    if not h.wide:
        return []
    route = reg.get("route") or {}
    out = []
    for item in result.items:
        r = item.route or {}
        if any(r.get(k) != v for k, v in route.items()):
            out.append(
                f"item {item.id!r}'s route {item.route!r} does not contain the registration's route "
                f"{dict(route)!r} (the host would start no run for it)"
            )
    return out


def _instant_deliveries(res: ContractResult, h: _Instant) -> None:
    spec = h.spec
    reg = _instant_register(res, h, "register_trigger before the deliveries")
    if reg is None:
        return
    right, wrong = spec.secret, "wrong-" + _secrets.token_hex(12)

    def receive(title: str, delivery: Delivery) -> DeliveryResult | None:
        res.checks.append(f"{h.where}: {title}")
        try:
            return h.receive(delivery, reg)
        except Exception as e:  # noqa: BLE001
            res.problems.append(f"{h.where}: {title}: raised {describe(e)}")
            return None

    def refused(title: str, delivery: Delivery) -> None:
        res.checks.append(f"{h.where}: {title}")
        try:
            out = h.receive(delivery, reg)
        except SignatureError:
            return
        except ConnectorError as e:
            res.problems.append(f"{h.where}: {title}: got {describe(e)}, expected SignatureError")
        except Exception as e:  # noqa: BLE001
            res.problems.append(f"{h.where}: {title}: raised {describe(e)} instead of SignatureError")
        else:
            res.problems.append(
                f"{h.where}: {title}: it was accepted ({len(out.items)} items); verify the signature "
                "or secret first and raise SignatureError"
            )

    n = max(1, int(spec.events_per_delivery))
    first = spec.delivery(h.fake, n, right)
    title = f"a delivery carrying {n} event{'s' if n > 1 else ''} gives {n} item{'s' if n > 1 else ''}"
    got = receive(title, first)
    if got is not None:
        ids = [i.id for i in got.items]
        if len(ids) != n:
            res.problems.append(f"{h.where}: {title}: it gave {len(ids)} items (ids {ids[:10]}); return one per event")
        if _repeats(ids):
            res.problems.append(f"{h.where}: {title}: ids repeat: {_repeats(ids)[:5]}")
        for item in got.items[:20]:
            res.problems += [f"{h.where}: {title}: {m}" for m in _schema_problems(h.info, item.data, f"item {item.id!r}")]
        res.problems += [f"{h.where}: {title}: {m}" for m in _route_problems(h, got, reg)]
        again = receive("the same delivery received again gives the same ids", first)
        if again is not None and [i.id for i in again.items] != ids:
            res.problems.append(
                f"{h.where}: the same delivery received again gives the same ids: {ids[:5]} then "
                f"{[i.id for i in again.items][:5]} (the host deduplicates a retried delivery by them)"
            )
        other = receive("another delivery gives other ids", spec.delivery(h.fake, 1, right))
        if other is not None:
            clash = sorted({i.id for i in other.items} & set(ids))
            if len(other.items) != 1:
                res.problems.append(f"{h.where}: another delivery gives other ids: one event gave {len(other.items)} items")
            elif clash:
                res.problems.append(
                    f"{h.where}: another delivery gives other ids: a new event got the id {clash[0]!r} "
                    "of an earlier one (the host would drop it as seen)"
                )

    refused("a delivery signed with a wrong secret raises SignatureError", spec.delivery(h.fake, 1, wrong))
    plain = spec.delivery(h.fake, 1, right)
    refused(
        "a delivery without its headers and query raises SignatureError",
        dataclasses.replace(plain, headers={}, query={}),
    )
    if spec.signs_body:
        refused(
            "a delivery whose body was changed after signing raises SignatureError",
            dataclasses.replace(plain, body=plain.body + b" "),
        )

    hs = spec.handshake(h.fake, right)
    if hs is not None:
        delivery, expected = hs
        title = "a handshake gets the expected answer and starts nothing"
        out = receive(title, delivery)
        if out is not None:
            want_status, want_body = expected[0], expected[1]
            want_headers = dict(expected[2]) if len(expected) > 2 else {}
            if out.response is None:
                res.problems.append(f"{h.where}: {title}: no response; answer with DeliveryResult(response=(status, body, headers))")
            else:
                status, body, headers = out.response
                lower = {k.lower(): v for k, v in headers.items()}
                if status != want_status or body != want_body:
                    res.problems.append(
                        f"{h.where}: {title}: answered ({status}, {body!r:.100}), expected "
                        f"({want_status}, {want_body!r:.100})"
                    )
                for k, v in want_headers.items():
                    if lower.get(k.lower()) != v:
                        res.problems.append(f"{h.where}: {title}: header {k} is {lower.get(k.lower())!r}, expected {v!r}")
            if out.items:
                res.problems.append(f"{h.where}: {title}: it gave {len(out.items)} items; a handshake starts no run")
        refused("a handshake signed with a wrong secret raises SignatureError", spec.handshake(h.fake, wrong)[0])


def _instant_errors(res: ContractResult, h: _Instant) -> None:
    srv = h.spec.server(h.fake)
    start = len(srv.requests)
    reg = _instant_register(res, h, "register_trigger succeeds before the failures")
    if reg is None:
        return
    if len(srv.requests) == start:
        res.checks.append(f"{h.where}: register_trigger calls no API, so its error mapping does not apply")
        return
    if not h.wide:
        try:
            h.unregister(reg)
        except Exception as e:  # noqa: BLE001
            res.problems.append(f"{h.where}: unregister_trigger raised {describe(e)}")
    check_error_mapping(res, h.spec, h.fake, f"{h.where}: register_trigger", h.register, h.secrets)


def _assert(result: ContractResult) -> None:
    assert result.ok, "trigger contract problems:\n  " + "\n  ".join(result.problems)

