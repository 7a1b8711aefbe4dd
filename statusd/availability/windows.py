"""Maintenance time per workload for the availability figures: the occurrences of the windows
(statusd.maintenance) covering it, within a report window or a rollup's span, as spans to cut
out (`Excluded.MAINTENANCE`). Each window's occurrences are walked once per report, then matched
to each workload by its matcher."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from statusd import maintenance
from statusd.availability.timeline import Span, merged
from statusd.lifecycle import Kind
from statusd.silences import Matcher


class MaintenanceSpans:
    """The windows' occurrences over one span, matched per workload."""

    def __init__(self, windows: list[maintenance.MaintenanceRecord], within: Span) -> None:
        since = datetime.fromtimestamp(within.start, UTC)
        until = datetime.fromtimestamp(within.end, UTC)
        self._spans: list[tuple[Matcher, list[Span]]] = [
            (w.match, [Span(s.timestamp(), e.timestamp()) for s, e in w.spans(since, until)])
            for w in windows
        ]

    def of(self, workload_id: str, kind: Kind | str, labels: Mapping[str, str]) -> list[Span]:
        """This workload's maintenance spans, merged and sorted."""
        return merged(
            span
            for match, spans in self._spans
            if match.matches(workload_id, kind, labels)
            for span in spans
        )


async def maintenance_spans(conn: AsyncConnection, within: Span) -> MaintenanceSpans:
    return MaintenanceSpans(await maintenance.all_in(conn), within)
