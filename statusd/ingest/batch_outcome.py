"""What applying a batch came to: immutable values handed from the apply step to settling.

Each apply round starts from the previous round's outcome and returns a new one; nothing is
changed in place, so settling reads exactly what the last round decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from statusd.ingest.batch_plan import Batch, WorkloadPlan


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one workload's plan got."""

    done_upto: int = -1  # index of the last report handled for good
    handled_seq: int | None = None  # newest report handled (its entries and older can be acked)
    # Newest report that counts as this registration's (recorded as the workload's last_seq),
    # with its generation: an older generation's or a deregistered workload's report is acked
    # but is no sign of life.
    counted_seq: int | None = None
    counted_generation: int | None = None
    attempts: int = 0  # failed (non-transient) attempts, earlier deliveries included
    error: str | None = None  # gave up: its unhandled entries go to the dead letters

    def finished(self, plan: WorkloadPlan) -> bool:
        return self.error is not None or self.done_upto == len(plan.reports) - 1


@dataclass(frozen=True, slots=True)
class Round:
    """One apply round over the unfinished workloads of a batch."""

    progress: Mapping[str, Progress]
    transient: bool = False  # the database or Redis was unavailable: retry the same work
    retry: bool = False  # a workload failed, not yet max_deliveries times
    fenced: bool = False  # the lease ran out: commit nothing more

    @property
    def again(self) -> bool:
        return (self.transient or self.retry) and not self.fenced


NOT_STARTED = Progress()  # shared: most workloads of a batch start here (no earlier delivery)


def first_round(batch: Batch) -> Round:
    """Nothing applied yet; earlier deliveries count as attempts."""
    return Round(
        {
            wid: Progress(attempts=plan.earlier_attempts) if plan.earlier_attempts else NOT_STARTED
            for wid, plan in batch.workloads.items()
        }
    )
