"""One error root and one transience rule: every statusd exception is a StatusdError, and
`is_transient` judges the whole cause chain (pure code: no I/O)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sqlalchemy.exc import OperationalError

import statusd
from statusd.errors import (
    BadInput,
    RedisUnavailable,
    StatusdError,
    StorageUnavailable,
    UnknownWorkload,
    is_transient,
)
from statusd.ingest.writer import NotStored
from statusd.sync.delivery import TransientDeliveryError


def statusd_exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(statusd.__path__, "statusd."):
        module = importlib.import_module(info.name)
        # type(obj), not inspect.isclass: isclass reads obj.__class__, and a Celery task module's
        # shared_task proxy resolves that against whichever app is current in this process
        # (another test's, without the task: NotRegistered).
        for obj in list(vars(module).values()):
            if not issubclass(type(obj), type):
                continue
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_every_statusd_exception_has_the_one_root() -> None:
    classes = statusd_exception_classes()
    assert len(classes) > 10  # the walk found the package's errors at all
    strays = [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, StatusdError)]
    assert strays == []


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        StorageUnavailable("database unavailable"),
        RedisUnavailable("pool exhausted"),
        NotStored("redis did not take the append"),
        TransientDeliveryError("503 from the main API", status=503),
        RedisConnectionError("connection refused"),
        ConnectionRefusedError(111, "refused"),
        wrapped(RedisConnectionError("reset"), RuntimeError("while applying")),
        wrapped(
            OperationalError("SELECT 1", {}, Exception("gone")),
            StorageUnavailable("database unavailable: OperationalError"),
        ),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unavailable_stores_and_peers_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad seq"),
        UnknownWorkload("w-1"),
        BadInput("seq must be an integer", field="seq"),
        ResponseError("WRONGTYPE"),
        wrapped(KeyError("status"), RuntimeError("while applying")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bad_input_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_cause_chain_that_loops_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert not is_transient(a)


def test_bad_input_carries_status_code_and_field_as_json() -> None:
    exc = BadInput("seq must be >= 0", field="seq", status=422, error="invalid_value")
    assert isinstance(exc, StatusdError) and not exc.transient
    assert exc.as_json() == {
        "error": "invalid_value",
        "message": "seq must be >= 0",
        "field": "seq",
    }
    assert BadInput("not JSON", status=400).as_json() == {"error": "invalid", "message": "not JSON"}
