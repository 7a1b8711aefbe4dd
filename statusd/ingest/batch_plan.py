"""Batch planning: parse a batch of stream entries and plan each workload's reports.

Reports are collapsed per workload (statusd.ingest.reports.collapse); every entry id stays with
its workload so that settling can ack, or bury, all of them once the plan is carried out."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter

from statusd.ingest.reports import MalformedEntry, Report, collapse, parse_entry


@dataclass
class WorkloadPlan:
    """One workload's share of a batch: its planned reports and all its entry ids (with seqs)."""

    workload_id: str
    reports: list[Report]
    entries: list[tuple[bytes, int]]  # (entry id, seq) of every entry of this workload
    attempts: int = 0  # failed (non-transient) attempts, earlier deliveries included
    done_upto: int = -1  # index of the last report handled for good
    error: str | None = None  # gave up: its unhandled entries go to the dead letters
    retry: bool = False  # failed, not yet max_deliveries times
    transient: bool = False
    fenced: bool = False  # the lease ran out before its next apply
    handled_seq: int | None = None  # newest report handled (its entries and older can be acked)
    # Newest seq that counts as this registration's (recorded as the workload's last_seq): an
    # older generation's or a deregistered workload's report is acked but is no sign of life.
    counted_seq: int | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or self.done_upto == len(self.reports) - 1


@dataclass
class Batch:
    raw: dict[bytes, dict[bytes, bytes]]  # entry id -> fields
    deliveries: dict[bytes, int]  # entry id -> delivery count (1 for fresh reads)
    workloads: dict[str, WorkloadPlan] = field(default_factory=dict)
    malformed: dict[bytes, str] = field(default_factory=dict)


def plan_batch(
    entries: list[tuple[bytes, dict[bytes, bytes]]],
    deliveries: dict[bytes, int],
    collapsed: Counter,
) -> Batch | None:
    """Parse a batch and plan each workload's reports; `collapsed` counts the superseded ones."""
    if not entries:
        return None
    batch = Batch(dict(entries), deliveries)
    reports: list[Report] = []
    for entry_id, fields in entries:
        try:
            reports.append(parse_entry(entry_id, fields))
        except MalformedEntry as exc:
            batch.malformed[entry_id] = str(exc)
    entries_of: dict[str, list[tuple[bytes, int]]] = {}
    for report in reports:
        entries_of.setdefault(report.workload_id, []).append((report.entry_id, report.seq))
    plan = collapse(reports)
    for wid, planned in plan.items():
        mine = entries_of[wid]
        # Deliveries before this one that ended without an ack count as failed attempts
        # (a consumer that kept dying on this entry): a crash loop ends in the dead letters.
        earlier = max(deliveries.get(eid, 1) for eid, _ in mine) - 1
        batch.workloads[wid] = WorkloadPlan(wid, planned, mine, attempts=earlier)
    collapsed.inc(len(reports) - sum(len(p) for p in plan.values()))
    return batch
