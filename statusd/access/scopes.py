"""Scopes and principals: what an API key may do, and to which workloads.

Scopes are nested: `read` < `write` < `admin`; a key holds every right of the scopes below its
own. Labels narrow a key to the workloads carrying all of them (`team: vision`), whatever its scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Scope(StrEnum):
    READ = "read"  # every GET route, /v1/events, reports, the status page
    WRITE = "write"  # read + register, transitions, deregister, silences
    ADMIN = "admin"  # write + keys, audit, prune

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, needed: Scope) -> bool:
        """True when a key of this scope may call a route that needs `needed`."""
        return self.rank >= needed.rank


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}

BOOTSTRAP_ID = "bootstrap"  # the actor id of STATUSD_API_TOKEN, in sessions and audit rows
BOOTSTRAP_NAME = "STATUSD_API_TOKEN"
ANONYMOUS_ID = "anonymous"  # a refused call that proved no identity


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: an API key, or the bootstrap token (admin, every workload)."""

    key_id: str
    name: str
    scope: Scope
    labels: Mapping[str, str] = field(default_factory=dict)

    def sees(self, labels: Mapping[str, str] | None) -> bool:
        """True when a workload with `labels` is within this key's labels (all of them)."""
        have = labels or {}
        return all(have.get(k) == v for k, v in self.labels.items())

    def missing_label(self, labels: Mapping[str, str] | None) -> str | None:
        """The first `k:v` of this key's labels that `labels` lacks (None: it carries them all)."""
        have = labels or {}
        for key, value in sorted(self.labels.items()):
            if have.get(key) != value:
                return f"{key}:{value}"
        return None


BOOTSTRAP = Principal(BOOTSTRAP_ID, BOOTSTRAP_NAME, Scope.ADMIN)
