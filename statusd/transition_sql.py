"""The SQL of statusd.transitions: statements built once, each run once per batch of rows.

A transition storm is thousands of small writes of the same few shapes. Building a statement per
row (and its cache key) cost more CPU than the database spent on it, so every statement here is a
module constant with bind parameters (SQLAlchemy compiles it once per dialect and reuses it), and
each is executed once per batch: one row-locking SELECT for every workload of the batch, one
executemany UPDATE, one multi-row INSERT per table (RETURNING the transition ids in parameter
order). What to write is decided in statusd.transitions; this module only writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, Select, String, bindparam, func, insert, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.db import is_sqlite
from statusd.tables import REFUSED_OBSERVATIONS, TRANSITIONS, WORKLOADS

# Everything a judgement or a write-back needs; the write-back rewrites every mutable one, so a
# batch has one UPDATE shape whatever each workload's verdict was.
_LOCK_COLUMNS = (
    WORKLOADS.c.id,
    WORKLOADS.c.kind,
    WORKLOADS.c.state,
    WORKLOADS.c.prior_state,
    WORKLOADS.c.generation,
    WORKLOADS.c.version,
    WORKLOADS.c.labels,
    WORKLOADS.c.last_seq,
    WORKLOADS.c.last_seen_at,
    WORKLOADS.c.poll_failures,
    WORKLOADS.c.state_changed_at,
    WORKLOADS.c.parent,  # read only: whether an alert may be held (statusd.dependencies)
)
# PostgreSQL gets the ids as one array parameter: the statement text is the same for every batch
# size, where an expanding IN is re-rendered per call. Each id is looked up through a LATERAL
# subquery, so the plan is one primary-key lookup per id whatever the planner believes about the
# table: as a join or an `= ANY` filter, a planner with no or stale statistics (a table analyzed
# while it held a row, 20,000 rows later; a prepared statement gone generic) walked every workload
# through an index and searched the ids for each (rows x ids comparisons: ~0.3 s of database CPU
# per batch of 500 at 40,000 workloads, up to pool-size batches at once). The lookups run in array
# order and lock_workloads sorts the ids, so rows are locked in id order: two batches that share
# workloads (a shard changing hands) wait for each other instead of deadlocking. SQLite: BEGIN
# IMMEDIATE already holds the write lock.
_IDS_PG = (
    func.unnest(bindparam("ids", type_=ARRAY(String))).table_valued("id").render_derived("ids")
)


def _per_id_pg(found: Select[Any], name: str) -> Select[Any]:
    """`found` (filtered on WORKLOADS.c.id == _IDS_PG.c.id) run once per id of the array."""
    lookup = found.lateral(name)
    return select(*lookup.c).select_from(_IDS_PG.join(lookup, true()))


_LOCK_PG = _per_id_pg(
    select(*_LOCK_COLUMNS)
    .where(WORKLOADS.c.id == _IDS_PG.c.id, WORKLOADS.c.deleted_at.is_(None))
    .with_for_update(),
    "locked",
)
_LOCK_SQLITE = select(*_LOCK_COLUMNS).where(
    WORKLOADS.c.id.in_(bindparam("ids", expanding=True)), WORKLOADS.c.deleted_at.is_(None)
)

_WRITE_BACK = (
    update(WORKLOADS)
    .where(WORKLOADS.c.id == bindparam("b_id"), WORKLOADS.c.version == bindparam("b_read_version"))
    .values(
        state=bindparam("b_state"),
        prior_state=bindparam("b_prior_state"),
        version=bindparam("b_version"),
        last_seq=bindparam("b_last_seq"),
        last_seen_at=bindparam("b_last_seen_at"),
        poll_failures=bindparam("b_poll_failures"),
        state_changed_at=bindparam("b_state_changed_at"),
    )
)
WRITE_BACK_FIELDS = (
    "state",
    "prior_state",
    "version",
    "last_seq",
    "last_seen_at",
    "poll_failures",
    "state_changed_at",
)

_VERSIONS_PG = _per_id_pg(
    select(WORKLOADS.c.id, WORKLOADS.c.version).where(WORKLOADS.c.id == _IDS_PG.c.id), "written"
)
_VERSIONS_SQLITE = select(WORKLOADS.c.id, WORKLOADS.c.version).where(
    WORKLOADS.c.id.in_(bindparam("ids", expanding=True))
)
_INSERT_TRANSITIONS = insert(TRANSITIONS).returning(TRANSITIONS.c.id, sort_by_parameter_order=True)
_INSERT_REFUSALS = insert(REFUSED_OBSERVATIONS)


async def lock_workloads(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RowMapping]:
    """Lock the registered (not deleted) workloads among `ids` for this transaction: id -> row."""
    query = _LOCK_SQLITE if is_sqlite(conn.engine.url) else _LOCK_PG
    result = await conn.execute(query, {"ids": sorted(set(ids))})
    return {row["id"]: row for row in result.mappings()}


async def write_back(
    conn: AsyncConnection, rows: Sequence[tuple[str, int, dict[str, Any]]]
) -> None:
    """UPDATE each (id, version read, new values) conditional on the version read, then check.

    The check is a read, not rowcount: executemany on asyncpg reports no per-row counts. It cannot
    fail while we hold the row locks; if it ever does, the whole transaction is refused rather than
    a transition written over a row it did not update (the version condition kept the row intact).
    """
    if not rows:
        return
    await conn.execute(
        _WRITE_BACK,
        [
            {"b_id": wid, "b_read_version": read, **{f"b_{k}": new[k] for k in WRITE_BACK_FIELDS}}
            for wid, read, new in rows
        ],
    )
    want = {wid: new["version"] for wid, _, new in rows}
    query = _VERSIONS_SQLITE if is_sqlite(conn.engine.url) else _VERSIONS_PG
    have = dict((await conn.execute(query, {"ids": list(want)})).tuples().all())
    lost = sorted(wid for wid, version in want.items() if have.get(wid) != version)
    if lost:
        raise RuntimeError(f"lost the row lock on workload(s) {lost[:5]!r}")


async def insert_transitions(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """History rows, one multi-row INSERT; their ids in the order of `rows`."""
    if not rows:
        return []
    if len(rows) == 1:  # executemany's RETURNING needs insertmanyvalues; one row needs nothing
        return [(await conn.execute(_INSERT_TRANSITIONS, rows[0])).scalar_one()]
    return list((await conn.execute(_INSERT_TRANSITIONS, list(rows))).scalars().all())


async def insert_refusals(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_INSERT_REFUSALS, list(rows))
