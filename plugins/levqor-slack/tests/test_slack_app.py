"""levqor-slack with a connected Slack app against FakeSlack (real HTTP over loopback): posting
with the bot token (chat.postMessage), auth.test, the OAuth2 credential, and the new_message
trigger through signed Events API deliveries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import levqor_slack
import pytest
from jsonschema import Draft202012Validator
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from levqor_kernel.oauth import sample_oauth_credentials
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import (
    ConnectorContract,
    FakeServer,
    InstantTriggerContract,
    OAuthContract,
    Recorded,
    Reply,
)
from levqor_kernel.triggers import Delivery, as_delivery_result
from levqor_slack.fake import FakeSlack


@pytest.fixture(scope="module")
def _slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack(_slack_server: FakeSlack) -> Iterator[FakeSlack]:
    _slack_server.reset()
    yield _slack_server
    _slack_server.reset()


def env(slack: FakeSlack, **extra: str) -> dict:
    return {
        "LEVQOR_SLACK_API_BASE": slack.url,
        "LEVQOR_SLACK_SIGNING_SECRET": slack.signing_secret,
        **extra,
    }


def ctx(slack: FakeSlack, environ: dict | None = None, timeout: float = 5.0) -> StepContext:
    return StepContext(
        run_id="run1",
        step_id="notify",
        deadline=time.monotonic() + timeout,
        env=env(slack) if environ is None else environ,
    )


def app_creds(slack: FakeSlack, **over) -> dict:
    return {
        "auth": "oauth2",
        "access_token": slack.bot_token,
        "token_type": "bot",
        "scope": "chat:write,chat:write.public,channels:history,groups:history",
        "account": slack.team_name,
        "team_id": slack.team,
        "team_name": slack.team_name,
        "bot_user_id": slack.bot_user_id,
        **over,
    }


def post(slack: FakeSlack, payload: dict, **kw) -> dict:
    creds = kw.pop("credentials", None) or app_creds(slack)
    return levqor_slack.run_task("slack", "post_message", payload, creds, ctx(slack, **kw))


def assert_no_token(slack: FakeSlack, err: ConnectorError) -> None:
    text = str(err) + repr(err.to_dict())
    assert slack.bot_token not in text and slack.bot_token.split("-")[-1] not in text


# ---------------------------------------------------------------- description


def test_description_declares_oauth2_and_both_credentials() -> None:
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_slack])
    assert not pm.failures
    info = pm.catalog.get("slack")
    assert info.oauth2["authorization_url"] == "https://slack.com/oauth/v2/authorize"
    assert info.oauth2["token_url"] == "https://slack.com/api/oauth.v2.access"
    assert info.oauth2["scope_separator"] == "," and info.oauth2["pkce"] is False
    assert {"chat:write", "channels:history"} <= set(info.oauth2["scopes"])
    v = Draft202012Validator(info.credentials)
    assert v.is_valid({"webhook_url": "https://hooks.slack.com/services/T1/B1/x"})
    assert v.is_valid(sample_oauth_credentials())
    assert v.is_valid({**sample_oauth_credentials(), "team_id": "T1", "bot_user_id": "U1"})
    assert not v.is_valid({})
    assert not v.is_valid({"webhook_url": "https://hooks.slack.com/services/T1/B1/x", "extra": 1})
    trig = pm.catalog.trigger("slack", "new_message")
    assert trig.kind == "instant" and trig.webhook == "connector"
    assert not list(trig.validator.iter_errors({"channel": "C0123456789"}))
    assert list(trig.validator.iter_errors({"channel": "#general"}))


def test_validate_credentials_leaves_a_connected_app_alone(slack: FakeSlack) -> None:
    assert levqor_slack.validate_credentials("slack", app_creds(slack), {}) == {}


# ---------------------------------------------------------------- chat.postMessage


def test_posts_with_the_bot_token_to_a_channel_id(slack: FakeSlack) -> None:
    out = post(slack, {"channel": slack.GENERAL, "text": "Order 42 paid"})
    [msg] = slack.posted
    assert out == {"ok": True, "channel": slack.GENERAL, "ts": msg["ts"]}
    [req] = slack.requests
    assert req.method == "POST" and req.path == "/api/chat.postMessage"
    assert req.header("Authorization") == f"Bearer {slack.bot_token}"
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {"channel": slack.GENERAL, "text": "Order 42 paid"}
    assert msg["text"] == "Order 42 paid" and msg["bot_id"] == slack.bot_id


def test_posts_by_name_in_a_thread_with_blocks(slack: FakeSlack) -> None:
    first = post(slack, {"channel": "#general", "text": "Deploy started"})
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*api* is live"}}]
    out = post(
        slack,
        {
            "channel": " #general ",
            "text": "api is live",
            "blocks": blocks,
            "thread_ts": first["ts"],
            "username": "ignored for apps",
            "icon_emoji": ":rocket:",
        },
    )
    assert out["channel"] == slack.GENERAL
    assert slack.requests[1].json() == {
        "channel": "#general",
        "text": "api is live",
        "blocks": blocks,
        "thread_ts": first["ts"],
    }
    assert slack.posted[1]["thread_ts"] == first["ts"]


def test_public_channels_without_membership_need_chat_write_public(slack: FakeSlack) -> None:
    assert post(slack, {"channel": slack.RANDOM, "text": "hi"})["channel"] == slack.RANDOM
    slack.scopes.discard("chat:write.public")
    with pytest.raises(PermanentError) as e:
        post(slack, {"channel": slack.RANDOM, "text": "hi"})
    assert e.value.code == "not_in_channel" and not e.value.retryable
    assert "/invite" in str(e.value)


def test_a_channel_is_required_with_a_slack_app(slack: FakeSlack) -> None:
    for payload in ({"text": "hi"}, {"text": "hi", "channel": "  "}):
        with pytest.raises(PayloadError, match="channel is required"):
            post(slack, payload)
    with pytest.raises(PayloadError, match="text, blocks"):
        post(slack, {"channel": slack.GENERAL})
    assert slack.requests == []


@pytest.mark.parametrize(
    "prepare,payload,cls,code,status",
    [
        (None, {"channel": "C0NOPE00001", "text": "hi"}, PayloadError, "channel_not_found", 404),
        (None, {"channel": "#secret-nope", "text": "hi"}, PayloadError, "channel_not_found", 404),
        (None, {"channel": FakeSlack.ARCHIVED, "text": "hi"}, PermanentError, "is_archived", 410),
        (None, {"channel": "#general", "text": "x" * 40001}, PayloadError, "msg_too_long", 400),
        (
            lambda s: setattr(s, "revoked", True),
            {"channel": "#general", "text": "hi"},
            CredentialError,
            "token_revoked",
            401,
        ),
        (
            lambda s: s.scopes.discard("chat:write"),
            {"channel": "#general", "text": "hi"},
            CredentialError,
            "missing_scope",
            403,
        ),
    ],
)
def test_slack_error_codes(slack: FakeSlack, prepare, payload, cls, code, status) -> None:
    if prepare:
        prepare(slack)
    with pytest.raises(cls) as e:
        post(slack, payload)
    err = e.value
    assert err.code == code and err.status == status and not err.retryable
    assert str(err).startswith(f"Slack answered {code}")
    assert_no_token(slack, err)
    assert slack.posted == []


def test_missing_scope_names_the_scope(slack: FakeSlack) -> None:
    slack.scopes.discard("chat:write")
    with pytest.raises(CredentialError, match="it needs chat:write"):
        post(slack, {"channel": "#general", "text": "hi"})


def test_a_refused_token_is_a_401_credential_error(slack: FakeSlack) -> None:
    bad = app_creds(slack, access_token="xoxb-1-" + "f" * 24)
    with pytest.raises(CredentialError) as e:
        post(slack, {"channel": "#general", "text": "hi"}, credentials=bad)
    assert e.value.status == 401 and e.value.code == "invalid_auth"
    assert "xoxb-1-" + "f" * 24 not in str(e.value)


def test_rate_limit_honours_retry_after(slack: FakeSlack) -> None:
    slack.ratelimit_next(12)
    with pytest.raises(RetryableError) as e:
        post(slack, {"channel": "#general", "text": "hi"})
    assert e.value.status == 429 and e.value.retry_after == 12
    assert_no_token(slack, e.value)
    assert post(slack, {"channel": "#general", "text": "hi"})["ok"] is True


@pytest.mark.parametrize(
    "status,body,cls",
    [
        (200, {"ok": False, "error": "internal_error"}, RetryableError),
        (503, {"ok": False, "error": "service_unavailable"}, RetryableError),
        (200, {"ok": True}, PermanentError),
        (200, {"channel": "C1", "ts": "1.2"}, PermanentError),
        (200, "<html>surprise</html>", PermanentError),
        (200, {"ok": False, "error": "something_new"}, PermanentError),
    ],
)
def test_unexpected_answers(slack: FakeSlack, status, body, cls) -> None:
    slack.fail_api_next(status, body)
    with pytest.raises(cls) as e:
        post(slack, {"channel": "#general", "text": "hi"})
    assert_no_token(slack, e.value)


def test_a_webhook_credential_still_posts_through_the_webhook(slack: FakeSlack) -> None:
    out = levqor_slack.run_task(
        "slack",
        "post_message",
        {"channel": "#ignored-by-app-webhooks", "text": "hi"},
        {"webhook_url": slack.webhook_url},
        ctx(
            slack, env(slack, LEVQOR_SSRF_ALLOW="127.0.0.1", LEVQOR_SLACK_ALLOWED_HOSTS="127.0.0.1")
        ),
    )
    assert out == {"ok": True} and slack.messages == [
        {"channel": "#ignored-by-app-webhooks", "text": "hi"}
    ]


# ---------------------------------------------------------------- auth.test and OAuth2


def test_check_credentials_calls_auth_test(slack: FakeSlack) -> None:
    out = levqor_slack.check_credentials("slack", app_creds(slack), ctx(slack))
    assert out == {
        "ok": True,
        "account": slack.team_name,
        "team_id": slack.team,
        "user_id": slack.bot_user_id,
        "bot_id": slack.bot_id,
    }
    [req] = slack.requests
    assert req.path == "/api/auth.test" and slack.posted == []
    assert levqor_slack.check_credentials("slack", {"webhook_url": "x"}, ctx(slack)) is None


def test_oauth_credentials_keep_the_workspace_and_the_bot(slack: FakeSlack) -> None:
    out = levqor_slack.oauth_credentials("slack", slack.token_response(), ctx(slack))
    assert out == {
        "team_id": slack.team,
        "team_name": slack.team_name,
        "account": slack.team_name,
        "bot_user_id": slack.bot_user_id,
        "app_id": slack.app_id,
    }
    grid = {**slack.token_response(), "team": None, "enterprise": {"id": "E1", "name": "Acme Org"}}
    assert levqor_slack.oauth_credentials("slack", grid, ctx(slack))["account"] == "Acme Org"
    # a rotation's refresh answer may carry less: nothing is made up, the host keeps the rest
    refresh = {
        "ok": True,
        "access_token": "xoxe.xoxb-1-new",
        "refresh_token": "xoxe-1-n",
        "expires_in": 43200,
    }
    assert levqor_slack.oauth_credentials("slack", refresh, ctx(slack)) == {}
    assert levqor_slack.oauth_credentials("notion", slack.token_response(), ctx(slack)) is None


def test_token_rotation_answer_has_refresh_fields(slack: FakeSlack) -> None:
    tok = slack.token_response(rotation=True)
    assert tok["refresh_token"].startswith("xoxe-") and tok["expires_in"] == 43200


# ---------------------------------------------------------------- trigger: registration


def test_register_answers_with_the_route_and_calls_nothing(slack: FakeSlack) -> None:
    def register(config: dict, creds: dict | None) -> dict:
        return levqor_slack.register_trigger(
            "slack",
            "new_message",
            config,
            creds,
            "https://h/hooks/apps/slack",
            "unused",
            ctx(slack),
        )

    assert register({"channel": slack.GENERAL}, app_creds(slack)) == {
        "route": {"team": slack.team, "channel": slack.GENERAL}
    }
    assert register({}, app_creds(slack)) == {"route": {"team": slack.team}}
    with pytest.raises(CredentialError, match="connected Slack app"):
        register({}, {"webhook_url": slack.webhook_url})
    with pytest.raises(CredentialError, match="team_id"):
        register({}, app_creds(slack, team_id=""))
    levqor_slack.unregister_trigger(
        "slack", "new_message", {}, app_creds(slack), {"route": {"team": slack.team}}, ctx(slack)
    )
    assert slack.requests == []


# ---------------------------------------------------------------- trigger: deliveries


class EventsEndpoint:
    """The host's <base>/hooks/apps/slack in miniature: each request goes to receive_delivery
    (connector-wide: no trigger, config or registration); a SignatureError is a 401, a
    PermanentError its status; items and answers are kept."""

    def __init__(self, slack: FakeSlack, signing_secret: str | None = None) -> None:
        self.slack = slack
        self.environ = env(slack)
        if signing_secret is not None:
            self.environ["LEVQOR_SLACK_SIGNING_SECRET"] = signing_secret
        self.results: list = []
        self.server = FakeServer()
        self.server.route("POST", "/hooks/apps/slack", self._handle)

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/apps/slack"

    @property
    def items(self) -> list:
        return [i for r in self.results for i in r.items]

    def _handle(self, req: Recorded) -> Reply:
        d = Delivery(req.method, {k.lower(): v for k, v in req.headers.items()}, req.body)
        try:
            res = as_delivery_result(
                levqor_slack.receive_delivery(
                    "slack", None, None, d, None, ctx(self.slack, self.environ)
                )
            )
        except SignatureError as e:
            return Reply(401, {"error": e.code})
        except PermanentError as e:
            return Reply(e.status or 400, {"error": e.code})
        self.results.append(res)
        if res.response:
            return Reply(res.response[0], res.response[1], res.response[2])
        return Reply(200, {"ok": True})

    def __enter__(self) -> EventsEndpoint:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def test_the_request_url_is_verified_with_the_challenge(slack: FakeSlack) -> None:
    with EventsEndpoint(slack) as ep:
        assert slack.set_request_url(ep.url) is True
        assert slack.request_url == ep.url
        [res] = ep.results
        assert res.items == [] and res.response[0] == 200
        assert res.response[1] == {"challenge": slack.event_deliveries[0]["body"]["challenge"]}


def test_without_the_signing_secret_the_url_is_not_verified(slack: FakeSlack) -> None:
    with EventsEndpoint(slack, signing_secret="") as ep:
        assert slack.set_request_url(ep.url) is False
        assert slack.event_deliveries[0]["status"] == 401
        assert json.loads(slack.event_deliveries[0]["response"]) == {"error": "not_configured"}
    d = Delivery("POST", {k.lower(): v for k, v in slack.sign(b"{}").items()}, b"{}")
    with pytest.raises(SignatureError, match="LEVQOR_SLACK_SIGNING_SECRET") as e:
        levqor_slack.receive_delivery("slack", None, None, d, None, ctx(slack, {}))
    assert e.value.status == 401


def test_a_message_in_a_channel_becomes_one_routed_item(slack: FakeSlack) -> None:
    with EventsEndpoint(slack) as ep:
        slack.set_request_url(ep.url)
        env_ = slack.post_user_message(slack.GENERAL, "Can someone deploy api?")
        assert env_["status"] == 200
        [item] = ep.items
    ev = env_["event"]
    assert item.id == f"{slack.team}:{slack.GENERAL}:{ev['ts']}"
    assert item.route == {"team": slack.team, "channel": slack.GENERAL}
    assert item.data == {
        "team_id": slack.team,
        "channel": slack.GENERAL,
        "channel_type": "channel",
        "user": slack.USER,
        "text": "Can someone deploy api?",
        "ts": ev["ts"],
        "thread_ts": None,
        "subtype": None,
        "event_id": env_["event_id"],
        "event_time": env_["event_time"],
    }
    assert ep.results[-1].delivery_id == env_["event_id"]
    output = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_slack])
    schema = output.catalog.trigger("slack", "new_message").output
    assert not list(Draft202012Validator(schema).iter_errors(item.data))


def test_replies_private_channels_and_file_shares_are_messages(slack: FakeSlack) -> None:
    with EventsEndpoint(slack) as ep:
        slack.set_request_url(ep.url)
        parent = slack.post_user_message(slack.GENERAL, "parent")
        slack.post_user_message(slack.GENERAL, "reply", thread_ts=parent["event"]["ts"])
        slack.post_user_message(slack.PRIVATE, "psst")
        slack.post_user_message(slack.GENERAL, "see file", subtype="file_share")
        got = [(i.data["text"], i.data["thread_ts"], i.data["channel_type"]) for i in ep.items]
    assert got == [
        ("parent", None, "channel"),
        ("reply", parent["event"]["ts"], "channel"),
        ("psst", None, "group"),
        ("see file", None, "channel"),
    ]


def test_bot_and_system_messages_start_nothing(slack: FakeSlack) -> None:
    with EventsEndpoint(slack) as ep:
        slack.set_request_url(ep.url)
        # the app's own post comes back as an event: it must not start the pipeline again
        post(slack, {"channel": slack.GENERAL, "text": "from a pipeline"})
        assert slack.event_deliveries[-1]["body"]["event"]["bot_id"] == slack.bot_id
        slack.post_user_message(
            slack.GENERAL, "<@U1> has joined the channel", subtype="channel_join"
        )
        slack.post_user_message(slack.GENERAL, "edited", subtype="message_changed")
        slack.send_event(
            {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": "B9",
                "text": "legacy bot",
                "ts": "1.000001",
                "channel": slack.GENERAL,
            }
        )
        slack.send_event({"type": "reaction_added", "user": slack.USER, "reaction": "eyes"})
        # a channel the app is not in: Slack sends nothing
        assert slack.post_user_message(slack.RANDOM, "elsewhere")["status"] == 0
        assert ep.items == [] and len(ep.results) == 6  # every delivery was answered 200
        assert all(d["status"] == 200 for d in slack.event_deliveries)


def test_a_retried_event_gives_the_same_ids(slack: FakeSlack) -> None:
    with EventsEndpoint(slack) as ep:
        slack.set_request_url(ep.url)
        first = slack.post_user_message(slack.GENERAL, "once")
        env_, status = slack.send_event(first["event"], event_id=first["event_id"], retry_num=1)
        assert status == 200
        assert slack.event_deliveries[-1]["headers"]["X-Slack-Retry-Num"] == "1"
        a, b = ep.results[-2:]
    assert [i.id for i in a.items] == [i.id for i in b.items]
    assert a.delivery_id == b.delivery_id == first["event_id"]


def signed(slack: FakeSlack, payload: dict | bytes, **sign) -> Delivery:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Delivery("POST", {k.lower(): v for k, v in slack.sign(body, **sign).items()}, body)


def receive(slack: FakeSlack, d: Delivery):
    return as_delivery_result(
        levqor_slack.receive_delivery("slack", None, None, d, None, ctx(slack))
    )


def test_forged_and_stale_deliveries_are_refused(slack: FakeSlack) -> None:
    event = slack.envelope(
        {"type": "message", "channel": slack.GENERAL, "user": "U1", "text": "x", "ts": "1.1"}
    )
    assert len(receive(slack, signed(slack, event)).items) == 1
    cases = {
        "wrong secret": signed(slack, event, secret="not-the-signing-secret"),
        "six minutes old": signed(slack, event, timestamp=int(time.time()) - 360),
        "six minutes ahead": signed(slack, event, timestamp=int(time.time()) + 360),
        "no headers": Delivery("POST", {}, json.dumps(event).encode()),
    }
    good = signed(slack, event)
    cases["body changed"] = Delivery("POST", good.headers, good.body.replace(b'"x"', b'"y"'))
    cases["timestamp changed"] = Delivery(
        "POST", {**good.headers, "x-slack-request-timestamp": str(int(time.time()) - 1)}, good.body
    )
    cases["not a number"] = Delivery(
        "POST", {**good.headers, "x-slack-request-timestamp": "soon"}, good.body
    )
    cases["not ASCII digits"] = Delivery(
        "POST", {**good.headers, "x-slack-request-timestamp": "\u00b2\u00b3"}, good.body
    )
    for name, d in cases.items():
        with pytest.raises(SignatureError) as e:
            receive(slack, d)
        assert e.value.status == 401, name
        assert slack.signing_secret not in str(e.value)
    with pytest.raises(SignatureError) as e:
        receive(slack, cases["six minutes old"])
    assert e.value.code == "stale_timestamp"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        {"no": "type"},
        {"type": "url_verification"},
        {"type": "url_verification", "challenge": ""},
        {"type": "event_callback", "team_id": "T1", "event": {"type": "message"}},
    ],
)
def test_signed_but_malformed_bodies_are_400(slack: FakeSlack, payload) -> None:
    with pytest.raises(PermanentError) as e:
        receive(slack, signed(slack, payload))
    assert e.value.status == 400 and not isinstance(e.value, SignatureError)


def test_other_envelope_types_carry_nothing(slack: FakeSlack) -> None:
    out = receive(
        slack,
        signed(slack, {"type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1}),
    )
    assert out.items == [] and out.response is None


# ---------------------------------------------------------------- the contract kit


class TestContractWithSlackApp(ConnectorContract):
    """post_message with a connected app's bot token (the webhook variant is test_slack.py's)."""

    plugin = levqor_slack
    secret_fields = ["access_token", "refresh_token"]

    def credentials(self, base_url: str) -> dict:
        return {
            **sample_oauth_credentials(),
            "access_token": "xoxb-1-contracttoken0123456789",
            "team_id": "T1",
        }

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_SLACK_API_BASE": base_url}


class _SlackAdapter:
    plugin = levqor_slack
    connector = "slack"
    secret_fields = ["access_token", "refresh_token"]

    def fake(self) -> FakeSlack:
        return FakeSlack()

    def env(self, fake: FakeSlack) -> dict:
        return {
            "LEVQOR_SLACK_API_BASE": fake.url,
            "LEVQOR_SLACK_SIGNING_SECRET": getattr(self, "secret", fake.signing_secret),
        }

    def fail(self, fake: FakeSlack, status: int, retry_after: int | None = None) -> None:
        # Slack's own shapes: a refused token is HTTP 200 {"ok": false, "error": "invalid_auth"}
        if status == 401:
            reply = Reply(200, {"ok": False, "error": "invalid_auth"})
        elif status == 429:
            reply = Reply(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
            )
        else:
            reply = Reply(status, {"ok": False, "error": "service_unavailable"})
        fake.server.answer_all(reply)


class TestNewMessageContract(_SlackAdapter, InstantTriggerContract):
    trigger = "new_message"
    events_per_delivery = 1  # one event per Events API request
    signs_body = True

    def credentials(self, fake: FakeSlack) -> dict:
        return {**sample_oauth_credentials(), "access_token": fake.bot_token, "team_id": fake.team}

    def config(self, fake: FakeSlack) -> dict:
        return {"channel": fake.GENERAL}

    def delivery(self, fake: FakeSlack, events: int, sign_with: str) -> Delivery:
        ts = fake._next_ts()
        envelope = fake.envelope(
            {
                "type": "message",
                "channel": fake.GENERAL,
                "user": fake.USER,
                "text": "hi",
                "ts": ts,
                "channel_type": "channel",
            }
        )
        body = json.dumps(envelope).encode()
        return Delivery(
            "POST", {k.lower(): v for k, v in fake.sign(body, secret=sign_with).items()}, body
        )

    def handshake(self, fake: FakeSlack, sign_with: str):
        body = json.dumps({"token": "t", "challenge": "c-123", "type": "url_verification"}).encode()
        d = Delivery(
            "POST", {k.lower(): v for k, v in fake.sign(body, secret=sign_with).items()}, body
        )
        return d, (200, {"challenge": "c-123"})


class TestOAuth(_SlackAdapter, OAuthContract):
    actions = ["post_message"]

    def oauth_credentials(self, fake: FakeSlack) -> dict:
        return {**sample_oauth_credentials(), "access_token": fake.bot_token, "team_id": fake.team}

    def token_response(self, fake: FakeSlack) -> dict:
        return fake.token_response()
