"""What every CLI verb shares: the settings loader, the runtime opener, one-line operator errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from statusd import settings_loader
from statusd.errors import StatusdError
from statusd.logs import configure_logging
from statusd.settings import Settings

if TYPE_CHECKING:
    from statusd.runtime import Runtime

T = TypeVar("T")

out = Console(soft_wrap=True)  # paths and tokens stay on one line, copy-pasteable
err = Console(stderr=True, soft_wrap=True)
# One-shot verbs need few connections; long-running ones (consume) take the configured pool.
CLI_REDIS_CONNECTIONS = 4


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (no traceback: these are the operator's to fix) and exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def operator_errors() -> Iterator[None]:
    """StatusdError (ConfigError included) -> a clear message and exit code 2, not a traceback."""
    try:
        yield
    except StatusdError as exc:
        fail(str(exc))


def load_settings(*, logging: bool = False, **overrides: Any) -> Settings:
    """Settings from the environment with CLI flags (non-None) on top; a bad environment exits
    with the one-line error. `logging=True` also configures logging from them."""
    with operator_errors():
        settings = settings_loader.load_settings(**overrides)
    if logging:
        configure_logging(settings)
    return settings


async def with_runtime(
    settings: Settings,
    work: Callable[[Runtime], Awaitable[T]],
    *,
    redis_max_connections: int | None = CLI_REDIS_CONNECTIONS,
) -> T:
    """Open a Runtime (database + Redis) for one verb, run `work` on it, and close it.
    `redis_max_connections=None` keeps STATUSD_REDIS_MAX_CONNECTIONS."""
    # Imported here, not at the top: the wiring brings in every area (SQLAlchemy, the Celery app,
    # on-call), which the verbs that never open a Runtime (keys, sync, simulate) need not pay for.
    from statusd.wiring import open_runtime

    runtime = await open_runtime(settings, redis_max_connections=redis_max_connections)
    try:
        return await work(runtime)
    finally:
        await runtime.close()


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on uvloop (asyncio's loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main())
    return uvloop.run(main())
