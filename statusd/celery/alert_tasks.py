"""Celery task of the Alertmanager re-send: `statusd.alerts.resend`, sent by beat every
STATUSD_ALERTMANAGER_RESEND_S on the sync queue (only while STATUSD_ALERTMANAGER_URLS is set).
It writes the due re-send rows (statusd.sync.alertmanager_resend) and asks for a prompt drain;
beat's drain_due delivers them anyway if that kick is lost."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from statusd.celery import worker_runtime
from statusd.celery.names import ALERT_RESEND_TASK
from statusd.runtime import Runtime
from statusd.sync.alertmanager_resend import resend_firing


async def _run(rt: Runtime) -> dict[str, Any]:
    written = await resend_firing(rt.engine, rt.redis, rt.keys, rt.settings)
    if written:
        rt.kick_drain(0.0)
    return {"resent": written}


@shared_task(name=ALERT_RESEND_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def resend_task() -> dict[str, Any]:
    """Re-send the firing alerts whose incidents last to every Alertmanager."""
    return worker_runtime.run(_run)
