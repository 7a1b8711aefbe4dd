"""A key's labels as SQL: the conditions that keep a query to the workloads carrying all of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from statusd.tables import WORKLOADS


def carrying(labels: Iterable[tuple[str, str]]) -> list[Any]:
    """WHERE conditions on `workloads`: it carries every (key, value)."""
    return [WORKLOADS.c.labels[key].as_string() == value for key, value in labels]


def ids_carrying(labels: Iterable[tuple[str, str]]) -> Any:
    """SELECT id FROM workloads carrying every (key, value), for `workload_id IN (...)`."""
    return select(WORKLOADS.c.id).where(*carrying(labels))
