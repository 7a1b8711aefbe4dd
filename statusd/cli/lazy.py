"""A command group whose verbs are imported when they are dispatched, not when `statusd` starts.

Every statusd process (serve, consume, worker, beat, each operator call) starts through this CLI;
importing every verb's area up front cost each of them over a second of CPU before doing
anything. A table names the module that registers each verb, and only that module is imported.
Listing the verbs (`statusd --help`) imports them all, so the help shown is the verbs' own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import ClassVar

import typer

# typer ships its own copy of click; its groups hold that copy's commands, not `click`'s.
from typer._click import Command, Context
from typer.core import TyperGroup


class LazyVerbs(TyperGroup):
    """A typer group that loads each verb's module on first use, from `verbs`."""

    # verb -> module whose `register(app)` adds that verb (and maybe its siblings) to `app`.
    verbs: ClassVar[Mapping[str, str]] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.verbs)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands and cmd_name in self.verbs:
            self._load(self.verbs[cmd_name])
        return self.commands.get(cmd_name)

    def _load(self, module_name: str) -> None:
        holder = typer.Typer()
        importlib.import_module(module_name).register(holder)
        for name, command in typer.main.get_group(holder).commands.items():
            self.commands.setdefault(name, command)


def lazy_verbs(verbs: Mapping[str, str]) -> type[LazyVerbs]:
    """A `LazyVerbs` class for one table (typer builds the group from a class, not an instance)."""
    return type("LazyVerbs", (LazyVerbs,), {"verbs": verbs})
