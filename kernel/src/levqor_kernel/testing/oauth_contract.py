"""Contract checks for a connector that declares OAuth2, run against the connector's own fake.

What the connector controls, checked here: its credentials schema accepts the stored OAuth2
shape (:func:`levqor_kernel.oauth.sample_oauth_credentials`); with such a credential every
request it makes (each action's example, each polling trigger's poll, ``check_credentials``)
sends ``Authorization: Bearer <access_token>``, and a refreshed token at once (no client or session
keeps the old one); a 401 from the upstream raises a
``CredentialError`` with status 401 (the host then refreshes the token and calls once more:
that part is the host's); ``oauth_credentials`` (or the ``oauth2.account`` pointer) names the
connected account. Subclass :class:`OAuthContract` (as ``Test...``) or call :func:`check_oauth`.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from ..oauth import json_pointer, sample_oauth_credentials
from ..plugins import LevqorPluginManager
from ..triggers import as_poll
from .adapter import FakeAdapter, as_json, check_error_mapping, describe
from .contract import ContractResult

__all__ = ["OAuthContract", "check_oauth"]

OAUTH_GROUPS = ("description", "bearer", "errors", "account")


class OAuthContract(FakeAdapter):
    """Checks a connector's OAuth2 side against your fake. Subclass it::

        class TestOAuth(OAuthContract):
            plugin = levqor_acme
            connector = "acme"

            def fake(self): return FakeAcme()
            def env(self, fake): return {"LEVQOR_ACME_API_BASE": fake.url}
            def oauth_credentials(self, fake):
                return {**sample_oauth_credentials(), "access_token": fake.issue_token()}

    The kit calls every action with its example payload (``payload`` to change it), every
    polling trigger with its example config (``trigger_config``) and ``check_credentials`` when
    you implement it; limit them with ``actions`` and ``triggers``.
    """

    #: the actions to call (None: every action)
    actions: list[str] | None = None
    #: the polling triggers to poll (None: every polling trigger)
    triggers: list[str] | None = None

    def oauth_credentials(self, fake: Any) -> dict[str, Any]:
        """A stored OAuth2 credential whose access token the fake accepts (default: the
        sample with a random access token)."""
        return {**sample_oauth_credentials(), "access_token": "levqor-contract-" + _secrets.token_hex(12)}

    def credentials(self, fake: Any) -> dict[str, Any] | None:
        return self.oauth_credentials(fake)

    def payload(self, fake: Any, action: str) -> dict[str, Any]:
        """The payload an action is called with (default: its example)."""
        return dict(self.plugin_manager().catalog.action(self.connector, action).example)

    def trigger_config(self, fake: Any, trigger: str) -> dict[str, Any]:
        """The config a polling trigger is polled with (default: its example, else {})."""
        info = self.plugin_manager().catalog.trigger(self.connector, trigger)
        return dict(info.example) if info is not None and info.example else {}

    def token_response(self, fake: Any) -> dict[str, Any]:
        """The token endpoint's answer after "Connect" (handed to ``oauth_credentials``)."""
        creds = self.oauth_credentials(fake)
        return {
            "access_token": creds["access_token"],
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": creds.get("refresh_token", "levqor-contract-refresh"),
            "scope": creds.get("scope", ""),
        }

    def test_levqor_contract_oauth_description(self) -> None:
        _assert(check_oauth(self, ["description"]))

    def test_levqor_contract_oauth_bearer(self) -> None:
        _assert(check_oauth(self, ["bearer"]))

    def test_levqor_contract_oauth_errors(self) -> None:
        _assert(check_oauth(self, ["errors"]))

    def test_levqor_contract_oauth_account(self) -> None:
        _assert(check_oauth(self, ["account"]))


def _assert(result: ContractResult) -> None:
    assert result.ok, "OAuth2 contract problems:\n  " + "\n  ".join(result.problems)


def check_oauth(spec: OAuthContract, groups: list[str] | tuple[str, ...] = OAUTH_GROUPS) -> ContractResult:
    """Run the OAuth2 checks (``groups``: description, bearer, errors, account)."""
    res = ContractResult()
    name = f"{spec.connector}: declares oauth2 and accepts the stored OAuth2 credential"
    res.checks.append(name)
    pm = spec.plugin_manager()
    if pm.failures:
        res.problems += [f"{name}: {f.error}" for f in pm.failures]
        return res
    info = pm.catalog.get(spec.connector)
    if info is None:
        res.problems.append(f"{name}: the plugin describes no connector {spec.connector!r}")
        return res
    if info.oauth2 is None:
        res.problems.append(f"{name}: the description has no oauth2 declaration")
        return res
    for group in groups:
        if group == "description":
            continue
        if group not in OAUTH_GROUPS:
            raise ValueError(f"unknown group {group!r} (use {OAUTH_GROUPS})")
        with spec.fake() as fake:
            creds = spec.oauth_credentials(fake)
            if group == "bearer":
                bad = list(Draft202012Validator(info.credentials or {}).iter_errors(creds))
                if bad:
                    res.problems.append(
                        f"{name}: oauth_credentials(fake) does not match the credentials schema: {bad[0].message}"
                    )
                    continue
                _bearer(res, spec, pm, fake, creds)
            elif group == "errors":
                for where, call in _calls(spec, pm, fake, creds):
                    check_error_mapping(res, spec, fake, f"{where} with an OAuth2 credential", call,
                                        spec.secrets(creds))
            elif group == "account":
                _account(res, spec, pm, info.oauth2, fake)
    return res


