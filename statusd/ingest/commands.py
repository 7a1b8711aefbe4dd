"""CLI verbs of statusd.ingest."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the statusd CLI."""
