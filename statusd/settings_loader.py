"""The one place that builds `Settings` from the environment.

Every process entry (the CLI verbs, a Celery worker, `celery -A ...`) loads its settings here and
hands them down; nothing else calls `Settings()`. A bad environment becomes one ConfigError line
naming the variables, so the CLI prints it instead of a pydantic traceback.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from statusd.errors import ConfigError
from statusd.settings import Settings


def _variable(loc: tuple[int | str, ...]) -> str:
    return "STATUSD_" + "_".join(str(part) for part in loc).upper() if loc else "configuration"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the non-None `overrides` (CLI flags) on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except ValueError as exc:  # a validator that raised outside pydantic's wrapping
        raise ConfigError(f"invalid configuration: {exc}") from None
