"""The audit trail: every mutating call is exactly one row (refused ones too), with the right
actor; reads are not rows; sign-in attempts are; no route changes or deletes a row."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.access_keys import as_key, mint
from tests.support.api_client import api_client

ANONYMOUS = {"Authorization": ""}


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        yield c


async def audit_rows(client: TestClient[Any, Any], query: str = "") -> list[dict[str, Any]]:
    """Every row (all pages) as the bootstrap admin sees it."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        sep = "&" if query else ""
        url = f"/v1/audit?{query}{sep}limit=7" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


class Mix:
    """Issues mixed calls and writes down the audit row each mutating one must leave."""

    OPS = (
        "register", "register_bad", "transition", "delete", "unknown", "silence", "unsilence",
        "create_key", "revoke_key", "read",
    )  # fmt: skip

    def __init__(self, client: TestClient[Any, Any], reader: dict[str, Any]) -> None:
        self.client = client
        self.reader = reader
        self.expected: list[tuple[str, str, str | None, int]] = []  # actor, action, target, status
        self.workloads: list[str] = []
        self.silences: list[str] = []
        self.keys: list[str] = []
        self.until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    async def call(
        self,
        key: dict[str, Any],
        method: str,
        path: str,
        body: Any = None,
        *,
        action: str | None = None,
        target: str | None = None,
    ) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body, headers=as_key(key))
        answer = await resp.json()
        if action is not None:
            if resp.status == 201 and target is None:
                target = resp.headers["Location"].rsplit("/", 1)[-1]
            self.expected.append((key["id"], action, target, resp.status))
        return resp.status, answer

    def some_workload(self, rng: random.Random) -> str:
        return rng.choice(self.workloads) if self.workloads else "none-yet"

    async def register(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        wid = f"w-{n}"
        target = None if key is self.reader else wid  # refused before the body is read
        status, _ = await self.call(
            key, "POST", "/v1/workloads", {"id": wid, "kind": "notebook"},
            action="workload.register", target=target,
        )  # fmt: skip
        if status == 201:
            self.workloads.append(wid)
        return status

    async def register_bad(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        status, _ = await self.call(
            key, "POST", "/v1/workloads", {"id": f"w-{n}", "kind": "nope"},
            action="workload.register",
        )  # fmt: skip
        assert status == (403 if key is self.reader else 422)
        return status

    async def transition(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        wid = self.some_workload(rng)
        status, _ = await self.call(
            key, "POST", f"/v1/workloads/{wid}/transitions", {"to": "READY"},
            action="workload.transition", target=wid,
        )  # fmt: skip
        return status

    async def delete(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        wid = self.some_workload(rng)
        status, _ = await self.call(
            key, "DELETE", f"/v1/workloads/{wid}", action="workload.deregister", target=wid
        )
        if status == 200:
            self.workloads.remove(wid)
        return status

    async def unknown(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        wid = f"ghost-{n}"
        status, _ = await self.call(
            key, "DELETE", f"/v1/workloads/{wid}", action="workload.deregister", target=wid
        )
        assert status == (403 if key is self.reader else 404)
        return status

    async def silence(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        body = {"match": {"id": self.some_workload(rng)}, "until": self.until, "reason": f"c{n}"}
        status, answer = await self.call(key, "POST", "/v1/silences", body, action="silence.create")
        if status == 201:
            self.silences.append(answer["id"])
        return status

    async def unsilence(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        sid = self.silences.pop() if self.silences and key is not self.reader else f"no-{n}"
        status, _ = await self.call(
            key, "DELETE", f"/v1/silences/{sid}", action="silence.delete", target=sid
        )
        return status

    async def create_key(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        status, answer = await self.call(
            key, "POST", "/v1/keys", {"name": f"k{n}", "scope": "read"}, action="key.create"
        )
        if status == 201:
            self.keys.append(answer["id"])
        return status

    async def revoke_key(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        kid = self.keys[-1] if self.keys else "0000"
        status, _ = await self.call(
            key, "DELETE", f"/v1/keys/{kid}", action="key.revoke", target=kid
        )
        return status

    async def read(self, n: int, key: dict[str, Any], rng: random.Random) -> int:
        """Reads are never audited, allowed (200) or not (403)."""
        for path in ("/v1/workloads", "/v1/silences", "/v1/keys", "/v1/audit"):
            await self.call(key, "GET", path)
        return 200


async def test_100_mixed_calls_by_three_keys_are_exactly_the_matching_rows(
    client: TestClient[Any, Any],
) -> None:
    admin = await mint(client, "ops-admin", "admin")
    writer = await mint(client, "scheduler", "write")
    reader = await mint(client, "dashboard", "read")
    before = await audit_rows(client)
    assert [r["action"] for r in before] == ["key.create"] * 3  # the mints above
    assert {r["actor_id"] for r in before} == {"bootstrap"}

    rng = random.Random(26)
    mix = Mix(client, reader)
    statuses: dict[str, list[int]] = {"admin": [], "write": [], "read": []}
    for n in range(100):
        key = (admin, writer, reader)[n % 3]
        op = rng.choice(Mix.OPS)
        status = await getattr(mix, op)(n, key, rng)
        if op != "read":
            statuses[("admin", "write", "read")[n % 3]].append(status)
    assert set(statuses["read"]) == {403}  # every change the read key tried was refused
    assert 201 in statuses["write"] and 403 in statuses["write"]  # it may not make keys
    assert 201 in statuses["admin"] and 404 in statuses["admin"]
    assert len(mix.expected) > 60

    # Sign-in attempts: two failures, then the read key signs in and out.
    for wrong in ("nope", TEST_API_TOKEN + "x"):
        resp = await client.post(
            "/login", data={"token": wrong}, headers=ANONYMOUS, allow_redirects=False
        )
        assert resp.status == 401
    resp = await client.post(
        "/login", data={"token": reader["key"]}, headers=ANONYMOUS, allow_redirects=False
    )
    assert resp.status == 303
    cookie = resp.cookies["statusd_session"].value
    client.session.cookie_jar.clear()
    headers = {**ANONYMOUS, "Cookie": f"statusd_session={cookie}"}
    assert (await client.get("/v1/reports/summary", headers=headers)).status == 200
    out = await client.post("/logout", headers=headers, allow_redirects=False)
    assert out.status == 303

    rows = (await audit_rows(client))[len(before) :]
    got = [(r["actor_id"], r["action"], r["target"], r["outcome"]) for r in rows]
    logins = [
        ("anonymous", "login", None, 401),
        ("anonymous", "login", None, 401),
        (reader["id"], "login", None, 303),
        (reader["id"], "logout", None, 303),
    ]
    assert got == mix.expected + logins
    names = {admin["id"]: "ops-admin", writer["id"]: "scheduler", reader["id"]: "dashboard"}
    for row in rows:
        assert row["actor_name"] == names.get(row["actor_id"], "anonymous")
        assert row["client_address"] == "127.0.0.1"
        assert datetime.fromisoformat(row["at"]) <= datetime.now(UTC)

    # No route changes or deletes a row, whoever asks.
    everything = await audit_rows(client)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/v1/audit", f"/v1/audit/{rows[0]['id']}"):
            resp = await client.request(method, path, json={"outcome": 200})
            assert resp.status in (404, 405), (method, path)
    assert await audit_rows(client) == everything


async def test_filters_and_paging(client: TestClient[Any, Any]) -> None:
    writer = await mint(client, "scheduler", "write")
    for n in range(5):
        resp = await client.post(
            "/v1/workloads", json={"id": f"f-{n}", "kind": "training"}, headers=as_key(writer)
        )
        assert resp.status == 201
    await client.delete("/v1/workloads/f-1", headers=as_key(writer))
    by_name = await audit_rows(client, "actor=scheduler")
    by_id = await audit_rows(client, f"actor={writer['id']}")
    assert by_name == by_id and len(by_name) == 6
    assert [r["target"] for r in await audit_rows(client, "action=workload.deregister")] == ["f-1"]
    assert len(await audit_rows(client, "target=f-1")) == 2
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await audit_rows(client, f"since={quote(later.isoformat())}") == []
    for bad in ("since=yesterday", "cursor=zzz", "limit=0", "colour=red", "actor=%00"):
        resp = await client.get(f"/v1/audit?{bad}")
        assert resp.status in (400, 422), bad
        assert (await resp.json())["field"] == bad.split("=")[0]


async def test_the_client_address_honours_trusted_proxies(
    make_settings: Callable[..., Settings],
) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.9, 127.0.0.1"}
    for trusted, expected in (([], "127.0.0.1"), (["127.0.0.0/8"], "198.51.100.9")):
        async with api_client(make_settings(trusted_proxies=trusted)) as client:
            await client.post(
                "/v1/workloads", json={"id": "p-1", "kind": "notebook"}, headers=forwarded
            )
            row = (await audit_rows(client, "target=p-1"))[-1]
            assert row["client_address"] == expected, trusted


async def test_a_refused_call_with_a_control_character_in_its_path_is_still_a_row(
    client: TestClient[Any, Any],
) -> None:
    vision = await mint(client, "vision", "write", {"team": "vision"})
    for headers in ({}, as_key(vision)):
        resp = await client.delete("/v1/workloads/a%00b", headers=headers)
        assert 400 <= resp.status < 500, await resp.text()
    rows = await audit_rows(client, "action=workload.deregister")
    assert [(r["target"], r["outcome"]) for r in rows] == [("a\ufffdb", resp.status)] * 2
