"""`statusd simulate`: run a simulated fleet against a statusd API and check what it says."""

from __future__ import annotations

import typer


def simulate() -> None:
    """Run N simulated workload containers against statusd (not finished yet)."""
    raise typer.Exit(2)
