"""statusd.schema.bad_input: the one ValidationError -> BadInput mapping (pure code, no I/O).
The HTTP-level pins are in test_api_bad_input_writes_nothing.py and test_silences_api.py; here
the rules those rely on: precedence, null as missing, dotted fields, repeated parameters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from statusd.errors import BadInput
from statusd.lifecycle import Kind
from statusd.schema.bad_input import parse_body, parse_query
from statusd.schema.bodies import RegisterRequest, SilenceRequest
from statusd.schema.queries import StaleQuery, WorkloadQuery, decode_cursor, encode_cursor


def body_error(model: type, body: dict[str, object], **context: object) -> tuple[int, str, str]:
    with pytest.raises(BadInput) as caught:
        parse_body(model, body, **context)  # type: ignore[type-var]
    exc = caught.value
    assert exc.message
    return exc.status, exc.error, exc.field or ""


def test_unknown_fields_are_named_before_missing_ones() -> None:
    assert body_error(RegisterRequest, {"owner": "x"}) == (422, "unknown_field", "owner")


def test_a_required_field_sent_as_null_is_missing() -> None:
    assert body_error(RegisterRequest, {"id": None, "kind": "training"}) == (
        422,
        "missing_field",
        "id",
    )


def test_optional_null_is_accepted() -> None:
    reg = parse_body(RegisterRequest, {"id": "a", "kind": "training", "labels": None})
    assert reg.labels is None and reg.kind is Kind.TRAINING


def test_nested_and_keyed_fields_are_dotted() -> None:
    bad_key = {"id": "a", "kind": "training", "labels": {"a b": "x"}}
    assert body_error(RegisterRequest, bad_key) == (422, "invalid_value", "labels.a b")
    now = datetime.now(UTC)
    silence = {"match": {"kind": 3}, "until": "2999-01-01T00:00:00Z", "reason": "x"}
    assert body_error(SilenceRequest, silence, now=now) == (422, "invalid_type", "match.kind")


def test_query_errors_are_400_invalid_query_naming_the_parameter() -> None:
    for query, field in (
        (MultiDict(limit="1", kind="x"), "kind"),
        (MultiDict([("limit", "1"), ("limit", "2")]), "limit"),
        (MultiDict(label="k:v", nope="1"), "nope"),
        (MultiDict([("label", "k:v"), ("label", "k:w")]), "label"),
        (MultiDict(limit="+1"), "limit"),
    ):
        with pytest.raises(BadInput) as caught:
            parse_query(WorkloadQuery, query)
        assert (caught.value.status, caught.value.error, caught.value.field) == (
            400,
            "invalid_query",
            field,
        ), query


def test_repeatable_parameters_collect_every_value() -> None:
    q = parse_query(StaleQuery, MultiDict([("kind", "training,notebook"), ("kind", " Deployment")]))
    assert q.kinds == (Kind.TRAINING, Kind.NOTEBOOK, Kind.DEPLOYMENT)
    q = parse_query(StaleQuery, MultiDict([("label", "team:a:b"), ("older_than", "1h30m")]))
    assert q.labels == (("team", "a:b"),) and q.older_than == 5400.0


def test_a_cursor_round_trips_and_a_forged_one_does_not() -> None:
    assert decode_cursor(encode_cursor("w-1")) == "w-1"
    assert parse_query(WorkloadQuery, MultiDict(cursor=encode_cursor("w-1"))).after == "w-1"
    assert decode_cursor("aGVsbG8") is None
