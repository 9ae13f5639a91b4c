"""Contract checks every connector must pass."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..context import StepContext
from ..errors import ConnectorError, CredentialError, RetryableError
from ..http import secrets_in
from ..plugins import make_plugin_manager
from .fakeserver import FakeServer, Reply


@dataclass
class ContractResult:
    """What ``check_connector`` found: one line per problem, and the checks that ran."""

    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _secrets(credentials: Any, secret_fields: Iterable[str] | None) -> list[str]:
    if not isinstance(credentials, Mapping):
        return []
    if secret_fields is None:
        chosen = {k: v for k, v in credentials.items() if k != "api_base"}
    else:
        chosen = {k: credentials[k] for k in secret_fields if k in credentials}
    return [s for s in secrets_in(chosen) if len(s) >= 6]


def check_connector(
    plugin: Any,
    *,
    credentials: Callable[[str], dict | None] | None = None,
    env: Callable[[str], dict] | None = None,
    secret_fields: Iterable[str] | None = None,
    actions: Iterable[tuple[str, str]] | None = None,
    timeout: float = 1.0,
    lenient_body: bool = False,
    offline: bool = False,
) -> ContractResult:
    """Run the contract against ``plugin`` using a fresh fake server. Never raises."""
    res = ContractResult()
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("under-test", plugin)])
    res.checks.append("describe_schema is valid")
    if pm.failures:
        res.problems += [f"describe_schema: {f.error}" for f in pm.failures]
        return res
    if not len(pm.catalog):
        res.problems.append("describe_schema returned no connectors")
        return res
    res.checks.append("examples validate")
    for c in pm.catalog:
        for a in c.actions.values():
            for p in pm.catalog.validate_payload(c.name, a.name, a.example):
                res.problems.append(f"{c.name}.{a.name}: example: {p}")
            if pm.owner_impl("validate_payload", c.name) is not None:
                extra = pm.call_owner(
                    "validate_payload", c.name, connector=c.name, action=a.name, payload=a.example
                )
                for msg in extra or []:
                    res.problems.append(f"{c.name}.{a.name}: example fails validate_payload: {msg}")
    if pm.owner_impl("run_task", next(iter(pm.catalog)).name) is None:
        res.problems.append("the plugin does not implement run_task")
        return res

    if offline:  # connectors that never touch the network (core): schema checks only
        for c in pm.catalog:
            for a in c.actions.values():
                res.checks.append(f"{c.name}.{a.name}: offline, network scenarios not applicable")
        return res
    targets = (
        list(actions)
        if actions is not None
        else [(c.name, a) for c in pm.catalog for a in c.actions]
    )
    with FakeServer() as srv:
        creds = credentials(srv.url) if credentials else None
        step_env = {"LEVQOR_SSRF_ALLOW": "127.0.0.1", **(env(srv.url) if env else {})}
        secrets = _secrets(creds, secret_fields)

        def call(conn: str, act: str, c: Any, t: float = 10.0) -> Any:
            ctx = StepContext(
                run_id="contract",
                step_id=f"{conn}-{act}",
                deadline=time.monotonic() + t,
                env=step_env,
            )
            payload = pm.catalog.action(conn, act).example
            return pm.call_owner(
                "run_task",
                conn,
                connector=conn,
                action=act,
                payload=payload,
                credentials=c,
                context=ctx,
            )

        def leaked(text: str) -> list[str]:
            return [s for s in secrets if s in text]

        scenarios: list[tuple[str, Reply, type, Callable[[ConnectorError], str | None]]] = [
            (
                "401 fails closed with a credential error",
                Reply(401, {"error": "unauthorized", "message": "invalid token"}),
                CredentialError,
                lambda e: None,
            ),
            (
                "403 fails closed with a credential error",
                Reply(403, {"error": "forbidden", "message": "forbidden"}),
                CredentialError,
                lambda e: None,
            ),
            (
                "429 with Retry-After is retryable and keeps the delay",
                Reply(
                    429,
                    {
                        "error": "rate_limited",
                        "ok": False,
                        "error_code": 429,
                        "description": "Too Many Requests: retry after 7",
                        "parameters": {"retry_after": 7},
                        "message": "rate limited",
                    },
                    {"Retry-After": "7"},
                ),
                RetryableError,
                lambda e: (
                    None
                    if e.retry_after and abs(e.retry_after - 7) < 0.01
                    else f"retry_after is {e.retry_after!r}, expected 7"
                ),
            ),
            (
                "503 is retryable",
                Reply(503, {"error": "unavailable", "message": "try later"}),
                RetryableError,
                lambda e: None,
            ),
            (
                "a malformed 200 response fails closed",
                Reply(200, b"<html>surprise</html>", {"Content-Type": "text/html"}),
                ConnectorError,
                lambda e: None,
            ),
        ]
        if lenient_body:  # connectors that return any body as data (levqor-http)
            scenarios = scenarios[:-1]
        for conn, act in targets:
            for title, reply, expected, extra_check in scenarios:
                name = f"{conn}.{act}: {title}"
                res.checks.append(name)
                srv.answer_all(reply)
                try:
                    out = call(conn, act, creds)
                except expected as e:
                    why = extra_check(e)
                    if why:
                        res.problems.append(f"{name}: {why}")
                    if leaked(str(e)) or leaked(repr(e.to_dict())):
                        res.problems.append(
                            f"{name}: a credential value appears in the error message"
                        )
                except ConnectorError as e:
                    res.problems.append(
                        f"{name}: raised {type(e).__name__} ({e}), expected {expected.__name__}"
                    )
                except Exception as e:  # noqa: BLE001
                    res.problems.append(
                        f"{name}: raised {type(e).__name__} instead of a ConnectorError: {e}"
                    )
                else:
                    res.problems.append(f"{name}: returned {str(out)[:80]!r} instead of failing")
            # a timeout: the server answers after the step deadline
            name = f"{conn}.{act}: a timeout is retryable"
            res.checks.append(name)
            srv.answer_all(Reply(200, {"ok": True}, delay=timeout + 1.0))
            try:
                call(conn, act, creds, t=timeout)
            except RetryableError:
                pass
            except Exception as e:  # noqa: BLE001
                res.problems.append(f"{name}: raised {type(e).__name__}: {e}")
            else:
                res.problems.append(f"{name}: did not fail")
            # bad credentials are refused (before or by the upstream)
            info = pm.catalog.get(conn)
            if info is not None and info.credentials is not None:
                name = f"{conn}.{act}: missing credentials fail closed"
                res.checks.append(name)
                srv.answer_all(Reply(200, {"ok": True}))
                for bad in (None, {}):
                    try:
                        out = call(conn, act, bad)
                    except ConnectorError:
                        pass
                    except Exception as e:  # noqa: BLE001
                        res.problems.append(
                            f"{name}: credentials={bad!r} raised {type(e).__name__}: {e}"
                        )
                    else:
                        res.problems.append(
                            f"{name}: credentials={bad!r} returned {str(out)[:80]!r}"
                        )
        srv.answer_all(None)
    return res


class ConnectorContract:
    """Subclass in your tests::

        class TestContract(ConnectorContract):
            plugin = levqor_acme
            def credentials(self, base_url): return {"token": "secret-123", "api_base": base_url}

    Override ``env(base_url)`` for connectors configured by environment variables and
    ``secret_fields`` when not every credential field is secret.
    """

    plugin: Any = None
    secret_fields: Iterable[str] | None = None
    timeout: float = 1.0
    #: True for connectors that pass any response body through as data (generic HTTP)
    lenient_body: bool = False
    #: True for connectors that make no HTTP request at all (only schema checks apply)
    offline: bool = False

    def credentials(self, base_url: str) -> dict | None:
        return None

    def env(self, base_url: str) -> dict:
        return {}

    def test_levqor_contract(self) -> None:
        assert self.plugin is not None, "set `plugin` on your ConnectorContract subclass"
        result = check_connector(
            self.plugin,
            credentials=self.credentials,
            env=self.env,
            secret_fields=self.secret_fields,
            timeout=self.timeout,
            lenient_body=self.lenient_body,
            offline=self.offline,
        )
        assert len(result.checks) >= 3
        assert result.ok, "connector contract problems:\n  " + "\n  ".join(result.problems)