def _calls(
    spec: OAuthContract, pm: LevqorPluginManager, fake: Any, creds: dict[str, Any]
) -> list[tuple[str, Callable[[], Any]]]:
    """(label, call) for every action, polling trigger and check_credentials to try."""
    info = pm.catalog.get(spec.connector)
    assert info is not None
    c = spec.connector
    out: list[tuple[str, Callable[[], Any]]] = []
    for action in spec.actions if spec.actions is not None else list(info.actions):
        def run(action: str = action) -> Any:
            return pm.call_owner(
                "run_task", c, connector=c, action=action, payload=spec.payload(fake, action),
                credentials=creds, context=spec.context(fake, f"oauth-{action}"),
            )
        out.append((f"{c}.{action}", run))
    polling = [n for n, t in info.triggers.items() if t.kind == "polling"]
    if pm.owner_impl("poll_trigger", c) is not None:
        for trig in spec.triggers if spec.triggers is not None else polling:
            def poll(trig: str = trig) -> Any:
                return as_poll(pm.call_owner(
                    "poll_trigger", c, connector=c, trigger=trig, config=spec.trigger_config(fake, trig),
                    credentials=creds, state=None, context=spec.context(fake, f"oauth-{trig}"),
                ))
            out.append((f"{c}.{trig} (poll)", poll))
    if pm.owner_impl("check_credentials", c) is not None:
        def check() -> Any:
            return pm.call_owner(
                "check_credentials", c, connector=c, credentials=creds,
                context=spec.context(fake, "oauth-check"),
            )
        out.append((f"{c} check_credentials", check))
    return out


def _bearer(res: ContractResult, spec: OAuthContract, pm: LevqorPluginManager, fake: Any, creds: dict) -> None:
    # after a refresh the host calls again with the same credential and a new access token:
    # that token must go out at once (no client or session keeps the old one)
    refreshed = {**creds, "access_token": "levqor-refreshed-" + _secrets.token_hex(12)}
    calls = _calls(spec, pm, fake, creds)
    again = dict(_calls(spec, pm, fake, refreshed))
    for where, call in calls:
        for title, run, token in (
            (f"{where}: every request sends Authorization: Bearer <access_token>", call,
             creds["access_token"]),
            (f"{where}: a refreshed access token is sent at once", again[where], refreshed["access_token"]),
        ):
            res.checks.append(title)
            start = len(spec.server(fake).requests)
            try:
                run()
            except Exception:  # noqa: BLE001, S110 - what the fake answered is not this check's business
                pass
            sent = spec.requests_since(fake, start)
            if not sent:
                res.problems.append(
                    f"{title}: it made no request to the fake (point the connector at it with "
                    "env(), or give a payload/config it accepts)"
                )
            for req in sent:
                got = req.header("Authorization")
                if got != f"Bearer {token}":
                    shown = "none" if got is None else (
                        "the previous token" if got == f"Bearer {creds['access_token']}"
                        else got.split(" ", 1)[0] + " ..."
                    )
                    res.problems.append(f"{title}: {req.method} {req.path} sent Authorization {shown}")
                    break


def _account(res: ContractResult, spec: OAuthContract, pm: LevqorPluginManager, oauth2: dict, fake: Any) -> None:
    c = spec.connector
    title = f"{c}: the connected account gets a name (oauth_credentials or oauth2.account)"
    res.checks.append(title)
    token = spec.token_response(fake)
    account = None
    if pm.owner_impl("oauth_credentials", c) is not None:
        try:
            extra = pm.call_owner(
                "oauth_credentials", c, connector=c, token=token, context=spec.context(fake, "oauth-token")
            )
        except Exception as e:  # noqa: BLE001
            res.problems.append(f"{title}: oauth_credentials raised {describe(e)}")
            return
        if extra is not None and not isinstance(extra, Mapping):
            res.problems.append(f"{title}: oauth_credentials returned {type(extra).__name__}, not a dict or None")
            return
        extra = dict(extra or {})
        if as_json(extra) is None:
            res.problems.append(f"{title}: oauth_credentials returned something that is not JSON")
        account = extra.get("account")
        if "account" in extra and (not isinstance(account, str) or not account.strip()):
            res.problems.append(f"{title}: oauth_credentials returned account {account!r}, not a name")
            return
    if account is None and oauth2.get("account"):
        account = json_pointer(token, oauth2["account"])
        if not isinstance(account, str) or not account:
            res.problems.append(
                f"{title}: oauth2.account {oauth2['account']!r} finds {account!r} in token_response(fake)"
            )
            return
    if account is None:
        res.problems.append(
            f"{title}: neither oauth_credentials nor an oauth2.account pointer names the account "
            "(users tell their connections apart by it)"
        )
