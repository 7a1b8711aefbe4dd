"""Server-Sent Events, decoded line by line (the WHATWG rules statusd's `/v1/events` needs), and
the resume point of a watch: the last event delivered, so a reconnect neither skips nor repeats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from statusd_client.api.models import Transition

RECONNECT_CAP_S = 10.0


@dataclass(frozen=True)
class ServerEvent:
    id: str | None
    event: str
    data: str


@dataclass
class EventDecoder:
    """Feed it lines (without their line ending); it returns an event at each blank line."""

    retry_ms: int | None = None  # the server's `retry:` advice, when it gave one
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            if not self._data:
                self._event, self._id = "", None
                return None
            event = ServerEvent(self._id, self._event or "message", "\n".join(self._data))
            self._data, self._event, self._id = [], "", None
            return event
        if line.startswith(":"):
            return None  # a comment: statusd's keep-alive `: ping`
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def reset(self) -> None:
        """A new connection: a half-received event of the old one is dropped (it is re-sent)."""
        self._data, self._event, self._id = [], "", None


@dataclass
class WatchPosition:
    """Where a watch stands: every transition up to `last_id` has been delivered, none after.

    Reconnects send `Last-Event-ID: last_id`; statusd resumes strictly after it. An event at or
    below it (never expected, but cheap to rule out) is dropped, so nothing is delivered twice."""

    last_id: int
    failures: int = 0

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last_id)}

    def accept(self, event: ServerEvent) -> Transition | None:
        if event.event != "transition" or event.id is None:
            return None
        event_id = int(event.id)
        if event_id <= self.last_id:
            return None
        doc: Any = json.loads(event.data)
        self.last_id = event_id
        return Transition.from_json(doc)

    def connected(self) -> None:
        self.failures = 0

    def reconnect_delay(self, retry_ms: int | None, retry_after: float | None) -> float:
        """How long to wait before the next connection attempt: the server's advice (Retry-After
        of a 503, else its `retry:`), doubled while attempts keep failing, at most 10 s."""
        self.failures += 1
        if retry_after is not None:
            return retry_after
        base = (retry_ms if retry_ms is not None else 1000) / 1000
        return min(RECONNECT_CAP_S, base * 2.0 ** min(self.failures - 1, 4))
