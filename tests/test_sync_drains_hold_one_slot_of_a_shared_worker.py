"""A worker serving the sweeper's queues too lets outbox drains hold one prefork slot at a time:
a second drain finds the slot taken and holds nothing; the slot comes back when its holder ends,
even when the holder is SIGKILLed (the kernel drops its lock). Real forked processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from statusd.celery import sync_slots


@pytest.fixture
def one_slot() -> Iterator[None]:
    sync_slots.limit_drains(1)
    try:
        yield
    finally:
        sync_slots.unlimited()


def hold_until_told(ready: Connection, release: Connection) -> None:
    with sync_slots.drain_slot() as free:
        ready.send(free)
        release.recv()


def free_here() -> bool:
    with sync_slots.drain_slot() as free:
        return free


def test_a_second_drain_gets_no_slot_until_the_first_ends(one_slot: None) -> None:
    ctx = multiprocessing.get_context("fork")  # prefork children inherit the limit the same way
    ready_out, ready_in = ctx.Pipe(duplex=False)
    release_out, release_in = ctx.Pipe(duplex=False)
    holder = ctx.Process(target=hold_until_told, args=(ready_in, release_out))
    holder.start()
    try:
        assert ready_out.recv() is True  # the holder got the one slot
        assert free_here() is False
        release_in.send("done")
        holder.join(30)
        assert free_here() is True
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join(30)


def test_a_killed_holder_gives_its_slot_back(one_slot: None) -> None:
    ctx = multiprocessing.get_context("fork")
    ready_out, ready_in = ctx.Pipe(duplex=False)
    release_out, release_in = ctx.Pipe(duplex=False)  # never written: only the kill ends it
    holder = ctx.Process(target=hold_until_told, args=(ready_in, release_out))
    holder.start()
    assert ready_out.recv() is True
    assert free_here() is False
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert free_here() is True
    release_in.close()


def test_without_a_limit_every_drain_runs() -> None:
    sync_slots.unlimited()
    with sync_slots.drain_slot() as first, sync_slots.drain_slot() as second:
        assert first and second
