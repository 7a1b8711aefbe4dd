"""Batch planning: parse a batch of stream entries and plan each workload's reports.

Reports are collapsed per workload (statusd.ingest.stream_reports.collapse); every entry id stays with
its workload so that settling can ack, or bury, all of them once the plan is carried out.

A batch flows through the consumer as immutable values: this plan, then what applying it came to
(statusd.ingest.batch_outcome), then settling that outcome (statusd.ingest.settle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from statusd.ingest.stream_reports import MalformedEntry, Report, collapse, parse_entry

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry as redis-py returns it: id, fields


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """One workload's share of a batch: its planned reports and all its entry ids (with seqs)."""

    workload_id: str
    reports: list[Report]
    entries: list[tuple[bytes, int]]  # (entry id, seq) of every entry of this workload
    # Deliveries before this one that ended without an ack count as failed attempts (a consumer
    # that kept dying on this entry): a crash loop ends in the dead letters.
    earlier_attempts: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    raw: Mapping[bytes, dict[bytes, bytes]]  # entry id -> fields
    deliveries: Mapping[bytes, int]  # entry id -> delivery count (1 for fresh reads)
    workloads: Mapping[str, WorkloadPlan]
    malformed: Mapping[bytes, str]  # entry id -> why it is no heartbeat


def plan_batch(
    entries: list[Entry],
    deliveries: dict[bytes, int],
    collapsed: Counter,
) -> Batch | None:
    """Parse a batch and plan each workload's reports; `collapsed` counts the superseded ones."""
    if not entries:
        return None
    malformed: dict[bytes, str] = {}
    reports: list[Report] = []
    for entry_id, fields in entries:
        try:
            reports.append(parse_entry(entry_id, fields))
        except MalformedEntry as exc:
            malformed[entry_id] = str(exc)
    entries_of: dict[str, list[tuple[bytes, int]]] = {}
    for report in reports:
        entries_of.setdefault(report.workload_id, []).append((report.entry_id, report.seq))
    plan = collapse(reports)
    workloads: dict[str, WorkloadPlan] = {}
    for wid, planned in plan.items():
        mine = entries_of[wid]
        earlier = max(deliveries.get(eid, 1) for eid, _ in mine) - 1
        workloads[wid] = WorkloadPlan(wid, planned, mine, earlier)
    collapsed.inc(len(reports) - sum(len(p) for p in plan.values()))
    return Batch(dict(entries), deliveries, workloads, malformed)
