"""statusd-client rides through a Redis outage: 503s while Redis is down, then the state is applied.

The test owns its Redis (AOF on, so the restarted server still has the stream and consumer group)
and a real `statusd serve` on it (SQLite and PostgreSQL). While Redis is down ingest answers 503 + Retry-After; the client
keeps the desired state, backs off, and delivers it once Redis is back: nothing is lost, and the
training loop's `set()` never noticed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import Heartbeater

from statusd.settings import Settings
from tests.support.client_stack import running_serve, wait_for
from tests.support.redis_proc import RedisProcess


def _not_stored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not stored (HTTP 503" in r.getMessage()]


def test_state_set_during_a_redis_outage_is_applied_after_it(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="statusd_client")
    redis = RedisProcess(tmp_path / "redis", appendonly=True)
    redis_url = redis.start()
    try:
        settings = make_settings(
            redis_url=redis_url,
            consumer_block_ms=100,
            ingest_timeout=1.0,
        )
        with running_serve(settings, tmp_path) as api:
            token = api.register("train-outage")
            with Heartbeater(api.url, "train-outage", token, interval=0.2) as hb:
                hb.set("RUNNING")
                api.wait_state("train-outage", "RUNNING")

                redis.kill()  # SIGKILL: the outage starts without warning
                hb.set("SUCCEEDED", "finished during the outage")
                wait_for(
                    lambda: _not_stored(caplog),
                    bool,
                    within=30,
                    what="the client seeing 503 from ingest",
                )
                assert api.state("train-outage") != "SUCCEEDED"

                redis.start()  # same port, same AOF
                api.wait_state("train-outage", "SUCCEEDED", within=60)
            assert hb.last_refusal is None
            history = api.history("train-outage")
            assert ("SUCCEEDED", "push", "finished during the outage") in history
            # One warning for the whole outage, one note when it ended: no log flood.
            assert len(_not_stored(caplog)) == 1
            assert any("stored again" in r.getMessage() for r in caplog.records)
    finally:
        redis.kill()
