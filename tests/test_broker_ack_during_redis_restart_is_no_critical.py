"""An ack that meets the broker Redis away (a task finished while the broker restarts) is no
critical error: the message stays in the broker's unacked hash, to be delivered once more after
the visibility timeout, and the worker logs one warning instead of kombu's critical
"Couldn't ack" with a traceback.

Real redis-server (stopped and started by the test, AOF on) and kombu with statusd's transport,
acking through the same call Celery's worker makes (Message.ack_log_error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from kombu import Connection, Exchange, Queue
from structlog.testing import capture_logs

from statusd.celery.broker_transport import transport_path
from tests.support.redis_proc import RedisProcess


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "broker", appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_an_ack_while_the_broker_is_away_is_a_warning_and_the_message_kept(
    store: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue("work", Exchange("work"), routing_key="work")
    with Connection(store.url, transport=transport_path()) as conn:
        with conn.Producer() as producer:
            producer.publish(
                {"task": 1}, exchange=queue.exchange, routing_key="work", declare=[queue]
            )
        message = queue(conn.default_channel).get(no_ack=False)
        assert message is not None and message.payload == {"task": 1}
        store.stop()  # a clean shutdown: the AOF keeps the unacked message
        with capture_logs() as events, caplog.at_level(logging.WARNING):
            message.ack_log_error(logging.getLogger("celery.worker"), conn.connection_errors)
        store.start()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL] == []
    assert [e["event"] for e in events] == ["broker.ack_lost"]
    with redis_sync.Redis.from_url(store.url) as client:
        assert client.hlen("unacked") == 1  # delivered again after the visibility timeout
