"""Microbenchmark: the answer of POST /v1/heartbeats:batch, plain dicts vs response models.

Decides whether the ingest hot path builds its batch answer from statusd.schema.batch_results
(if building pydantic models per item measurably slows it, the hand-built dicts stay). For a batch of ITEMS heartbeats (REFUSED of them refused), per request:
- `check`: the per-item checks the handler runs anyway (statusd.ingest.heartbeat_checks.check_batch_item:
  HMAC token, fields), for scale;
- `dicts`: the answer as the handler builds it today (a dict per item) + orjson.dumps;
- `models`: BatchItemAccepted/BatchItemRefused per item, a BatchResult, model_dump_json.
CPU time of this process (time.process_time), best of REPEAT: the machine is shared.
Run: .venv/bin/python bench/batch_results.py
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from statusd import tokens
from statusd.errors import BadInput
from statusd.ingest.heartbeat_checks import check_batch_item
from statusd.lifecycle import Kind
from statusd.schema.batch_results import BatchItemAccepted, BatchItemRefused, BatchResult

SECRET = b"bench-secret-" + b"x" * 32
ITEMS = 500
REFUSED = 10
NEXT_S = 10.0
NUMBER = 200
REPEAT = 5


def batch() -> list[dict[str, Any]]:
    items = []
    for i in range(ITEMS):
        wid = f"train-{i}.node-7"
        token = tokens.issue(SECRET, wid, Kind.TRAINING, 1)
        status = "READY" if i < REFUSED else "RUNNING"  # READY: not a training state, 422
        items.append({"token": token, "workload_id": wid, "status": status, "seq": i + 1})
    return items


def checked(items: list[dict[str, Any]]) -> list[BadInput | None]:
    out: list[BadInput | None] = []
    for item in items:
        try:
            check_batch_item(item, (SECRET,))
            out.append(None)
        except BadInput as exc:
            out.append(exc)
    return out


def with_dicts(verdicts: list[BadInput | None]) -> bytes:
    results: list[dict[str, object]] = [
        {"status": 202, "next_heartbeat_s": NEXT_S}
        if exc is None
        else {"status": exc.status, **exc.as_json()}
        for exc in verdicts
    ]
    accepted = sum(1 for exc in verdicts if exc is None)
    return orjson.dumps(
        {"accepted": accepted, "rejected": len(verdicts) - accepted, "results": results}
    )


def with_models(verdicts: list[BadInput | None]) -> bytes:
    results: list[BatchItemAccepted | BatchItemRefused] = [
        BatchItemAccepted(status=202, next_heartbeat_s=NEXT_S)
        if exc is None
        else BatchItemRefused(
            status=exc.status, error=exc.error, message=exc.message, field=exc.field
        )
        for exc in verdicts
    ]
    accepted = sum(1 for exc in verdicts if exc is None)
    answer = BatchResult(accepted=accepted, rejected=len(verdicts) - accepted, results=results)
    return answer.model_dump_json(exclude_none=True).encode()


def per_request_us(call: Callable[[], object]) -> float:
    runs = timeit.repeat(call, number=NUMBER, repeat=REPEAT, timer=time.process_time)
    return min(runs) / NUMBER * 1e6


def main() -> None:
    items = batch()
    verdicts = checked(items)
    assert orjson.loads(with_dicts(verdicts)) == orjson.loads(with_models(verdicts))
    check = per_request_us(lambda: checked(items))
    dicts = per_request_us(lambda: with_dicts(verdicts))
    models = per_request_us(lambda: with_models(verdicts))
    print(
        f"{ITEMS} items ({REFUSED} refused): check {check:7.1f} us | answer with dicts "
        f"{dicts:6.1f} us | with models {models:6.1f} us (+{models - dicts:.1f} us per request, "
        f"{(models - dicts) / (check + dicts):.0%} of check + answer)"
    )


if __name__ == "__main__":
    main()
