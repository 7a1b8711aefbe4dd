"""`statusd up`: everything on embedded defaults, supervised, stopped together."""

from __future__ import annotations

import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from statusd import dev_secrets
from statusd.cli.common import err, load_settings, operator_errors, out
from statusd.cli.foundation import run_migrations
from statusd.dev_secrets import DevSecrets
from statusd.logs import configure_logging
from statusd.redis_runtime import DEFAULT_LOCAL_URL, EmbeddedRedis, redis_answers
from statusd.settings import Settings
from statusd.supervisor import Supervisor


def statusd_command() -> list[str]:
    """How children run `statusd`: the console script beside this interpreter if there is one."""
    script = Path(sys.executable).with_name("statusd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from statusd.cli import main; main()"]


def _readyz_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM during start-up: unwind through the finally blocks


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
        code = _supervise(Supervisor(env), base, secrets, demo)
    except KeyboardInterrupt:
        code = 0
    finally:
        if embedded is not None:
            embedded.stop()
        signal.signal(signal.SIGTERM, previous_term)
    raise typer.Exit(code)


def _supervise(sup: Supervisor, base: Settings, secrets: DevSecrets, demo: bool) -> int:
    cmd = statusd_command()
    url = f"http://{base.host}:{base.port}"
    with sup:
        sup.start("api", [*cmd, "serve", "--host", base.host, "--port", str(base.port)])
        # Both listen on this host: the worker's /metrics takes the next port.
        metrics = {}
        if base.metrics_port:
            metrics = {"STATUSD_METRICS_PORT": str(base.metrics_port + 1)}
        sup.start("worker", [*cmd, "worker", "--beat"], env=metrics)
        if sup.wait_for(lambda: _readyz_ok(f"{url}/readyz"), timeout=90):
            out.print(f"[bold green]statusd is up[/] at {url}  (Ctrl-C stops everything)")
            out.print(f"dev secrets: {secrets.path}")
            out.print(f"API token:   {secrets.api_token}", highlight=False)
            out.print(
                f'try: curl -H "Authorization: Bearer {secrets.api_token}" {url}/v1/workloads',
                highlight=False,
            )
            if demo:  # the fleet registers through the API: start it now
                sup.start("simulate", [*cmd, "simulate", "--api-url", url], oneshot=True)
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


def register(app: typer.Typer) -> None:
    """Add `up` to the statusd CLI."""
    app.command("up")(up)
