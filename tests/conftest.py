"""Shared fixtures: a real Redis per worker, a real database per test (SQLite and PostgreSQL)."""

from __future__ import annotations

import gc
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from statusd.settings import Settings
from tests.support.celery_procs import broker
from tests.support.databases import PostgresTemplate, SqliteTemplate, require_postgres
from tests.support.redis_proc import RedisProcess

# Each xdist worker imports every test module and statusd; at the default threshold the cyclic
# collector re-scans that heap hundreds of times while they load (a fifth of collection's CPU).
# The same threshold as `statusd` itself (statusd.cli), set before the test modules import.
gc.set_threshold(50_000, *gc.get_threshold()[1:])

TEST_SECRET = "test-secret-" + "x" * 32
TEST_API_TOKEN = "test-api-token-" + "y" * 32

# Longest tests first on every xdist worker, from tests/durations.json (see the module).
pytest_plugins = ("tests.support.schedule",)


def _worker(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server per xdist worker on a free port; tests isolate by key prefix."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    url = proc.start()
    yield url
    proc.stop()


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def redis(redis_server: str, redis_prefix: str) -> AsyncIterator[Redis]:
    # A reply lost to a test's own fault injection fails the test in seconds instead of waiting
    # for ever on a socket (no command a test sends through this client blocks for longer).
    client = Redis.from_url(redis_server, socket_timeout=10)
    yield client
    async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_template(request: pytest.FixtureRequest) -> Iterator[PostgresTemplate]:
    require_postgres()
    template = PostgresTemplate(_worker(request))
    yield template
    template.close()


@pytest.fixture
def pg_url(postgres_template: PostgresTemplate) -> Iterator[str]:
    """A freshly migrated PostgreSQL database, for a test that runs on PostgreSQL only."""
    url = postgres_template.new_database()
    yield url
    postgres_template.release(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: SqliteTemplate
) -> Iterator[str]:
    """A freshly migrated database for this test, on each backend."""
    if request.param == "sqlite":
        yield sqlite_template.new_database(tmp_path)
        return
    template: PostgresTemplate = request.getfixturevalue("postgres_template")
    url = template.new_database()
    yield url
    template.release(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: SqliteTemplate) -> str:
    """SQLite only, for tests that do not need both backends."""
    return sqlite_template.new_database(tmp_path)


@pytest.fixture
def deployment_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The Celery broker URL of a test marked with `DEPLOYMENTS` (tests/support/celery_procs.py)."""
    with broker(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def make_settings(
    database_url: str, redis_server: str, redis_prefix: str, tmp_path: Path
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": redis_server,
            "redis_prefix": redis_prefix,
            "secret": TEST_SECRET,
            "api_token": TEST_API_TOKEN,
            "state_dir": tmp_path / "state",
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a statusd subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = orjson.dumps(value).decode()  # STATUSD_ALERT_RECEIVERS: a JSON array
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        env[f"STATUSD_{name.upper()}"] = str(value.value if hasattr(value, "value") else value)
    return env


@pytest.fixture
def random_id() -> Callable[[str], str]:
    return lambda prefix="w": f"{prefix}-{secrets.token_hex(4)}"
