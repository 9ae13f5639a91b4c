"""A pipeline's ``input`` schema refers within itself: a ``$ref`` to a URL is refused when the
document is saved and never fetched when a run's input is checked; a ``$ref`` that refers to
itself without end is a problem of the input, not a crash."""

from __future__ import annotations

import pytest
from levqor_kernel.catalog import Catalog
from levqor_kernel.pipeline import validate_input, validate_pipeline
from levqor_kernel.testing import FakeServer


def _doc(schema):
    return {
        "levqor": 1,
        "name": "P",
        "trigger": {"type": "manual"},
        "input": schema,
        "steps": [{"id": "done", "type": "stop", "status": "succeeded"}],
    }


@pytest.fixture
def schema_server():
    """A server holding a schema: the validator must never ask it."""
    with FakeServer() as srv:
        srv.route("GET", r"/.*", {"type": "string"})
        yield srv.url + "", srv.requests


def test_a_ref_to_a_url_is_refused_on_save_and_never_fetched_by_a_run(schema_server):
    url, asked = schema_server
    doc = _doc({"type": "object", "properties": {"a": {"$ref": url + "/internal.json"}}})
    problems = validate_pipeline(doc, Catalog())
    assert [p.pointer for p in problems] == ["/input/properties/a/$ref"]
    assert "refer within the schema" in problems[0].message
    # a document saved before this check still never makes its run fetch the URL
    found = validate_input(doc, {"a": "x"})
    assert len(found) == 1 and found[0].pointer == "/input" and "cannot be resolved" in found[0].message
    relative = _doc({"$id": url + "/", "properties": {"a": {"$ref": "other.json"}}})
    assert validate_pipeline(relative, Catalog())[0].pointer == "/input/properties/a/$ref"
    assert "cannot be resolved" in validate_input(relative, {"a": 1})[0].message
    assert asked == []


def test_a_ref_that_refers_to_itself_is_a_problem_not_a_crash():
    doc = _doc({"type": "object", "$defs": {"a": {"$ref": "#/$defs/a"}},
                "properties": {"x": {"$ref": "#/$defs/a"}}})  # fmt: skip
    assert validate_pipeline(doc, Catalog()) == []  # a local ref is allowed
    found = validate_input(doc, {"x": 1})
    assert len(found) == 1 and "refers to itself" in found[0].message


def test_local_refs_still_validate():
    doc = _doc({"type": "object", "$defs": {"n": {"type": "string", "minLength": 1}},
                "properties": {"name": {"$ref": "#/$defs/n"}}})  # fmt: skip
    assert validate_pipeline(doc, Catalog()) == []
    assert validate_input(doc, {"name": "Ada"}) == []
    assert [p.pointer for p in validate_input(doc, {"name": ""})] == ["/input/name"]
