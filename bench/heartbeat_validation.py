"""Microbenchmark: checking one heartbeat dict, the ingest hand-written checker vs pydantic.

Decides whether the ingest hot path keeps its hand-written checker. Three numbers:
- `checker`: statusd.ingest.heartbeat_checks.check_heartbeat (shape, types, seq bounds, detail
  bytes, workload-id pattern, token's workload, status of the token's kind -> Heartbeat);
- `model only`: statusd.schema.bodies.Heartbeat.model_validate (shape and types only);
- `model path`: what ingest would run with pydantic: model_validate plus the same token,
  kind and detail-bytes checks and the same Heartbeat record out.
CPU time of this process (time.process_time), best of REPEAT: the machine is shared.
Run: .venv/bin/python bench/heartbeat_validation.py
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from pydantic import ValidationError

from statusd.errors import BadInput
from statusd.ingest import heartbeat_checks
from statusd.lifecycle import Kind, reportable_states
from statusd.schema import bodies
from statusd.schema.rules import MAX_DETAIL_BYTES
from statusd.tokens import TokenClaims

BODY = {"workload_id": "train-42.node-7", "status": "RUNNING", "seq": 1732912345678}
WITH_DETAIL = {**BODY, "detail": "epoch 3/10, loss 0.231"}
CLAIMS = TokenClaims("train-42.node-7", Kind.TRAINING, 1)
REPORTABLE = {kind: frozenset(reportable_states(kind)) for kind in Kind}
NUMBER = 200_000
REPEAT = 5


def model_path(obj: object, claims: TokenClaims) -> heartbeat_checks.CheckedHeartbeat:
    try:
        hb = bodies.Heartbeat.model_validate(obj)
    except ValidationError:
        raise BadInput("invalid heartbeat") from None  # the mapping runs on errors only
    if hb.workload_id != claims.workload_id:
        raise BadInput("this token speaks for another workload", status=403)
    if hb.status not in REPORTABLE[claims.kind]:
        raise BadInput("status of another kind")
    detail = hb.detail
    if detail is not None and len(detail.encode()) > MAX_DETAIL_BYTES:
        raise BadInput("detail too long")
    return heartbeat_checks.CheckedHeartbeat(
        hb.workload_id, hb.status.value, hb.seq, detail, claims.generation
    )


def per_call_us(call: Callable[[], object]) -> float:
    runs = timeit.repeat(call, number=NUMBER, repeat=REPEAT, timer=time.process_time)
    return min(runs) / NUMBER * 1e6


def main() -> None:
    for name, body in (("minimal", BODY), ("with detail", WITH_DETAIL)):
        checker = per_call_us(lambda b=body: heartbeat_checks.check_heartbeat(b, CLAIMS))  # type: ignore[misc]
        alone = per_call_us(lambda b=body: bodies.Heartbeat.model_validate(b))  # type: ignore[misc]
        path = per_call_us(lambda b=body: model_path(b, CLAIMS))  # type: ignore[misc]
        print(
            f"{name:12s} checker {checker:5.2f} us | model only {alone:5.2f} us | "
            f"model path {path:5.2f} us ({path / checker:4.2f}x the checker)"
        )


if __name__ == "__main__":
    main()
