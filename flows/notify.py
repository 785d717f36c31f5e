"""Failure and held-list notifications: a JSON POST to a configured webhook.

In: ``orchestration.webhook_url`` and an event (``run_failed``, ``banlist_held`` or
``drift_alert``) with its
details. Out: one HTTP POST (``Content-Type: application/json``) with ``event``, ``flow``,
``run_date``, ``message`` and extra fields; Slack-compatible because it also carries ``text``.
A notification that cannot be delivered is logged, never raised: it must not turn a held list
into a failed run or hide the original failure. Called by the nightly flow's failure hook,
publish step and report step.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger("farmwatch.notify")


def notify(webhook_url: str | None, event: str, message: str, **details: Any) -> bool:
    """POST one event to the webhook; returns whether it was delivered."""
    if not webhook_url:
        return False
    payload = {"event": event, "message": message, "text": f"farmwatch {event}: {message}"}
    payload.update(details)
    request = urllib.request.Request(
        webhook_url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except OSError as exc:
        log.warning("could not deliver %s to the webhook: %s", event, exc)
        return False


def notify_drift(webhook_url: str | None, run_date: str, summary: dict[str, Any]) -> bool:
    """POST ``drift_alert`` when the run's publish step raised drift alerts; False when none."""
    published = summary.get("published") or {}
    alerts = list((published.get("drift") or {}).get("alerts") or [])
    if not alerts:
        return False
    return notify(
        webhook_url,
        "drift_alert",
        "; ".join(alerts),
        run_date=run_date,
        run_id=published.get("run_id"),
        report=published.get("report"),
        store=published.get("store"),
    )
