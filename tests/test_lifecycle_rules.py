"""The lifecycle table, judged without I/O: forward skips, siblings, never backward, finals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statusd.lifecycle import (
    FINAL_STATES,
    PHASES,
    Current,
    Kind,
    Source,
    State,
    Verdict,
    allowed_moves,
    judge,
    reportable_states,
)


def at(
    kind: Kind, state: State, last_seq: int | None = None, prior: State | None = None
) -> Current:
    return Current(kind, state, prior, last_seq)


@pytest.mark.parametrize(
    ("kind", "frm", "to"),
    [
        (Kind.TRAINING, State.PENDING, State.SUCCEEDED),  # a short training reports SUCCEEDED first
        (Kind.TRAINING, State.RUNNING, State.STOPPING),
        (Kind.NOTEBOOK, State.READY, State.IDLE),
        (Kind.NOTEBOOK, State.IDLE, State.READY),
        (Kind.DEPLOYMENT, State.READY, State.DEGRADED),
        (Kind.DEPLOYMENT, State.DEGRADED, State.READY),
        (Kind.DEPLOYMENT, State.PENDING, State.DEPLOYING),
    ],
)
def test_forward_and_sibling_moves_are_applied(kind: Kind, frm: State, to: State) -> None:
    assert judge(at(kind, frm), to, Source.PUSH, 1).verdict is Verdict.APPLY


@pytest.mark.parametrize(
    ("kind", "frm", "to"),
    [
        (Kind.TRAINING, State.RUNNING, State.STARTING),
        (Kind.NOTEBOOK, State.STOPPING, State.READY),
        (Kind.DEPLOYMENT, State.READY, State.DEPLOYING),
    ],
)
def test_backward_moves_are_refused_with_the_rule(kind: Kind, frm: State, to: State) -> None:
    j = judge(at(kind, frm), to, Source.PUSH, 1)
    assert j.verdict is Verdict.REFUSED and j.rule.startswith("backward")


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_nothing_leaves_a_final_state(final: State) -> None:
    for to in reportable_states(Kind.TRAINING) - {final}:
        assert judge(at(Kind.TRAINING, final), to, Source.API, None).verdict is Verdict.REFUSED


def test_state_of_another_kind_is_refused() -> None:
    j = judge(at(Kind.TRAINING, State.RUNNING), State.DEGRADED, Source.PUSH, 5)
    assert j.verdict is Verdict.REFUSED and "unknown-state" in j.rule


def test_stale_seq_never_changes_state() -> None:
    assert (
        judge(at(Kind.TRAINING, State.RUNNING, 10), State.SUCCEEDED, Source.PUSH, 10).verdict
        is Verdict.STALE_SEQ
    )
    assert (
        judge(at(Kind.TRAINING, State.RUNNING, 10), State.SUCCEEDED, Source.PUSH, 11).verdict
        is Verdict.APPLY
    )


def test_only_the_sweeper_assigns_unreachable_and_lost() -> None:
    running = at(Kind.TRAINING, State.RUNNING)
    assert judge(running, State.UNREACHABLE, Source.PUSH, 1).verdict is Verdict.REFUSED
    assert judge(running, State.UNREACHABLE, Source.SWEEPER, None).verdict is Verdict.APPLY
    assert judge(running, State.LOST, Source.SWEEPER, None).verdict is Verdict.REFUSED
    assert (
        judge(at(Kind.TRAINING, State.UNREACHABLE), State.LOST, Source.SWEEPER, None).verdict
        is Verdict.APPLY
    )


def test_recovery_is_judged_from_the_state_before_contact_was_lost() -> None:
    lost = at(Kind.TRAINING, State.LOST, prior=State.RUNNING)
    assert judge(lost, State.RUNNING, Source.PULL, 1).verdict is Verdict.APPLY
    assert judge(lost, State.SUCCEEDED, Source.PUSH, 1).verdict is Verdict.APPLY
    assert judge(lost, State.STARTING, Source.PUSH, 1).verdict is Verdict.REFUSED


def test_a_report_taken_before_the_verdict_does_not_clear_it() -> None:
    """The sweeper judged the silence after it: no sign of life since, and no change from where
    the verdict found the workload (a report held back by a database outage, applied late)."""
    verdict_at = datetime(2026, 12, 7, 21, 54, 38, tzinfo=UTC)
    unreachable = Current(Kind.DEPLOYMENT, State.UNREACHABLE, State.READY, 275, verdict_at)
    before, after = verdict_at - timedelta(seconds=17), verdict_at + timedelta(seconds=3)

    def verdict(to: State, heard_at: datetime | None) -> Verdict:
        return judge(unreachable, to, Source.PUSH, 276, heard_at).verdict

    assert verdict(State.READY, before) is Verdict.UNCHANGED  # the seq is still recorded
    assert verdict(State.READY, before.replace(tzinfo=None)) is Verdict.UNCHANGED  # SQLite's
    assert verdict(State.READY, after) is Verdict.APPLY  # heard since: recovery
    assert verdict(State.READY, None) is Verdict.APPLY  # not known when: as before
    # A change the workload made before the verdict is still history; a final state is news.
    assert verdict(State.DEGRADED, before) is Verdict.APPLY
    assert verdict(State.FAILED, before) is Verdict.APPLY


def test_explicit_table_matches_the_phases() -> None:
    table = allowed_moves(Kind.NOTEBOOK)
    assert table[State.READY] == {State.IDLE, State.STOPPING, State.STOPPED, State.FAILED}
    assert table[State.STOPPED] == frozenset()
    assert set(PHASES) == set(Kind)


_kinds = st.sampled_from(list(Kind))


@given(kind=_kinds, data=st.data())
def test_no_sequence_of_observations_moves_a_workload_backward(
    kind: Kind, data: st.DataObject
) -> None:
    """Property: whatever arrives, in any order, the phase rank never decreases (contact states aside)."""
    rank = {s: r for r, phase in enumerate(PHASES[kind]) for s in phase}
    current = at(kind, State.PENDING)
    best = 0
    steps = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(list(State)),
                st.sampled_from(list(Source)),
                st.one_of(st.none(), st.integers(0, 50)),
            ),
            max_size=30,
        )
    )
    for to, source, seq in steps:
        j = judge(current, to, source, seq)
        if j.verdict is not Verdict.APPLY:
            continue
        prior = (
            (current.prior_state or current.state)
            if to in (State.UNREACHABLE, State.LOST)
            else None
        )
        current = Current(kind, to, prior, seq if seq is not None else current.last_seq)
        effective = (
            current.prior_state
            if current.state in (State.UNREACHABLE, State.LOST)
            else current.state
        )
        assert effective is not None
        assert rank[effective] >= best
        best = rank[effective]
        if current.state in FINAL_STATES:
            assert all(
                judge(current, s, Source.API, None).verdict is not Verdict.APPLY for s in State
            )
