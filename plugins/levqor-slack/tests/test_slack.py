"""levqor-slack against the contract kit and against FakeSlack (real HTTP over loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import levqor_slack
import pytest
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import ConnectorContract
from levqor_slack.fake import FakeSlack

ENV = {"LEVQOR_SSRF_ALLOW": "127.0.0.1", "LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1"}


class TestContract(ConnectorContract):
    plugin = levqor_slack

    def credentials(self, base_url: str) -> dict:
        return {"webhook_url": f"{base_url}/services/T0CONTRACT/B0CONTRACT/contractsecret42"}

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
def _slack_server() -> Iterator[FakeSlack]:
    # one server for the module; the function fixture below resets it between tests
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack(_slack_server: FakeSlack) -> Iterator[FakeSlack]:
    _slack_server.reset()
    yield _slack_server
    _slack_server.reset()


def ctx(env: dict | None = None, timeout: float = 5.0) -> StepContext:
    return StepContext(
        run_id="run1",
        step_id="notify",
        deadline=time.monotonic() + timeout,
        env=ENV if env is None else env,
    )


def post(slack: FakeSlack, payload: dict, **kw) -> dict:
    creds = kw.pop("credentials", {"webhook_url": slack.webhook_url})
    return levqor_slack.run_task("slack", "post_message", payload, creds, ctx(**kw))


def assert_no_secret(slack: FakeSlack, err: ConnectorError) -> None:
    text = str(err) + repr(err.to_dict())
    assert slack.secret not in text
    assert slack.hook_path not in text
    assert slack.webhook_url not in text


# ---------------------------------------------------------------- success


def test_posts_text(slack: FakeSlack) -> None:
    assert post(slack, {"text": "Order 42 paid"}) == {"ok": True}
    [req] = slack.requests
    assert req.method == "POST"
    assert req.path == slack.hook_path
    assert req.header("Content-Type") == "application/json"
    assert req.header("User-Agent", "").startswith("levqor/")
    assert req.json() == {"text": "Order 42 paid"}
    assert slack.messages == [{"text": "Order 42 paid"}]


def test_posts_blocks_in_a_thread_with_overrides(slack: FakeSlack) -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Deploy"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*api* is live"}},
    ]
    payload = {
        "blocks": blocks,
        "text": "api is live",
        "thread_ts": "1712345678.000200",
        "username": "Deploy bot",
        "icon_emoji": ":rocket:",
    }
    assert post(slack, payload) == {"ok": True}
    assert slack.requests[0].json() == payload


def test_blocks_only_is_enough(slack: FakeSlack) -> None:
    blocks = [{"type": "divider"}]
    assert post(slack, {"blocks": blocks}) == {"ok": True}
    assert slack.messages == [{"blocks": blocks}]


def test_empty_optional_fields_are_not_sent(slack: FakeSlack) -> None:
    post(slack, {"text": "hi", "username": "", "thread_ts": None})
    assert slack.requests[0].json() == {"text": "hi"}


# ---------------------------------------------------------------- schema and payload


def test_catalog_and_validate_payload() -> None:
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_slack])
    assert not pm.failures
    info = pm.catalog.get("slack")
    assert info is not None and info.credentials["properties"]["webhook_url"]["writeOnly"]
    action = info.actions["post_message"]
    assert pm.catalog.validate_payload("slack", "post_message", {"text": "x", "extra": 1})
    assert pm.catalog.validate_payload("slack", "post_message", {"thread_ts": "yesterday"})
    assert not pm.catalog.validate_payload("slack", "post_message", action.example)
    check = pm.owner_impl("validate_payload", "slack").function
    assert check("slack", "post_message", {"username": "bot"}) == [
        "a Slack message needs text, blocks, or both"
    ]
    assert check("slack", "post_message", {"text": "hi"}) == []


def test_message_without_text_or_blocks_is_refused_before_sending(slack: FakeSlack) -> None:
    with pytest.raises(PayloadError, match="text, blocks"):
        post(slack, {"username": "bot"})
    assert slack.requests == []


def test_unknown_action(slack: FakeSlack) -> None:
    with pytest.raises(PayloadError, match="no action 'delete_message'"):
        levqor_slack.run_task(
            "slack", "delete_message", {}, {"webhook_url": slack.webhook_url}, ctx()
        )


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize("creds", [None, {}, {"webhook_url": ""}, {"webhook_url": 42}])
def test_missing_webhook_url(slack: FakeSlack, creds) -> None:
    with pytest.raises(CredentialError, match="webhook_url"):
        post(slack, {"text": "hi"}, credentials=creds)
    assert slack.requests == []


def test_host_must_be_hooks_slack_com() -> None:
    creds = {"webhook_url": "https://evil.example.com/services/T1/B1/supersecretpath"}
    with pytest.raises(CredentialError) as e:
        levqor_slack.run_task("slack", "post_message", {"text": "hi"}, creds, ctx())
    assert "hooks.slack.com" in str(e.value) and "LEVQOR_SLACK_ALLOWED_HOSTS" in str(e.value)
    assert "supersecretpath" not in str(e.value)


def test_fake_host_needs_the_operator_allow_list(slack: FakeSlack) -> None:
    with pytest.raises(CredentialError, match="must be on hooks.slack.com"):
        post(slack, {"text": "hi"}, env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"})
    assert slack.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T1/B1/secretsecret",  # not https
        "https://hooks.slack.com/workflows/T1/A1/1/secretsecret",  # not an incoming webhook
        "https://hooks.slack.com/services/T1/B1/secretsecret?x=1",
        "https://user:pw@hooks.slack.com/services/T1/B1/secretsecret",
        "https://hooks.slack.com:8443/services/T1/B1/secretsecret",  # another port
        "https://hooks.slack.com/services/T1/B1/secretsecret#frag",
        "https://evil.example.com/services/T1/B1/secretsecret",  # another host, not allowed
        "ftp://127.0.0.1/services/T1/B1/secretsecret",
    ],
)
def test_malformed_slack_urls_are_refused(url: str) -> None:
    with pytest.raises(CredentialError) as e:
        levqor_slack.run_task("slack", "post_message", {"text": "hi"}, {"webhook_url": url}, ctx())
    assert "secretsecret" not in str(e.value)
    # the same rules refuse the credential when it is saved, naming the field
    problems = levqor_slack.validate_credentials("slack", {"webhook_url": url}, ENV)
    assert set(problems) == {"webhook_url"} and "secretsecret" not in problems["webhook_url"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/services/T1/B1/secretsecret", ""),
        ("https://hooks.slack.com:443/services/T1/B1/secretsecret", ""),
        ("https://slack-proxy.example.com/hook/secretsecret", "slack-proxy.example.com"),
        ("http://127.0.0.1:8080/services/T1/B1/secretsecret", "127.0.0.1"),
        ("http://localhost/services/T1/B1/secretsecret", "localhost"),
        ("http://[::1]:9000/services/T1/B1/secretsecret", "::1"),
    ],
)
def test_valid_webhook_urls_pass_the_save_time_check(url: str, allowed: str) -> None:
    env = {"LEVQOR_SLACK_ALLOWED_HOSTS": allowed}
    assert levqor_slack.validate_credentials("slack", {"webhook_url": url}, env) == {}


def test_plain_http_to_an_allowed_host_off_the_machine_is_refused() -> None:
    env = {"LEVQOR_SLACK_ALLOWED_HOSTS": "slack-proxy.example.com"}
    creds = {"webhook_url": "http://slack-proxy.example.com/hook/secretsecret"}
    problems = levqor_slack.validate_credentials("slack", creds, env)
    assert "https" in problems["webhook_url"] and "secretsecret" not in problems["webhook_url"]
    with pytest.raises(CredentialError, match="https"):
        levqor_slack.run_task("slack", "post_message", {"text": "hi"}, creds, ctx(env=env))


def test_wrong_secret_is_invalid_token(slack: FakeSlack) -> None:
    wrong = f"{slack.url}/services/{slack.team}/{slack.bot}/notthesecret123"
    with pytest.raises(CredentialError) as e:
        post(slack, {"text": "hi"}, credentials={"webhook_url": wrong})
    assert e.value.status == 403 and e.value.code == "invalid_token"
    assert "invalid_token" in str(e.value) and "notthesecret123" not in str(e.value)
    assert slack.messages == []


def test_removed_webhook_is_no_service(slack: FakeSlack) -> None:
    slack.disabled = True
    with pytest.raises(CredentialError) as e:
        post(slack, {"text": "hi"})
    assert e.value.status == 404 and e.value.code == "no_service"
    assert "create a new webhook" in str(e.value)
    assert_no_secret(slack, e.value)


# ---------------------------------------------------------------- documented errors


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_payload", PayloadError),
        (400, "no_text", PayloadError),
        (400, "user_not_found", PayloadError),
        (403, "action_prohibited", CredentialError),
        (403, "posting_to_general_channel_denied", CredentialError),
        (403, "invalid_token", CredentialError),
        (403, "team_disabled", CredentialError),
        (404, "channel_not_found", PermanentError),
        (404, "no_service", CredentialError),
        (410, "channel_is_archived", PermanentError),
    ],
)
def test_documented_error_bodies(slack: FakeSlack, status: int, code: str, cls: type) -> None:
    slack.fail_next(status, code)
    with pytest.raises(cls) as e:
        post(slack, {"text": "hi"})
    err = e.value
    assert not err.retryable
    assert err.status == status and err.code == code
    assert str(err).startswith(f"Slack answered HTTP {status}: {code} (")
    assert_no_secret(slack, err)
    assert slack.messages == []


def test_fake_checks_blocks_and_archived_channel(slack: FakeSlack) -> None:
    # the connector's schema would refuse this; send it anyway to see the fake's real answer
    with pytest.raises(PayloadError, match="invalid_blocks"):
        post(slack, {"text": "x", "blocks": [{"no_type": True}]})
    slack.archived = True
    with pytest.raises(PermanentError) as e:
        post(slack, {"text": "hi"})
    assert e.value.status == 410 and "archived" in str(e.value)


def test_unknown_error_code_keeps_the_status_class(slack: FakeSlack) -> None:
    slack.fail_next(400, "some_new_error")
    with pytest.raises(PermanentError) as e:
        post(slack, {"text": "hi"})
    assert type(e.value) is PermanentError and e.value.code == "some_new_error"


def test_401_is_a_credential_error(slack: FakeSlack) -> None:
    slack.fail_next(401, "invalid_auth")
    with pytest.raises(CredentialError):
        post(slack, {"text": "hi"})


# ---------------------------------------------------------------- retries


def test_rate_limit_keeps_retry_after(slack: FakeSlack) -> None:
    slack.fail_next(429, "rate_limited", {"Retry-After": "30"})
    with pytest.raises(RetryableError) as e:
        post(slack, {"text": "hi"})
    assert e.value.status == 429 and e.value.retry_after == 30
    assert_no_secret(slack, e.value)
    assert slack.messages == []


def test_server_error_then_success(slack: FakeSlack) -> None:
    slack.fail_next(500, "rollup_error")
    with pytest.raises(RetryableError) as e:
        post(slack, {"text": "hi"})
    assert "rollup_error" in str(e.value)
    assert post(slack, {"text": "hi"}) == {"ok": True}
    assert slack.messages == [{"text": "hi"}]
    assert len(slack.requests) == 2


def test_timeout_is_retryable(slack: FakeSlack) -> None:
    slack.fail_next(200, "ok", delay=1.5)
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:
        post(slack, {"text": "hi"}, timeout=0.5)
    assert time.monotonic() - started < 1.4
    assert e.value.code == "timeout"
    assert_no_secret(slack, e.value)


def test_connection_refused_hides_the_path() -> None:
    with FakeSlack() as fake:
        url = fake.webhook_url
        secret = fake.secret
    with pytest.raises(RetryableError) as e:
        levqor_slack.run_task("slack", "post_message", {"text": "hi"}, {"webhook_url": url}, ctx())
    assert secret not in str(e.value) and "/services/" not in str(e.value)


# ---------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    "status,body",
    [(200, "<html>login</html>"), (200, ""), (200, "okay"), (204, None), (302, "")],
)
def test_unexpected_success_bodies_fail_closed(slack: FakeSlack, status: int, body) -> None:
    slack.fail_next(status, body if body is not None else b"", {"Location": "https://x.test/"})
    with pytest.raises(PermanentError) as e:
        post(slack, {"text": "hi"})
    assert not e.value.retryable
    assert_no_secret(slack, e.value)


# ---------------------------------------------------------------- SSRF guard


def test_ssrf_guard_blocks_loopback_without_the_operator_allow(slack: FakeSlack) -> None:
    with pytest.raises(BlockedURLError):
        post(slack, {"text": "hi"}, env={"LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1"})
    assert slack.requests == []


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.7", "localhost"])
def test_ssrf_guard_blocks_private_hosts_even_when_allowed_as_slack_hosts(host: str) -> None:
    env = {"LEVQOR_SLACK_ALLOWED_HOSTS": host}
    scheme = "http" if host == "localhost" else "https"
    creds = {"webhook_url": f"{scheme}://{host}/services/T1/B1/secretsecret"}
    with pytest.raises(BlockedURLError) as e:
        levqor_slack.run_task("slack", "post_message", {"text": "hi"}, creds, ctx(env=env))
    assert "secretsecret" not in str(e.value)


def test_post_message_is_marked_as_writing_upstream():
    (desc,) = levqor_slack.describe_schema()
    assert desc["actions"]["post_message"]["writes"] is True
