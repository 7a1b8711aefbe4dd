"""The simulator's view of statusd: its public HTTP API, exactly as a platform and containers use it.

- the platform registers the containers (`POST /v1/workloads:batch`, API token) with their
  status_url; one by one (`POST /v1/workloads`) when the batch route is absent;
- containers heartbeat (`POST /v1/heartbeats:batch`, each item with its own heartbeat token; the
  single `POST /v1/heartbeats` when the batch route is absent);
- the summary reads what statusd says (`GET /v1/workloads?label=...`, paginated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from statusd.errors import StatusdError
from statusd.lifecycle import Kind, State

BATCH_LIMIT = 500  # items per POST /v1/heartbeats:batch and /v1/workloads:batch (under the cap)
PAGE = 500  # GET /v1/workloads limit


class ControlError(StatusdError):
    """statusd answered something the simulator cannot work with (the message says what)."""


@dataclass(frozen=True, slots=True)
class Beat:
    workload_id: str
    token: str
    status: State
    seq: int


@dataclass(frozen=True, slots=True)
class NewWorkload:
    """One workload to register: the body of POST /v1/workloads (or an item of a batch)."""

    workload_id: str
    kind: Kind
    status_url: str | None
    labels: dict[str, str]

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.workload_id, "kind": self.kind.value}
        out["labels"] = self.labels
        if self.status_url is not None:
            out["status_url"] = self.status_url
        return out


def token_from_dev_secrets(state_dir: Path) -> str | None:
    """STATUSD_API_TOKEN from `<state_dir>/dev-secrets.env` (written by `statusd up`)."""
    path = state_dir / "dev-secrets.env"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name.strip().removeprefix("export ").strip() == "STATUSD_API_TOKEN":
            return value.strip().strip("'\"") or None
    return None


class StatusdAPI:
    """A small async client of the statusd API (one aiohttp session, bounded connections)."""

    def __init__(self, api_url: str, api_token: str, *, concurrency: int = 32) -> None:
        self.api_url = api_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_token}"}
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._batch = True  # switched off if the server has no batch route
        # The server's pace: `next_heartbeat_s` of the newest accepted heartbeat (None: not told).
        self.next_heartbeat_s: float | None = None

    async def __aenter__(self) -> StatusdAPI:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=30),
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with StatusdAPI(...)`")
        return self._session

    async def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with (
            self._sem,
            self.session.request(
                method,
                self.api_url + path,
                params=params,
                data=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json", **(headers or self._auth)},
            ) as resp,
        ):
            raw = await resp.read()
            try:
                return resp.status, orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                return resp.status, raw[:200].decode(errors="replace")

    async def register(
        self, workload_id: str, kind: Kind, status_url: str | None, labels: dict[str, str]
    ) -> str:
        """Register one workload; returns its heartbeat token."""
        body = NewWorkload(workload_id, kind, status_url, labels).body()
        status, doc = await self._json("POST", "/v1/workloads", body)
        if status != 201 or not isinstance(doc, dict) or "heartbeat_token" not in doc:
            raise ControlError(f"POST /v1/workloads {workload_id}: HTTP {status}: {doc}")
        return str(doc["heartbeat_token"])

    async def register_batch(self, regs: Sequence[NewWorkload]) -> dict[str, str] | None:
        """Register up to BATCH_LIMIT workloads in one request; returns id -> heartbeat token, or
        None when the server has no batch route. Any item not registered raises, as `register`."""
        items = [r.body() for r in regs]
        status, doc = await self._json("POST", "/v1/workloads:batch", {"items": items})
        if status in (404, 405):
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ControlError(f"POST /v1/workloads:batch: HTTP {status}: {doc}")
        tokens = {}
        for reg, result in zip(regs, doc["results"], strict=True):
            if result.get("status") != 201:
                raise ControlError(f"POST /v1/workloads:batch {reg.workload_id}: {result}")
            tokens[reg.workload_id] = str(result["workload"]["heartbeat_token"])
        return tokens

    async def heartbeat(self, beats: Sequence[Beat]) -> int:
        """Send heartbeats; returns how many were accepted (202). Never raises for one bad item."""
        if not beats:
            return 0
        if self._batch:
            accepted = await self._heartbeat_batches(beats)
            if accepted is not None:
                return accepted
            self._batch = False
        results = await asyncio.gather(*(self._heartbeat_one(b) for b in beats))
        return sum(results)

    async def _heartbeat_batches(self, beats: Sequence[Beat]) -> int | None:
        accepted = 0
        for start in range(0, len(beats), BATCH_LIMIT):
            items = [
                {
                    "workload_id": b.workload_id,
                    "status": b.status.value,
                    "seq": b.seq,
                    "token": b.token,
                }
                for b in beats[start : start + BATCH_LIMIT]
            ]
            try:
                status, doc = await self._json("POST", "/v1/heartbeats:batch", {"items": items})
            except aiohttp.ClientError:
                continue  # a lost batch is a missed heartbeat round, as for a real agent
            if status in (404, 405):
                return None
            if isinstance(doc, dict):
                accepted += int(doc.get("accepted", 0))
                self._note_pace(doc.get("results") or [])
        return accepted

    def _note_pace(self, results: Sequence[Any]) -> None:
        for result in results:
            if isinstance(result, dict) and "next_heartbeat_s" in result:
                self.next_heartbeat_s = float(result["next_heartbeat_s"])

    async def _heartbeat_one(self, b: Beat) -> int:
        try:
            status, doc = await self._json(
                "POST",
                "/v1/heartbeats",
                {"workload_id": b.workload_id, "status": b.status.value, "seq": b.seq},
                headers={"Authorization": f"Bearer {b.token}"},
            )
        except aiohttp.ClientError:
            return 0
        if status == 202:
            self._note_pace([doc])
        return 1 if status == 202 else 0

    async def states(self, label: str) -> dict[str, State]:
        """What statusd says about every workload carrying `label` (k:v), paginated."""
        out: dict[str, State] = {}
        cursor: str | None = None
        while True:
            params = {"label": label, "limit": str(PAGE)}
            if cursor:
                params["cursor"] = cursor
            status, doc = await self._json("GET", "/v1/workloads", params=params)
            if status != 200 or not isinstance(doc, dict):
                raise ControlError(f"GET /v1/workloads: HTTP {status}: {doc}")
            for item in doc.get("items", []):
                out[str(item["id"])] = State(item["state"])
            cursor = doc.get("next_cursor")
            if not cursor:
                return out

    async def workload(self, workload_id: str) -> dict[str, Any]:
        status, doc = await self._json("GET", f"/v1/workloads/{workload_id}")
        if status != 200 or not isinstance(doc, dict):
            raise ControlError(f"GET /v1/workloads/{workload_id}: HTTP {status}: {doc}")
        return doc

    async def transitions(self, workload_id: str) -> list[dict[str, Any]]:
        status, doc = await self._json("GET", f"/v1/workloads/{workload_id}/transitions")
        if status != 200:
            raise ControlError(f"GET /v1/workloads/{workload_id}/transitions: HTTP {status}: {doc}")
        items = doc.get("items", doc) if isinstance(doc, dict) else doc
        return list(items)
