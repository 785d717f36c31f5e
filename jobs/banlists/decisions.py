"""Per-account decisions of reviewers and appeals: recorded once, folded into lists and labels.

In: decisions made by people (``farmwatch banlist decide``, one at a time or a CSV exported
from a review tool), an :class:`jobs.core.store.ObjectStore` and the ban-list prefix. Out:

- one append-only record per decision under ``<prefix>/decisions/`` (never edited; a later
  decision about the same account supersedes an earlier one when they are folded in key order),
  each also written to the audit log (:mod:`jobs.banlists.audit`);
- the accounts kept off every later list (:func:`kept_off`): those whose latest standing
  decision is ``appeal-upheld`` or ``not-fraud``, until a later ``confirmed-fraud``
  (``appeal-denied`` changes nothing about standing: a denied appeal neither lifts an earlier
  upheld one nor bans);
- :func:`apply_decisions`: a ban list split into kept rows and rows moved to the allowlisted
  report with the decision's reference (``decision:<record_id>``);
- :func:`decision_labels`: the decisions as training labels with their time and ``source``
  (``appeal`` or ``reviewer``), read by :mod:`models.labels`.

Called by the publish step (:mod:`jobs.banlists.publish`), the trust commands
(:mod:`jobs.banlists.trust_commands`), the training stage and the tests.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.banlists import journal
from jobs.banlists.audit import record_action
from jobs.core.store import ObjectStore

DECISIONS = ("appeal-upheld", "appeal-denied", "confirmed-fraud", "not-fraud")
KEEPS_OFF = ("appeal-upheld", "not-fraud")
"""Decisions that keep an account off every later list."""
LIFTS = ("confirmed-fraud",)
"""Decisions that end an earlier one's keeping off."""
LABEL_OF = {"appeal-upheld": 0, "appeal-denied": 1, "confirmed-fraud": 1, "not-fraud": 0}
SOURCE_OF = {
    "appeal-upheld": "appeal",
    "appeal-denied": "appeal",
    "confirmed-fraud": "reviewer",
    "not-fraud": "reviewer",
}
DECISION_COLUMNS = (
    "account_id",
    "decision",
    "reason",
    "by",
    "decided_at",
    "source",
    "recorded_at",
    journal.RECORD_ID,
)
CSV_COLUMNS = ("account_id", "decision", "reason")
"""Required columns of a bulk CSV; ``by`` and ``decided_at`` (ISO-8601, UTC) are optional."""


def decisions_folder(prefix: str) -> str:
    """Where the decision records of a ban-list prefix live."""
    return f"{prefix}/decisions"


def _checked(account_id: str, decision: str, reason: str, decided_at: str | None) -> str:
    """Validate one decision; return its ``decided_at`` as ISO-8601 UTC."""
    if not str(account_id).strip():
        raise ValueError("a decision needs an account id")
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}; expected one of {DECISIONS}")
    if not str(reason).strip():
        raise ValueError(f"a decision about {account_id} needs a reason")
    if not decided_at:
        return journal.now().isoformat()
    parsed = datetime.fromisoformat(str(decided_at).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"decided_at {decided_at!r} needs a time zone (e.g. +00:00 or Z)")
    return parsed.isoformat()


def record_decision(
    store: ObjectStore,
    prefix: str,
    account_id: str,
    decision: str,
    reason: str,
    by: str | None = None,
    decided_at: str | None = None,
    source: str = "cli",
) -> dict[str, Any]:
    """Append one decision (and its audit record); return the stored record.

    Raises:
        ValueError: an empty account id or reason, an unknown decision, a naive timestamp.
    """
    when = _checked(account_id, decision, reason, decided_at)
    record = journal.append(
        store,
        decisions_folder(prefix),
        {
            "account_id": str(account_id).strip(),
            "decision": decision,
            "reason": reason.strip(),
            "by": journal.actor(by),
            "decided_at": when,
            "source": source,
        },
    )
    record_action(
        store,
        prefix,
        "decide",
        record["reason"],
        record["by"],
        account_id=record["account_id"],
        decision=decision,
        decision_id=record[journal.RECORD_ID],
    )
    return record


