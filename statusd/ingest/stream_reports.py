"""A heartbeat stream entry as a report, and a batch collapsed to the reports worth applying.

Pure code (no I/O): steady heartbeats collapse to one report per workload; a batch that spans a
change still applies every change, in seq order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from statusd.errors import StatusdError
from statusd.lifecycle import State


class MalformedEntry(StatusdError):
    """A stream entry whose fields cannot be a heartbeat (written by something other than ingest)."""


@dataclass(frozen=True, slots=True)
class Report:
    entry_id: bytes
    workload_id: str
    generation: int
    status: State
    seq: int
    detail: str | None

    @property
    def taken_at(self) -> datetime:
        """When ingest took it: the entry id's milliseconds, Redis's clock at the XADD."""
        return datetime.fromtimestamp(int(self.entry_id.split(b"-", 1)[0]) / 1000, UTC)


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Report:
    """The heartbeat in a stream entry; MalformedEntry (naming the field) when it is not one."""
    name = "workload_id"
    try:
        workload_id = fields[b"workload_id"].decode()
        name = "generation"
        generation = int(fields[b"generation"])
        name = "status"
        status = State(fields[b"status"].decode())
        name = "seq"
        seq = int(fields[b"seq"])
        name = "detail"
        detail = fields.get(b"detail")
        return Report(
            entry_id,
            workload_id,
            generation,
            status,
            seq,
            detail.decode() if detail is not None else None,
        )
    except KeyError:
        raise MalformedEntry(f"malformed heartbeat entry: field {name!r} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEntry(f"malformed heartbeat entry: field {name!r}: {exc}") from None


def collapse(reports: Iterable[Report]) -> dict[str, list[Report]]:
    """Per workload, in seq order, the newest report of each run of equal (state, generation)."""
    by_workload: dict[str, dict[int, Report]] = {}
    for report in reports:  # stream order: for an equal seq the later entry wins
        by_workload.setdefault(report.workload_id, {})[report.seq] = report
    plan: dict[str, list[Report]] = {}
    for workload_id, by_seq in by_workload.items():
        runs: list[Report] = []
        for seq in sorted(by_seq):
            report = by_seq[seq]
            if (
                runs
                and runs[-1].status is report.status
                and runs[-1].generation == report.generation
            ):
                runs[-1] = report
            else:
                runs.append(report)
        plan[workload_id] = runs
    return plan
