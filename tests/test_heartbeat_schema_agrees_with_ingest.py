"""The ingest hot path keeps a hand-written heartbeat checker (measured faster than pydantic:
bench/heartbeat_validation.py); the OpenAPI Heartbeat schema is generated from the same constants
(statusd.schema.rules). Here the two are held together with jsonschema, on the served document's
own schema: whatever the checker accepts the schema accepts, and on the edge cases of every rule
they give the same verdict. Pure code, no I/O."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from statusd.api.openapi import openapi_document
from statusd.errors import BadInput
from statusd.ingest.heartbeat_checks import check_heartbeat
from statusd.lifecycle import Kind, State, reportable_states
from statusd.schema.rules import DEFAULT_MAX_QUIET_S, MAX_DETAIL_BYTES, MAX_INT64, MAX_WORKLOAD_ID
from statusd.tokens import TokenClaims

DOCUMENT = openapi_document(500)
SCHEMAS = DOCUMENT["components"]["schemas"]
REGISTRY: Registry[Any] = Registry().with_resource(
    "urn:statusd", DRAFT202012.create_resource({"components": {"schemas": SCHEMAS}})
)


def ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """`pattern` as JSON Schema means it (ECMA-262: `$` is the end of the text). Python's `$`
    also matches before a final newline, so jsonschema alone would let "id\n" through."""
    if isinstance(instance, str):
        python = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
        if re.search(python, instance) is None:
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})
HEARTBEAT = Validator({"$ref": "urn:statusd#/components/schemas/Heartbeat"}, registry=REGISTRY)
WID = "train-7"
CLAIMS = TokenClaims(WID, Kind.TRAINING, 1)
GOOD = {"workload_id": WID, "status": "RUNNING", "seq": 1}


def checker_accepts(body: dict[str, Any]) -> bool:
    # The token speaks for the body's workload, and its kind is one that can report the status:
    # what is left is what the schema states (shape, types, bounds, pattern).
    wid = body.get("workload_id")
    status = body.get("status")
    kinds = [k for k in Kind if isinstance(status, str) and status in reportable_states(k)]
    claims = TokenClaims(
        wid if isinstance(wid, str) else WID, kinds[0] if kinds else Kind.TRAINING, 1
    )
    try:
        check_heartbeat(body, claims)
    except BadInput as exc:
        assert exc.status in (403, 422), exc.as_json()
        return False
    return True


EDGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("minimal", GOOD),
    ("seq 0", {**GOOD, "seq": 0}),
    ("seq -1", {**GOOD, "seq": -1}),
    ("seq max", {**GOOD, "seq": MAX_INT64}),
    ("seq max + 1", {**GOOD, "seq": MAX_INT64 + 1}),
    ("seq float", {**GOOD, "seq": 1.5}),
    ("seq bool", {**GOOD, "seq": True}),
    ("seq text", {**GOOD, "seq": "1"}),
    ("id 1 char", {**GOOD, "workload_id": "a"}),
    ("id max", {**GOOD, "workload_id": "a" * MAX_WORKLOAD_ID}),
    ("id max + 1", {**GOOD, "workload_id": "a" * (MAX_WORKLOAD_ID + 1)}),
    ("id empty", {**GOOD, "workload_id": ""}),
    ("id slash", {**GOOD, "workload_id": "a/b"}),
    ("id newline", {**GOOD, "workload_id": "ab\n"}),
    ("id every allowed char", {**GOOD, "workload_id": "Az09._:-"}),
    ("id number", {**GOOD, "workload_id": 7}),
    ("detail max", {**GOOD, "detail": "x" * MAX_DETAIL_BYTES}),
    ("detail max + 1", {**GOOD, "detail": "x" * (MAX_DETAIL_BYTES + 1)}),
    ("detail null", {**GOOD, "detail": None}),
    ("detail number", {**GOOD, "detail": 5}),
    ("quiet 1", {**GOOD, "quiet_for_s": 1}),
    ("quiet max", {**GOOD, "quiet_for_s": DEFAULT_MAX_QUIET_S}),
    ("quiet max + 1", {**GOOD, "quiet_for_s": DEFAULT_MAX_QUIET_S + 1}),
    ("quiet 0", {**GOOD, "quiet_for_s": 0}),
    ("quiet negative", {**GOOD, "quiet_for_s": -5}),
    ("quiet null", {**GOOD, "quiet_for_s": None}),
    ("quiet float", {**GOOD, "quiet_for_s": 1.5}),
    ("quiet true", {**GOOD, "quiet_for_s": True}),
    ("quiet string", {**GOOD, "quiet_for_s": "60"}),
    ("status unknown", {**GOOD, "status": "DANCING"}),
    ("status lower case", {**GOOD, "status": "running"}),
    ("status list", {**GOOD, "status": ["RUNNING"]}),
    ("unknown field", {**GOOD, "extra": 1}),
    ("token in a single body", {**GOOD, "token": "x"}),
    ("missing seq", {"workload_id": WID, "status": "RUNNING"}),
    ("missing status", {"workload_id": WID, "seq": 1}),
    ("missing id", {"status": "RUNNING", "seq": 1}),
]


@pytest.mark.parametrize(("case", "body"), EDGE_CASES, ids=[c for c, _ in EDGE_CASES])
def test_checker_and_schema_agree_on_each_rules_edges(case: str, body: dict[str, Any]) -> None:
    assert checker_accepts(body) == HEARTBEAT.is_valid(body), case


ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,200}", fullmatch=True),
    st.text(max_size=210),
    st.integers(),
)
values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
heartbeats = st.fixed_dictionaries(
    {
        "workload_id": ids,
        "status": st.one_of(st.sampled_from([s.value for s in State]), st.text(max_size=12)),
        "seq": st.one_of(st.integers(min_value=-(2**64), max_value=2**64), values),
    },
    optional={
        "detail": st.one_of(st.none(), st.text(max_size=1100), values),
        "quiet_for_s": st.one_of(st.integers(min_value=-5, max_value=4000), values),
        "token": st.text(max_size=3),
        "extra": values,
    },
)


@settings(max_examples=400, deadline=None, database=None)
@given(body=heartbeats)
def test_whatever_the_checker_accepts_the_schema_accepts(body: dict[str, Any]) -> None:
    if checker_accepts(body):
        assert HEARTBEAT.is_valid(body), body


def test_multibyte_detail_is_where_they_part_and_the_schema_says_so() -> None:
    """JSON Schema counts characters, the checker UTF-8 bytes: the schema's maxLength is the
    looser bound (a byte is never less than a character), and its description names the bytes."""
    body = {**GOOD, "detail": "é" * (MAX_DETAIL_BYTES // 2 + 1)}  # 513 characters, 1026 bytes
    assert HEARTBEAT.is_valid(body) and not checker_accepts(body)
    detail = SCHEMAS["Heartbeat"]["properties"]["detail"]
    assert f"{MAX_DETAIL_BYTES} bytes" in detail["description"]


def test_the_api_and_ingest_share_the_workload_id_pattern() -> None:
    registration = SCHEMAS["RegisterRequest"]["properties"]["id"]["pattern"]
    assert SCHEMAS["Heartbeat"]["properties"]["workload_id"]["pattern"] == registration
    # The checker refuses what the pattern refuses, before the token is compared (422, not 403).
    with pytest.raises(BadInput) as caught:
        check_heartbeat({**GOOD, "workload_id": "a/b"}, TokenClaims("a/b", Kind.TRAINING, 1))
    assert (caught.value.status, caught.value.field) == (422, "workload_id")


def test_the_documented_quiet_maximum_is_the_served_setting() -> None:
    schemas = openapi_document(500, 77)["components"]["schemas"]
    for name in ("Heartbeat", "BatchHeartbeat"):
        (integer,) = [
            v for v in schemas[name]["properties"]["quiet_for_s"]["anyOf"] if v["type"] == "integer"
        ]
        assert integer["maximum"] == 77, name
    claims = TokenClaims(WID, Kind.TRAINING, 1)
    assert check_heartbeat({**GOOD, "quiet_for_s": 77}, claims, max_quiet_s=77).quiet_for_s == 77
    with pytest.raises(BadInput) as refused:
        check_heartbeat({**GOOD, "quiet_for_s": 78}, claims, max_quiet_s=77)
    assert (refused.value.status, refused.value.field) == (422, "quiet_for_s")
