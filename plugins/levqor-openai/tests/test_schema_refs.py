"""An extract step's answer schema refers within itself: a ``$ref`` to a URL is refused before
the model is asked (and the URL is never fetched, in the plan check nor in the step), and a
``$ref`` that refers to itself without end fails the step as a bad payload, not as a crash."""

from __future__ import annotations

import time
from collections.abc import Iterator

import levqor_openai
import pytest
from levqor_kernel.context import StepContext
from levqor_kernel.errors import PayloadError
from levqor_kernel.testing import FakeServer
from levqor_openai.actions import schema_problem
from levqor_openai.fake import FakeOpenAI

KEY = "sk-test-schema-refs-0123456789"


@pytest.fixture
def ai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list]]:
    """A server holding a schema: nothing may ask it."""
    with FakeServer() as srv:
        srv.route("GET", r"/.*", {"type": "string"})
        yield srv.url + "/internal.json", srv.requests


def _extract(ai: FakeOpenAI, schema: dict, mode: str) -> dict:
    ctx = StepContext(
        run_id="r", step_id="s", deadline=time.monotonic() + 5,
        env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url},
    )  # fmt: skip
    payload = {"model": "m", "text": "Order 7", "schema": schema, "mode": mode}
    return levqor_openai.run_task("openai", "extract", payload, None, ctx)


@pytest.mark.parametrize("mode", ["json", "strict"])
def test_a_ref_to_a_url_is_refused_and_never_fetched(ai, schema_server, mode):
    url, asked = schema_server
    schema = {"type": "object", "properties": {"a": {"$ref": url}}, "required": ["a"]}
    assert "refer within the schema" in (schema_problem(schema) or "")
    ai.answer({"a": "x"}, usage=(5, 1))
    with pytest.raises(PayloadError, match="refer within the schema") as e:
        _extract(ai, schema, mode)
    assert e.value.code == "bad_schema"
    assert asked == [] and ai.completions == []


def test_a_ref_to_itself_fails_the_step_as_a_bad_payload(ai):
    schema = {"type": "object", "$defs": {"a": {"$ref": "#/$defs/a"}},
              "properties": {"x": {"$ref": "#/$defs/a"}}}  # fmt: skip
    ai.answer({"x": 1}, usage=(5, 1))
    with pytest.raises(PayloadError, match="refers to itself") as e:
        _extract(ai, schema, "json")
    assert e.value.code == "bad_schema"
