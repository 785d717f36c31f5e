"""Append-only records on an object store: one object per record, never edited in place.

In: an :class:`jobs.core.store.ObjectStore` (S3 bucket or local folder), a folder key and a
JSON-able payload. Out: one object ``<folder>/<UTC timestamp>-<random suffix>.json`` per record,
and the records of a folder read back in key order (which is time order). Object stores offer
no lock and no append; writing a new object per record under a key nobody else can pick makes
concurrent writers safe without either: two ``farmwatch banlist decide`` calls in the same
microsecond still write two objects. Called by :mod:`jobs.banlists.decisions` and
:mod:`jobs.banlists.audit`.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
from datetime import UTC, datetime
from typing import Any

from jobs.core.store import ObjectStore

RECORD_ID = "record_id"
"""The key's file name without ``.json``: the record's reference (sortable by time)."""


def actor(by: str | None = None) -> str:
    """Who acts: ``by`` if given, else ``FARMWATCH_ACTOR``, else the login name."""
    if by and by.strip():
        return by.strip()
    from_env = os.environ.get("FARMWATCH_ACTOR", "").strip()
    if from_env:
        return from_env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def now() -> datetime:
    """The current time in UTC (one place, so tests and records agree)."""
    return datetime.now(UTC)


def append(store: ObjectStore, folder: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Write ``payload`` as a new object under ``folder`` and return it with its ``record_id``.

    The id is the write time to the microsecond followed by 12 random hex digits, so keys sort
    by time and two writers never pick the same key.
    """
    at = now()
    record_id = f"{at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(6)}"
    record = {**payload, RECORD_ID: record_id, "recorded_at": at.isoformat()}
    store.put(f"{folder}/{record_id}.json", json.dumps(record, sort_keys=True).encode())
    return record


def read_all(store: ObjectStore, folder: str) -> list[dict[str, Any]]:
    """Every record under ``folder``, oldest first (key order)."""
    keys = [k for k in store.list(f"{folder}/") if k.endswith(".json")]
    return [json.loads(store.get(key)) for key in sorted(keys)]


def last_key(store: ObjectStore, folder: str) -> str | None:
    """The newest record's id (``None`` when the folder is empty): a cheap version marker."""
    keys = [k for k in store.list(f"{folder}/") if k.endswith(".json")]
    return max(keys).rsplit("/", 1)[1].removesuffix(".json") if keys else None
