"""What the trigger and OAuth2 checks need to know about a connector's own fake.

The contract kit drives the fake a connector already has for its tests (``FakeTelegram``,
``FakeNotion``): an author subclasses a contract class and answers a few questions about it
(how to start it, which credentials and settings reach it, how to make it fail like the
upstream does). :class:`FakeAdapter` holds the questions every check shares; the polling,
instant and OAuth2 contracts add their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from ..context import StepContext
from ..errors import ConnectorError, CredentialError, RetryableError
from ..http import secrets_in
from ..plugins import LevqorPluginManager, make_plugin_manager
from .contract import ContractResult
from .fakeserver import FakeServer, Recorded, Reply

__all__ = ["FakeAdapter", "error_body"]

#: The delay the 429 scenario asks for (seconds), in ``Retry-After`` and in the body.
RETRY_AFTER = 7


def error_body(status: int, retry_after: int | None = None) -> dict[str, Any]:
    """A generic API error body with the fields common APIs use (``error``, ``message``,
    Telegram's ``ok``/``error_code``/``description``/``parameters.retry_after``).

    Override :meth:`FakeAdapter.fail` to answer in your API's own error shape instead."""
    body: dict[str, Any] = {
        "ok": False,
        "error": {401: "unauthorized", 429: "rate_limited"}.get(status, "unavailable"),
        "message": {401: "invalid token", 429: "rate limited"}.get(status, "try later"),
        "error_code": status,
        "description": {401: "Unauthorized", 429: f"Too Many Requests: retry after {retry_after}"}.get(
            status, "Service Unavailable"
        ),
    }
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body


class FakeAdapter:
    """The questions every trigger and OAuth2 check asks about a connector and its fake.

    Set ``plugin`` (the module or object with your hook implementations) and ``connector``;
    override :meth:`fake` (required), :meth:`credentials` and :meth:`env`; override
    :meth:`fail` when your API reports errors in a shape of its own (HTTP 200 with
    ``{"ok": false, "error": "invalid_auth"}``, say) and :meth:`server` when your fake is
    neither a :class:`FakeServer` nor keeps one as ``.server``.
    """

    plugin: Any = None
    connector: str = ""
    #: seconds one hook call may take (its ``context.deadline``)
    timeout: float = 10.0
    #: the credential fields that are secret (None: every string in the credentials)
    secret_fields: Iterable[str] | None = None

    # ------------------------------------------------------------ author's answers
    def fake(self) -> AbstractContextManager[Any]:
        """A fresh fake of your API, not started: ``with self.fake() as fake`` starts it."""
        raise NotImplementedError(
            f"{type(self).__name__}: override fake() to return your connector's fake API "
            "(a context manager such as FakeAcme(), started by `with`)"
        )

    def credentials(self, fake: Any) -> dict[str, Any] | None:
        """The credential the fake accepts (None when the connector needs none)."""
        return None

    def env(self, fake: Any) -> dict[str, str]:
        """The configuration that points the connector at the fake (LEVQOR_<NAME>_API_BASE)."""
        return {}

    def server(self, fake: Any) -> FakeServer:
        """The :class:`FakeServer` under the fake (the fake itself, or its ``.server``)."""
        if isinstance(fake, FakeServer):
            return fake
        srv = getattr(fake, "server", None)
        if isinstance(srv, FakeServer):
            return srv
        raise TypeError(
            f"{type(self).__name__}: {type(fake).__name__} is not a FakeServer and has no "
            ".server FakeServer: override server(fake)"
        )

    def fail(self, fake: Any, status: int, retry_after: int | None = None) -> None:
        """Make every request to the fake fail as the upstream fails with ``status`` (401: the
        token is refused; 429: rate limited, asking for ``retry_after`` seconds; 503)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.server(fake).answer_all(Reply(status, error_body(status, retry_after), headers))

    def recover(self, fake: Any) -> None:
        """Undo :meth:`fail`: the fake answers normally again."""
        self.server(fake).answer_all(None)

    # ------------------------------------------------------------ the kit's tools
    def plugin_manager(self) -> LevqorPluginManager:
        if self.plugin is None:
            raise AssertionError(f"set `plugin` on {type(self).__name__}")
        return make_plugin_manager(
            entry_points=False,
            builtins=False,
            plugins=[("under-test", self.plugin)],
            schema_cache_dir=None,
        )

    def context(self, fake: Any, step: str) -> StepContext:
        return StepContext(
            run_id="contract",
            step_id=step,
            deadline=time.monotonic() + self.timeout,
            env={"LEVQOR_SSRF_ALLOW": "127.0.0.1", **self.env(fake)},
        )

    def secrets(self, credentials: Any) -> list[str]:
        """The credential values that must never appear in errors, states or registrations."""
        if not isinstance(credentials, Mapping):
            return []
        if self.secret_fields is None:
            chosen = {
                k: v
                for k, v in credentials.items()
                if k not in ("api_base", "auth", "token_type", "scope", "account", "expires_at")
            }
        else:
            chosen = {k: credentials[k] for k in self.secret_fields if k in credentials}
        return [s for s in secrets_in(chosen) if len(s) >= 6]

    def requests_since(self, fake: Any, start: int) -> list[Recorded]:
        return list(self.server(fake).requests[start:])


def leaked(text: str, secrets: list[str]) -> bool:
    return any(s in text for s in secrets)


def as_json(value: Any) -> str | None:
    """``value`` as compact JSON, or None when it is not JSON (the host stores it as JSON)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


def describe(e: BaseException) -> str:
    status = getattr(e, "status", None)
    extra = f" (status {status})" if status is not None else ""
    return f"{type(e).__name__}{extra}: {str(e)[:200]}"


#: (title, status, retry_after, expected class, extra check)
ERROR_SCENARIOS: list[tuple[str, int, int | None, type[ConnectorError]]] = [
    ("401 raises CredentialError with status 401 (the host refreshes an OAuth2 token and retries once)",
     401, None, CredentialError),
    (f"429 with Retry-After raises RetryableError with retry_after {RETRY_AFTER}", 429, RETRY_AFTER,
     RetryableError),
    ("503 raises RetryableError (the host backs off)", 503, None, RetryableError),
]


def check_error_mapping(
    res: ContractResult,
    adapter: FakeAdapter,
    fake: Any,
    where: str,
    call: Any,
    secrets: list[str],
) -> None:
    """Make the fake fail three ways and check what ``call()`` raises each time."""
    for title, status, retry_after, expected in ERROR_SCENARIOS:
        name = f"{where}: {title}"
        res.checks.append(name)
        adapter.fail(fake, status, retry_after)
        try:
            out = call()
        except expected as e:
            if status == 401 and e.status != 401:
                res.problems.append(
                    f"{name}: got {describe(e)}; give the CredentialError status=401 (the host "
                    "refreshes only on a 401)"
                )
            if retry_after is not None and (
                e.retry_after is None or abs(e.retry_after - retry_after) > 0.01
            ):
                res.problems.append(
                    f"{name}: retry_after is {e.retry_after!r}, expected {retry_after} (read "
                    "Retry-After, or pass retry_after= to context.http.request)"
                )
            if leaked(str(e), secrets) or leaked(repr(e.to_dict()), secrets):
                res.problems.append(f"{name}: a credential value appears in the error message")
        except ConnectorError as e:
            res.problems.append(f"{name}: got {describe(e)}, expected {expected.__name__}")
        except Exception as e:  # noqa: BLE001 - report what the author must fix
            res.problems.append(f"{name}: raised {describe(e)} instead of a ConnectorError")
        else:
            res.problems.append(
                f"{name}: returned {str(out)[:100]!r} instead of raising (an upstream failure "
                "must not look like an answer)"
            )
        finally:
            adapter.recover(fake)
