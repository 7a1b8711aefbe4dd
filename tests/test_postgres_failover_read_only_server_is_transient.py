"""What a failover looks like from one connection, judged as transient, against real PostgreSQL:
a write refused by a read-only server (SQLSTATE 25006, what a standby or a demoted primary
answers) is StorageUnavailable and the pool drops its connections, so the next transaction
connects afresh; no listed host in the wanted role is StorageUnavailable too. And the
multi-host URLs operators write are read the way the driver needs them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from statusd.db import create_engine, display_url, normalize_url, transaction
from statusd.errors import StorageUnavailable, is_standby_refusal, is_transient
from tests.support.databases import PG_HOST, PG_PORT, PG_USER


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    template = request.getfixturevalue("postgres_template")
    url: str = template.new_database()
    yield url
    template.release(url)


@pytest.mark.postgres
async def test_a_write_refused_as_read_only_is_transient_and_drops_the_pool(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=1)
    try:
        async with transaction(engine) as conn:
            before = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            # This session now refuses writes, as every session of a standby does.
            await conn.execute(text("SET SESSION default_transaction_read_only = on"))
        with pytest.raises(StorageUnavailable) as caught:
            async with transaction(engine) as conn:
                await conn.execute(text("CREATE TABLE refused (id int)"))
        assert is_standby_refusal(caught.value) and is_transient(caught.value)
        async with transaction(engine) as conn:  # a new session: it writes
            after = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.execute(text("CREATE TABLE accepted (id int)"))
        assert after != before, "the connection that refused writes went back into the pool"
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_no_host_in_the_wanted_role_is_storage_unavailable(postgres_url: str) -> None:
    database = normalize_url(postgres_url).database
    # Both hosts are the (writable) test server: asking for a standby finds none, as asking for
    # a writable host finds none in the moment between a primary's death and a promotion.
    hosts = f"{PG_HOST}:{PG_PORT},{PG_HOST}:{PG_PORT}"
    engine = create_engine(
        f"postgresql://{PG_USER}@{hosts}/{database}?target_session_attrs=standby"
    )
    try:
        with pytest.raises(StorageUnavailable) as caught:
            async with transaction(engine) as conn:
                await conn.execute(text("SELECT 1"))
        assert is_transient(caught.value.__cause__)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_multi_host_url_finds_the_writable_host(postgres_url: str) -> None:
    database = normalize_url(postgres_url).database
    from tests.support.processes import free_port

    nobody = f"{PG_HOST}:{free_port()}"  # listed first, refuses connections: the next is tried
    engine = create_engine(f"postgresql://{PG_USER}@{nobody},{PG_HOST}:{PG_PORT}/{database}")
    try:
        async with transaction(engine) as conn:
            assert (await conn.execute(text("SHOW transaction_read_only"))).scalar_one() == "off"
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("typed", "hosts", "attrs"),
    [
        ("postgresql://u@a:5433,b:5434/db", ("a:5433", "b:5434"), "read-write"),
        ("postgres://u@a,b:6432/db", ("a:5432", "b:6432"), "read-write"),
        ("postgresql://u@a:1,b:2/db?target_session_attrs=primary", ("a:1", "b:2"), "primary"),
        ("postgresql+asyncpg://u@/db?host=a:1&host=b:2", ("a:1", "b:2"), "read-write"),
    ],
)
def test_multi_host_urls_as_operators_write_them(
    typed: str, hosts: tuple[str, ...], attrs: str
) -> None:
    url = normalize_url(typed)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.database, url.username, url.host) == ("db", "u", None)
    assert url.query["host"] == hosts
    assert url.query["target_session_attrs"] == attrs


def test_a_multi_host_password_is_decoded_and_never_shown() -> None:
    url = normalize_url("postgresql://statusd:p%40ss@a:1,b:2/db")
    assert url.password == "p@ss"
    assert "p@ss" not in display_url("postgresql://statusd:p%40ss@a:1,b:2/db")


def test_a_single_host_url_is_left_as_it_was() -> None:
    url = normalize_url("postgresql://u@a:5433/db")
    assert (url.host, url.port, dict(url.query)) == ("a", 5433, {})
