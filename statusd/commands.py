"""Foundation CLI verbs: up, serve, migrate, workloads list/show, lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from statusd.errors import ConfigError, StatusdError
from statusd.settings import Settings

T = TypeVar("T")

if TYPE_CHECKING:
    from statusd.dev_secrets import DevSecrets
    from statusd.runtime import Runtime
    from statusd.supervisor import Supervisor

out = Console(soft_wrap=True)  # paths and tokens stay on one line, copy-pasteable
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (no traceback: these are the operator's to fix) and exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def operator_errors() -> Iterator[None]:
    """ConfigError / StatusdError -> a clear message and exit code 2 instead of a traceback."""
    try:
        yield
    except (ConfigError, StatusdError) as exc:
        fail(str(exc))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with CLI flags (non-None) on top."""
    with operator_errors():
        try:
            return Settings(**{k: v for k, v in overrides.items() if v is not None})
        except ValueError as exc:  # pydantic ValidationError: name the variable
            fail(f"invalid configuration: {exc}")


# -- migrate --------------------------------------------------------------------------------------


def alembic_ini() -> Path:
    """alembic.ini beside the package (source checkout / editable install), else in the cwd."""
    for candidate in (
        Path(__file__).resolve().parents[1] / "alembic.ini",
        Path.cwd() / "alembic.ini",
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "alembic.ini not found next to the statusd package or in the current directory"
    )


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` on `database_url`; ConfigError naming the database if unreachable."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.engine import make_url

    from statusd.db import is_transient_db_error, normalize_url, sqlite_path

    url = normalize_url(database_url)
    path = sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    config = Config(str(alembic_ini()))
    config.attributes["database_url"] = database_url
    try:
        command.upgrade(config, "head")
    except Exception as exc:
        if is_transient_db_error(exc) or isinstance(exc, OSError):
            shown = make_url(database_url).render_as_string(hide_password=True)
            raise ConfigError(
                f"cannot reach the database {shown} to migrate it ({type(exc).__name__}: {exc}). "
                "Check STATUSD_DATABASE_URL and that the server is up."
            ) from exc
        raise


def migrate() -> None:
    """Create or upgrade the database schema (Alembic upgrade head) on STATUSD_DATABASE_URL."""
    settings = load_settings()
    with operator_errors():
        run_migrations(settings.database_url)
    out.print("[green]database schema is up to date[/]")


# -- serve ----------------------------------------------------------------------------------------


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (STATUSD_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (STATUSD_PORT).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes sharing the port (SO_REUSEPORT).")
    ] = 1,
    consumers: Annotated[
        int | None,
        typer.Option(min=0, help="Heartbeat consumer tasks per process (STATUSD_CONSUMERS)."),
    ] = None,
) -> None:
    """Run the HTTP API (status API, heartbeat ingest, on-call endpoints) and stream consumers."""
    from statusd.logs import configure_logging
    from statusd.runtime import redis_url_or_fail
    from statusd.serving import serve as run

    settings = load_settings(host=host, port=port)
    with operator_errors():
        settings.require_secrets()
        redis_url_or_fail(settings)  # fail now with the fix, not inside the server's startup
    configure_logging(settings)
    with operator_errors():
        code = run(settings, workers=workers, consumers=consumers)
    raise typer.Exit(code)


# -- workloads ------------------------------------------------------------------------------------

workloads_app = typer.Typer(
    help="Look at registered workloads from the terminal.", no_args_is_help=True
)


async def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Open a Runtime (database + Redis) for one CLI verb, run `work` on it, and close it."""
    from statusd.wiring import open_runtime

    runtime = await open_runtime(settings, redis_max_connections=4)
    try:
        return await work(runtime)
    finally:
        await runtime.close()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@workloads_app.command("list")
def workloads_list(
    kind: Annotated[str | None, typer.Option(help="training, notebook or deployment.")] = None,
    state: Annotated[str | None, typer.Option(help="e.g. RUNNING.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="key:value, repeatable.")] = None,
    stale: Annotated[
        bool | None, typer.Option("--stale/--fresh", help="Only stale / fresh.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List workloads (same filters as GET /v1/workloads)."""
    from multidict import MultiDict

    from statusd.api.validation import parse_workload_query
    from statusd.api.workloads import list_page

    params: MultiDict[str] = MultiDict(limit=str(limit))
    for name, value in (("kind", kind), ("state", state)):
        if value is not None:
            params.add(name, value)
    if stale is not None:
        params.add("stale", "true" if stale else "false")
    for pair in label or []:
        params.add("label", pair)
    settings = load_settings()
    with operator_errors():
        query = parse_workload_query(params)
        items, next_cursor = asyncio.run(with_runtime(settings, lambda rt: list_page(rt, query)))
    if as_json:
        _print_json({"items": items, "next_cursor": next_cursor})
        return
    table = Table(
        "id", "kind", "state", "stale", "last seen", "labels", title=f"{len(items)} workloads"
    )
    for item in items:
        labels = ", ".join(f"{k}={v}" for k, v in item["labels"].items())
        table.add_row(
            item["id"],
            item["kind"],
            item["state"],
            "yes" if item["stale"] else "",
            item["last_seen_at"] or "never",
            labels,
        )
    out.print(table)
    if next_cursor:
        out.print(f"[dim]more: raise --limit or use the API with cursor={next_cursor}[/]")


@workloads_app.command("show")
def workloads_show(
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Show one workload and its history."""
    from sqlalchemy import select

    from statusd.api.serializers import transition_json
    from statusd.api.workloads import load_workload
    from statusd.db import reading
    from statusd.models import Transition

    t = Transition.__table__  # type: ignore[attr-defined]

    async def work(rt: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        workload = await load_workload(rt, workload_id)
        async with reading(rt.engine) as conn:
            rows = await conn.execute(
                select(t).where(t.c.workload_id == workload_id).order_by(t.c.id)
            )
            return workload, [transition_json(dict(r._mapping)) for r in rows]

    settings = load_settings()
    with operator_errors():
        workload, history = asyncio.run(with_runtime(settings, work))
    if as_json:
        _print_json({**workload, "transitions": history})
        return
    for key, value in workload.items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)
    table = Table("id", "from", "to", "source", "reason", "seq", "recorded at", title="history")
    for item in history:
        table.add_row(
            str(item["id"]),
            item["from"],
            item["to"],
            item["source"],
            item["reason"] or "",
            "" if item["seq"] is None else str(item["seq"]),
            item["recorded_at"],
        )
    out.print(table)


# -- lifecycle ------------------------------------------------------------------------------------


def lifecycle() -> None:
    """Print each kind's transition table (what may follow what)."""
    from statusd.lifecycle import CONTACT_STATES, FINAL_STATES, Kind, allowed_moves

    for kind in Kind:
        table = Table("from", "may move to", title=f"{kind.value}")
        for state, targets in allowed_moves(kind).items():
            note = " (final)" if state in FINAL_STATES else ""
            note += " (sweeper only)" if state in CONTACT_STATES else ""
            table.add_row(
                f"{state.value}{note}", ", ".join(sorted(t.value for t in targets)) or "-"
            )
        out.print(table)


# -- up -------------------------------------------------------------------------------------------


def statusd_command() -> list[str]:
    """How children run `statusd`: the console script beside this interpreter if there is one."""
    script = Path(sys.executable).with_name("statusd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from statusd.cli import main; main()"]


def _verbs(app: typer.Typer) -> set[str]:
    names = set()
    for command in app.registered_commands:
        callback = command.callback
        names.add(command.name or (callback.__name__.replace("_", "-") if callback else ""))
    return names


def _readyz_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM during start-up: unwind through the finally blocks


def make_up(app: typer.Typer) -> Any:
    """`up` needs the assembled CLI to know which verbs (worker, simulate) exist yet."""

    def up(
        demo: Annotated[bool, typer.Option(help="Also run `statusd simulate` (a fleet).")] = False,
        host: Annotated[str | None, typer.Option(help="Bind address (STATUSD_HOST).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (STATUSD_PORT).")] = None,
        embedded_redis: Annotated[
            bool, typer.Option("--embedded-redis", hidden=True, help="Always start own Redis.")
        ] = False,
    ) -> None:
        """Everything on embedded defaults: SQLite, Redis, migrations, API + consumers, worker + beat.

        Ctrl-C stops all of it; nothing is left running.
        """
        from statusd import dev_secrets
        from statusd.logs import configure_logging
        from statusd.redis_runtime import DEFAULT_LOCAL_URL, EmbeddedRedis, redis_answers
        from statusd.supervisor import Supervisor

        previous_term = signal.signal(signal.SIGTERM, _interrupt)
        base = load_settings(dev=True, host=host, port=port)
        configure_logging(base)
        embedded: EmbeddedRedis | None = None
        try:
            secrets = dev_secrets.load_or_create(base.state_dir)
            redis_url = base.redis_url
            if not redis_url and not embedded_redis and redis_answers():
                redis_url = DEFAULT_LOCAL_URL
            if not redis_url:
                embedded = EmbeddedRedis(base.state_dir / "redis", own_session=True)
                with operator_errors():
                    redis_url = embedded.start()
                out.print(f"started an embedded Redis on {redis_url} (data in {embedded.data_dir})")
            with operator_errors():
                run_migrations(base.database_url)
            env = {
                **os.environ,
                "STATUSD_DEV": "true",
                "STATUSD_REDIS_URL": redis_url,
                "STATUSD_STATE_DIR": str(base.state_dir.resolve()),
                "STATUSD_HOST": base.host,
                "STATUSD_PORT": str(base.port),
                **secrets.values,
            }
            code = _supervise(app, Supervisor(env), base, secrets, demo)
        except KeyboardInterrupt:
            code = 0
        finally:
            if embedded is not None:
                embedded.stop()
            signal.signal(signal.SIGTERM, previous_term)
        raise typer.Exit(code)

    return up


def _supervise(
    app: typer.Typer, sup: Supervisor, base: Settings, secrets: DevSecrets, demo: bool
) -> int:
    verbs = _verbs(app)
    cmd = statusd_command()
    url = f"http://{base.host}:{base.port}"
    with sup:
        sup.start("api", [*cmd, "serve", "--host", base.host, "--port", str(base.port)])
        if "worker" in verbs:
            # Both listen on this host: the worker's /metrics takes the next port.
            metrics = {}
            if base.metrics_port:
                metrics = {"STATUSD_METRICS_PORT": str(base.metrics_port + 1)}
            sup.start("worker", [*cmd, "worker", "--beat"], env=metrics)
        else:
            err.print(
                "[yellow]warning:[/] `statusd worker` is not available in this build; skipped"
            )
        if sup.wait_for(lambda: _readyz_ok(f"{url}/readyz"), timeout=90):
            out.print(f"[bold green]statusd is up[/] at {url}  (Ctrl-C stops everything)")
            out.print(f"dev secrets: {secrets.path}")
            out.print(f"API token:   {secrets.api_token}", highlight=False)
            out.print(
                f'try: curl -H "Authorization: Bearer {secrets.api_token}" {url}/v1/workloads',
                highlight=False,
            )
            if demo and "simulate" in verbs:  # the fleet registers through the API: start it now
                sup.start("simulate", [*cmd, "simulate", "--api-url", url], oneshot=True)
            elif demo:
                err.print(
                    "[yellow]warning:[/] `statusd simulate` is not available in this build; skipped"
                )
        elif not sup.signalled and sup.died is None:
            err.print(f"[yellow]warning:[/] {url}/readyz is not answering 200 yet; still watching")
        code = sup.watch() if not sup.signalled and sup.died is None else (1 if sup.died else 0)
    if sup.died is not None:
        err.print(
            f"[bold red]error:[/] `{' '.join(sup.died.args[len(cmd) :])}` ({sup.died.name}) "
            f"exited with code {sup.died.popen.returncode}; stopped the rest"
        )
        return 1
    return code


def register_foundation(app: typer.Typer) -> None:
    """Add up, serve, migrate, workloads and lifecycle to the statusd CLI."""
    app.command("up")(make_up(app))
    app.command("serve")(serve)
    app.command("migrate")(migrate)
    app.add_typer(workloads_app, name="workloads")
    app.command("lifecycle")(lifecycle)
