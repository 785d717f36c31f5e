"""The audit log: every action on a list or an account, in one append-only place.

In: an :class:`jobs.core.store.ObjectStore` and the ban-list prefix. Out: one record per action
under ``<prefix>/audit/`` (:mod:`jobs.banlists.journal`: one object each, never rewritten) with
``action`` (``publish``, ``hold``, ``release``, ``revoke``, ``decide``), ``by``, ``reason`` and
what it acted on (``run_id`` and ``run_date``, or ``account_id`` and ``decision``), and the log
read back as a table, oldest first. Written by :mod:`jobs.banlists.publish`,
:mod:`jobs.banlists.runs` and :mod:`jobs.banlists.decisions`; read by ``farmwatch banlist
audit``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.banlists import journal
from jobs.core.store import ObjectStore

AUDIT_ACTIONS = ("publish", "hold", "release", "revoke", "decide")
AUDIT_COLUMNS = (
    "recorded_at",
    "action",
    "by",
    "run_date",
    "run_id",
    "account_id",
    "decision",
    "reason",
    journal.RECORD_ID,
)


def audit_folder(prefix: str) -> str:
    """Where the audit records of a ban-list prefix live."""
    return f"{prefix}/audit"


def record_action(
    store: ObjectStore,
    prefix: str,
    action: str,
    reason: str,
    by: str | None = None,
    **subject: Any,
) -> dict[str, Any]:
    """Append one audit record.

    Args:
        store: where the lists are.
        prefix: the ban-list prefix.
        action: one of :data:`AUDIT_ACTIONS`.
        reason: why (the breaker's reason for a publish or hold, the reviewer's words otherwise).
        by: who; default :func:`jobs.banlists.journal.actor`.
        subject: ``run_id``/``run_date`` or ``account_id``/``decision``/``decision_id``.

    Raises:
        ValueError: an unknown action.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {AUDIT_ACTIONS}")
    payload = {"action": action, "reason": reason, "by": journal.actor(by), **subject}
    return journal.append(store, audit_folder(prefix), payload)


def read_audit(store: ObjectStore, prefix: str) -> pd.DataFrame:
    """The whole audit log, oldest first, in :data:`AUDIT_COLUMNS` (missing fields empty)."""
    records = journal.read_all(store, audit_folder(prefix))
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return frame.reindex(columns=list(AUDIT_COLUMNS)).astype(object)