def record_decisions_csv(
    store: ObjectStore, prefix: str, path: Path, by: str | None = None
) -> list[dict[str, Any]]:
    """Record every row of a review tool's CSV export; nothing is written if a row is bad.

    Columns: ``account_id, decision, reason`` and optionally ``by`` (default: ``by``, then
    :func:`jobs.banlists.journal.actor`) and ``decided_at``.

    Raises:
        ValueError: a missing column or a bad row (all rows are checked before any is written).
    """
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in CSV_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: needs a header with {CSV_COLUMNS} and at least one row")
    problems = []
    for line, row in enumerate(rows, start=2):
        try:
            _checked(row["account_id"], row["decision"], row["reason"], row.get("decided_at"))
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
    if problems:
        raise ValueError(f"{path}: nothing recorded; " + "; ".join(problems[:5]))
    return [
        record_decision(
            store,
            prefix,
            row["account_id"],
            row["decision"],
            row["reason"],
            row.get("by") or by,
            row.get("decided_at") or None,
            source=f"csv:{path.name}",
        )
        for row in rows
    ]


def read_decisions(store: ObjectStore, prefix: str) -> pd.DataFrame:
    """Every decision, oldest record first, in :data:`DECISION_COLUMNS`."""
    records = journal.read_all(store, decisions_folder(prefix))
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return frame.reindex(columns=list(DECISION_COLUMNS)).astype(object)


def kept_off(decisions: pd.DataFrame) -> pd.DataFrame:
    """Accounts whose latest standing decision keeps them off the lists.

    Standing decisions are :data:`KEEPS_OFF` and :data:`LIFTS`; the latest by record order
    wins (records are folded in key order, i.e. the order they were made in).

    Returns:
        ``account_id, decision, record_id, reason, by`` of each account kept off.
    """
    columns = ["account_id", "decision", journal.RECORD_ID, "reason", "by"]
    standing = decisions[decisions["decision"].isin(KEEPS_OFF + LIFTS)]
    latest = standing.drop_duplicates("account_id", keep="last")
    off = latest[latest["decision"].isin(KEEPS_OFF)]
    return off[columns].sort_values("account_id", ignore_index=True)


def apply_decisions(
    banlist: pd.DataFrame, allowlisted: pd.DataFrame | None, off: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Move the listed accounts that decisions keep off into the allowlisted rows.

    Their ``allowlist_rule`` is ``decision:<record_id>`` (the decision's reference, which
    ``farmwatch banlist audit`` and ``decisions/<record_id>.json`` lead back to).
    """
    if off.empty:
        return banlist, allowlisted
    hit = banlist["account_id"].isin(off["account_id"])
    if not hit.any():
        return banlist, allowlisted
    rule = off.set_index("account_id")[journal.RECORD_ID].map(lambda r: f"decision:{r}")
    moved = banlist.loc[hit, ["account_id", "farm_id", "score", "action"]].copy()
    moved["allowlist_rule"] = moved["account_id"].map(rule)
    frames = [f for f in (allowlisted, moved) if f is not None and not f.empty]
    return banlist.loc[~hit].reset_index(drop=True), pd.concat(frames, ignore_index=True)


def decision_labels(decisions: pd.DataFrame, until: datetime | None = None) -> pd.DataFrame:
    """Decisions as labels: ``account_id, label, labelled_at (UTC), source``.

    ``confirmed-fraud`` and ``appeal-denied`` are 1, ``not-fraud`` and ``appeal-upheld`` 0;
    ``source`` is ``reviewer`` or ``appeal``. Only decisions made up to ``until`` count (a model
    trained as of a date sees what was decided by then). Every decision is a row; which label
    an account ends with is decided by :func:`models.labels.with_decisions`.
    """
    frame = decisions.loc[decisions["decision"].isin(DECISIONS)].copy()
    frame["labelled_at"] = pd.to_datetime(frame["decided_at"], utc=True, format="ISO8601")
    if until is not None:
        frame = frame[frame["labelled_at"] <= pd.Timestamp(until)]
    return pd.DataFrame(
        {
            "account_id": frame["account_id"].astype(str),
            "label": frame["decision"].map(LABEL_OF).astype("int32"),
            "labelled_at": frame["labelled_at"],
            "source": frame["decision"].map(SOURCE_OF),
        }
    ).reset_index(drop=True)
