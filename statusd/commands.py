"""Foundation CLI verbs: up, serve, migrate, workloads."""

from __future__ import annotations

import typer


def register_foundation(app: typer.Typer) -> None:
    """Add up, serve, migrate and workloads to the statusd CLI."""
