"""Each task reaches exactly one queue: fast sweeps never wait behind polls, syncs never run thrice."""

from __future__ import annotations

import pytest

from statusd.celery.application import create_celery
from statusd.settings import Settings


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("statusd.sweeper.sweep", "sweep"),
        ("statusd.sweeper.poll", "poll"),
        ("statusd.sync.drain", "sync"),
        ("statusd.sync.drain_due", "sync"),
    ],
)
def test_task_routes_to_its_own_queue_only(task: str, queue: str) -> None:
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0"))
    route = app.amqp.router.route({}, task, (), {})["queue"]
    assert route.name == queue
    bound = [
        q.name
        for q in app.conf.task_queues
        if (q.exchange.name, q.routing_key) == (route.exchange.name, route.routing_key)
    ]
    assert bound == [queue], f"a {task} message would be delivered to {bound}"
