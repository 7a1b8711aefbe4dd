"""STATUSD_ALERT_RECEIVERS: the alert receivers and how each wants its alerts (no I/O here).

A receiver is `{"name", "format", "url", "match"?, "routing_key"?, "template"?}`. `match` is the
silences' matcher (kind, label `key:value`, id; every one given must fit): an alert goes only to
the receivers it fits, and a receiver without `match` takes every alert. The list is checked
completely at start-up (statusd.settings), so a bad entry stops statusd with one line naming it
instead of dead-lettering every alert later.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from statusd.schema.bodies import SilenceMatch

# Receiver names end up in outbox destinations and metric labels: short, plain.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ReceiverFormat(StrEnum):
    SLACK = "slack"  # the Slack-compatible JSON STATUSD_ALERT_WEBHOOKS always sent
    PAGERDUTY = "pagerduty"  # Events API v2
    OPSGENIE = "opsgenie"  # Alert API v2 (create; close by alias)
    MSTEAMS = "msteams"  # incoming-webhook MessageCard
    GENERIC = "generic"  # statusd's own JSON: status, incident, workload, summary
    TEMPLATE = "template"  # a Jinja2 file of STATUSD_ALERT_TEMPLATES_DIR, rendered sandboxed


class Receiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    format: ReceiverFormat
    url: str
    match: SilenceMatch | None = None
    routing_key: str | None = Field(default=None, min_length=1)
    template: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _complete(self) -> Receiver:
        if not NAME.match(self.name):
            raise ValueError("name must be 1-64 of letters, digits, '.', '_', '-'")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {self.url!r} is not an http(s) URL with a host")
        if self.format in (ReceiverFormat.PAGERDUTY, ReceiverFormat.OPSGENIE):
            if not self.routing_key:
                raise ValueError(f"format {self.format.value} needs routing_key")
        if (self.format is ReceiverFormat.TEMPLATE) != (self.template is not None):
            raise ValueError("template is needed by format template, and only by it")
        if self.template is not None and (
            "/" in self.template or "\\" in self.template or self.template.startswith(".")
        ):
            raise ValueError(f"template {self.template!r} must be a file name in the directory")
        return self


def _entry_name(entry: object, index: int) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"receiver {index} ({name!r})" if isinstance(name, str) else f"receiver {index}"


def parse_receivers(value: object) -> list[Receiver]:
    """The receivers of a JSON array (or an already parsed list); ValueError naming the entry."""
    if isinstance(value, str | bytes):
        if not value.strip():
            return []
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, list):
        raise ValueError("must be a JSON array of receivers")
    receivers: list[Receiver] = []
    names: set[str] = set()
    for index, entry in enumerate(value):
        if isinstance(entry, Receiver):
            receiver = entry
        else:
            try:
                receiver = Receiver.model_validate(entry)
            except ValidationError as exc:
                raise ValueError(f"{_entry_name(entry, index)}: {_problems(exc)}") from None
        if receiver.name in names:
            raise ValueError(f"{_entry_name(entry, index)}: name is used twice")
        names.add(receiver.name)
        receivers.append(receiver)
    return receivers


def _problems(exc: ValidationError) -> str:
    def one(error: Any) -> str:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message

    return "; ".join(one(e) for e in exc.errors())
