"""Logging: structlog, JSON lines in production, human-readable on a terminal.

One line per event on stderr. `STATUSD_LOG_FORMAT=auto` (default) picks JSON when stderr is not a
terminal (containers, systemd, CI) and the colored console renderer when a person is watching.
Every applied transition is one line: `{"event": "transition", "workload_id", "kind", "from",
"to", "source", "reason", "seq", "transition_id", "level", "timestamp"}` (statusd.transitions).

Standard-library loggers (aiohttp, Celery, Alembic) go through the same renderer, so a JSON
process never mixes in plain-text lines that a log pipeline would have to parse separately.
"""

from __future__ import annotations

import logging
import sys

import structlog

from statusd.settings import LogFormat, Settings

_HANDLER_NAME = "statusd"  # our root handler, replaced (not duplicated) when configured again


def resolve_format(settings: Settings) -> LogFormat:
    """AUTO -> CONSOLE on a terminal, JSON otherwise."""
    if settings.log_format is LogFormat.AUTO:
        return LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
    return settings.log_format


def configure_logging(settings: Settings) -> None:
    """Configure structlog + stdlib logging once per process."""
    fmt = resolve_format(settings)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    level = logging.getLevelName(settings.log_level.upper())
    level = level if isinstance(level, int) else logging.INFO
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO on every start: noise, not news.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(level, logging.WARNING))
