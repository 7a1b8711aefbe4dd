"""`statusd keys create | list | revoke` and `statusd audit`: API keys and the audit trail.

Both work on the database directly (STATUSD_DATABASE_URL; no Redis, no running API), so an
operator can mint the first keys before anything serves. Key changes made here are audited too,
as the actor `cli`. A revocation here reaches every serving process within STATUSD_KEY_CACHE_TTL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access import api_keys, audit
from statusd.access.audit import AuditAction, AuditFilter, AuditRecord
from statusd.access.scopes import Principal, Scope
from statusd.cli.common import fail, load_settings, operator_errors, out, run_loop
from statusd.db import create_engine
from statusd.errors import BadInput

T = TypeVar("T")
CLI_ACTOR = Principal("cli", "statusd CLI", Scope.ADMIN)
CLI_ADDRESS = "local"
keys_app = typer.Typer(
    name="keys", help="Scoped API keys: create (shown once), list, revoke.", no_args_is_help=True
)


def _with_engine(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    settings = load_settings()

    async def run() -> T:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    with operator_errors():
        try:
            return run_loop(run)
        except BadInput as exc:
            fail(str(exc))


async def _audited(engine: AsyncEngine, action: AuditAction, target: str, outcome: int) -> None:
    now = datetime.now(UTC)
    entry = AuditRecord.of(
        CLI_ACTOR, action, at=now, target=target, outcome=outcome, client_address=CLI_ADDRESS
    )
    await audit.record(engine, entry)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what holds the key")],
    scope: Annotated[Scope, typer.Option("--scope", help="read, write or admin")],
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="k:v, repeatable: the key sees only workloads with all"),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="8s, 15m, 12h, 90d (default: never)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
) -> None:
    """Create a key and print it (the only time it is shown: only its digest is stored)."""
    if not name.strip() or len(name) > 200:
        fail("--name must be 1..200 characters")
    try:
        labels = api_keys.labels_from(label or [], field="--label")
        lifetime = api_keys.parse_duration(expires_in, field="--expires-in") if expires_in else None
    except BadInput as exc:
        fail(str(exc))

    async def work(engine: AsyncEngine) -> api_keys.NewKey:
        created = await api_keys.create_key(
            engine,
            name=name,
            scope=scope,
            labels=labels,
            expires_in=lifetime,
            now=datetime.now(UTC),
        )
        await _audited(engine, AuditAction.KEY_CREATE, created.record.id, 201)
        return created

    created = _with_engine(work)
    record = created.record
    if as_json:
        doc = {**record.as_json(), "key": created.key}
        typer.echo(orjson.dumps(doc).decode())
        return
    out.print(f"key {record.id} ({escape(record.name)}, {record.scope.value})", highlight=False)
    out.print(created.key, highlight=False)
    out.print("[dim]shown once: store it now[/]")


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array")] = False,
) -> None:
    """Every key (never a secret), revoked and expired ones too."""
    records = _with_engine(api_keys.list_keys)
    now = datetime.now(UTC)
    if as_json:
        typer.echo(orjson.dumps([r.as_json() for r in records]).decode())
        return
    table = Table(title=f"{len(records)} key(s)")
    for column in ("id", "name", "scope", "labels", "expires", "state"):
        table.add_column(column, overflow="fold")
    for r in records:
        state = "revoked" if r.revoked_at else ("expired" if not r.usable(now) else "active")
        table.add_row(
            r.id,
            escape(r.name),
            r.scope.value,
            escape(",".join(f"{k}:{v}" for k, v in sorted(r.labels.items()))),
            r.expires_at.isoformat() if r.expires_at else "never",
            state,
        )
    out.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (statusd keys list)")]) -> None:
    """Revoke a key: every statusd process refuses it within STATUSD_KEY_CACHE_TTL."""

    async def work(engine: AsyncEngine) -> api_keys.KeyRecord | None:
        record = await api_keys.revoke_key(engine, key_id, datetime.now(UTC))
        await _audited(engine, AuditAction.KEY_REVOKE, key_id, 200 if record else 404)
        return record

    if _with_engine(work) is None:
        fail(f"no key {key_id!r}", code=1)
    out.print(f"key {escape(key_id)} revoked", highlight=False)


def audit_command(
    actor: Annotated[str | None, typer.Option("--actor", help="Key id or name")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. workload.register")] = None,
    target: Annotated[str | None, typer.Option("--target", help="e.g. a workload id")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time with an offset, e.g. 2026-12-01T00:00Z")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """The audit trail, oldest first: who changed what, when, from where, with what outcome."""
    start: datetime | None = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--since: {since!r} is not an ISO time")
        if start.tzinfo is None:
            fail("--since needs an offset (Z or +hh:mm)")

    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        flt = AuditFilter(actor=actor, action=action, target=target, since=start)
        while len(rows) < limit:
            page, cursor = await audit.page(engine, flt, min(500, limit - len(rows)))
            rows += page
            if cursor is None or not page:
                return rows
            flt = AuditFilter(actor, action, target, start, after_id=page[-1]["id"])
        return rows

    rows = _with_engine(work)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    table = Table(title=f"{len(rows)} audit row(s)")
    for column in ("at", "actor", "action", "target", "outcome", "client"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["at"],
            escape(f"{row['actor_name']} ({row['actor_id']})"),
            row["action"],
            escape(row["target"] or ""),
            str(row["outcome"]),
            row["client_address"] or "",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add `statusd keys ...` and `statusd audit` to the statusd CLI."""
    app.add_typer(keys_app, name="keys")
    app.command("audit")(audit_command)
