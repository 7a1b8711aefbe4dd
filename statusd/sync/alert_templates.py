"""`template` receivers: a Jinja2 file of STATUSD_ALERT_TEMPLATES_DIR renders the request body.

The file is operator-written, so it runs in Jinja2's SandboxedEnvironment (no attribute access to
internals, no calls of unsafe methods) with StrictUndefined (a misspelt field is an error, not a
silently empty page). It sees `alert` (statusd.sync.alert_facts.AlertFacts.as_json), `payload`
(the stored row payload) and `receiver` (the receiver's name). Any failure (missing file, syntax,
undefined name, sandbox refusal) raises TemplateFailed, which the drain records as a dead letter
with the reason: one receiver's broken template never stops the drain. Files are re-read when
they change (Jinja2's auto_reload), so a fixed template needs no restart.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from statusd.errors import StatusdError
from statusd.sync.alert_facts import AlertFacts

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment


class TemplateFailed(StatusdError, ValueError):
    """The receiver's template could not render this alert (the message says why)."""


@lru_cache(maxsize=8)
def _environment(directory: str) -> SandboxedEnvironment:
    # Jinja2 is imported by the path that renders with it, not with this module: every worker
    # and beat imports the drain, most deployments have no template receiver, and the import
    # cost each of those processes ~60 ms of CPU at start.
    import jinja2.sandbox

    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        auto_reload=True,
    )


def render_template(directory: str | None, template: str, receiver: str, facts: AlertFacts) -> str:
    if directory is None:
        raise TemplateFailed(f"template {template!r}: STATUSD_ALERT_TEMPLATES_DIR is not set")
    import jinja2  # for the class of its errors (imported once per process, as above)

    try:
        loaded = _environment(directory).get_template(template)
        return loaded.render(alert=facts.as_json(), payload=facts.payload, receiver=receiver)
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" line {lineno}" if lineno else ""
        raise TemplateFailed(f"template {template!r}{where}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # the template is operator code: whatever it raises is its error
        raise TemplateFailed(f"template {template!r}: {type(exc).__name__}: {exc}") from None
