"""The ban-list run registry on a store: list, read, release, revoke, and ``latest.json``.

In: an :class:`jobs.core.store.ObjectStore` (S3 bucket or local folder, same keys) and the
ban-list prefix. Out: the runs under it with their status, verified reads of a run's files (the
sha256 of every file is checked against its manifest), the pointer to the list in force, and
the two ways a reviewer changes what is in force: :func:`release` (a held run) and
:func:`revoke` (a published one). Called by the publish stage, the trust-team commands
(:mod:`jobs.banlists.commands`), :mod:`jobs.banlists.reader` and the tests.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from jobs.banlists.audit import record_action
from jobs.core.store import ObjectStore, StoreError


@dataclass(frozen=True)
class Published:
    """The outcome of :func:`publish`."""

    run_prefix: str
    manifest: dict[str, Any]
    status: str
    in_force: bool
    message: str


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode()


def _status_key(run_prefix: str) -> str:
    return f"{run_prefix}/status.json"


def read_status(store: ObjectStore, run_prefix: str) -> dict[str, Any]:
    """A run's status document (``status`` and ``history``)."""
    return json.loads(store.get(_status_key(run_prefix)))


def _write_status(store: ObjectStore, run_prefix: str, status: str, event: dict[str, Any]) -> None:
    history: list[dict[str, Any]] = []
    if store.exists(_status_key(run_prefix)):
        history = read_status(store, run_prefix).get("history", [])
    history.append({"status": status, "at": _now(), **event})
    store.put(_status_key(run_prefix), _json_bytes({"status": status, "history": history}))


def list_runs(
    store: ObjectStore,
    prefix: str = "banlists",
    before: str | None = None,
    newest: int | None = None,
) -> list[dict[str, Any]]:
    """Runs under ``prefix`` (oldest first): date, id, status, counts, key prefix, inputs.

    Args:
        store: where the runs are.
        prefix: the ban-list prefix.
        before: only runs dated strictly before this ``YYYY-MM-DD``.
        newest: only the newest this many runs (after ``before``); bounds the reads.
    """
    keys = [k for k in store.list(f"{prefix}/dt=") if k.endswith("/manifest.json")]
    if before is not None:
        keys = [k for k in keys if k.split("dt=", 1)[1][:10] < before]
    keys.sort(key=lambda k: k.split("dt=", 1)[1][:10])
    if newest is not None:
        keys = keys[-newest:] if newest > 0 else []
    runs = []
    for key in keys:
        run_prefix = key.rsplit("/", 1)[0]
        manifest = json.loads(store.get(key))
        status = (
            read_status(store, run_prefix)["status"]
            if store.exists(_status_key(run_prefix))
            else manifest.get("status", "published")
        )
        runs.append(
            {
                "run_date": manifest["run_date"],
                "run_id": manifest["run_id"],
                "status": status,
                "counts": manifest["counts"],
                "prefix": run_prefix,
                "created_at": manifest.get("created_at", ""),
                "inputs": manifest.get("inputs", {}),
            }
        )
    return sorted(runs, key=lambda r: (r["run_date"], r["created_at"], r["run_id"]))


def latest_pointer(store: ObjectStore, prefix: str = "banlists") -> dict[str, Any] | None:
    """The content of ``latest.json`` (``None`` when no list is in force)."""
    try:
        return json.loads(store.get(f"{prefix}/latest.json"))
    except FileNotFoundError:
        return None


def _point_latest(
    store: ObjectStore, prefix: str, run_prefix: str, files_verified: bool = False
) -> None:
    """Verify every file of the run, then write ``latest.json`` (the commit point).

    ``files_verified`` skips re-reading the files when the caller has just read each one back
    and matched its sha256 (a fresh publish); release, revoke and re-runs verify here.
    """
    manifest_bytes = store.get(f"{run_prefix}/manifest.json")
    manifest = json.loads(manifest_bytes)
    to_check = {} if files_verified else manifest["files"]
    for name, meta in to_check.items():
        if _sha(store.get(f"{run_prefix}/{name}")) != meta["sha256"]:
            raise StoreError(f"{run_prefix}/{name} does not match its manifest; not publishing")
    latest = {
        "run_date": manifest["run_date"],
        "run_id": manifest["run_id"],
        "prefix": run_prefix,
        "manifest_sha256": _sha(manifest_bytes),
        "updated_at": _now(),
    }
    store.put(f"{prefix}/latest.json", _json_bytes(latest))


def find_run(store: ObjectStore, prefix: str, run_id: str) -> dict[str, Any]:
    """The :func:`list_runs` entry of one run id; ``KeyError`` if there is none."""
    for run in list_runs(store, prefix):
        if run["run_id"] == run_id:
            return run
    raise KeyError(f"no run {run_id!r} under {store.describe()}/{prefix}")


def release(
    store: ObjectStore, prefix: str, run_id: str, note: str, by: str | None = None
) -> Published:
    """Publish a held run after review: verify it and move ``latest.json`` to it if newest.

    The release is written to the audit log (:mod:`jobs.banlists.audit`) with ``by``.
    """
    run = find_run(store, prefix, run_id)
    if run["status"] != "held":
        raise ValueError(f"run {run_id} is {run['status']}, only a held run can be released")
    manifest = json.loads(store.get(f"{run['prefix']}/manifest.json"))
    latest = latest_pointer(store, prefix)
    _write_status(store, run["prefix"], "published", {"reason": note})
    record_action(store, prefix, "release", note, by, run_id=run_id, run_date=run["run_date"])
    in_force = latest is None or run["run_date"] >= latest["run_date"]
    if in_force:
        _point_latest(store, prefix, run["prefix"])
    return Published(run["prefix"], manifest, "published", in_force, f"released: {note}")


def revoke(
    store: ObjectStore, prefix: str, run_id: str, reason: str, by: str | None = None
) -> dict[str, Any] | None:
    """Mark a run revoked; if it was in force, point ``latest.json`` at the newest good run.

    The revoke is written to the audit log (:mod:`jobs.banlists.audit`) with ``by``.

    Returns:
        The new ``latest.json`` content (``None`` when no published run is left, in which case
        ``latest.json`` is removed).
    """
    if not reason.strip():
        raise ValueError("a revoke needs a reason")
    run = find_run(store, prefix, run_id)
    if run["status"] == "revoked":
        raise ValueError(f"run {run_id} is already revoked")
    _write_status(store, run["prefix"], "revoked", {"reason": reason})
    record_action(store, prefix, "revoke", reason, by, run_id=run_id, run_date=run["run_date"])
    latest = latest_pointer(store, prefix)
    if latest is not None and latest["run_id"] != run_id:
        return latest
    good = [r for r in list_runs(store, prefix) if r["status"] == "published"]
    if not good:
        store.delete(f"{prefix}/latest.json")
        return None
    _point_latest(store, prefix, good[-1]["prefix"])
    return latest_pointer(store, prefix)


def _read_verified(
    store: ObjectStore, run_prefix: str, manifest: dict[str, Any], name: str
) -> pd.DataFrame:
    data = store.get(f"{run_prefix}/{name}")
    if _sha(data) != manifest["files"][name]["sha256"]:
        raise StoreError(f"{run_prefix}/{name} does not match its manifest")
    return pd.read_parquet(io.BytesIO(data))


def read_run_file(store: ObjectStore, run_prefix: str, name: str) -> tuple[dict[str, Any], bytes]:
    """A run's manifest and the bytes of one of its files, checked against the manifest."""
    manifest = json.loads(store.get(f"{run_prefix}/manifest.json"))
    data = store.get(f"{run_prefix}/{name}")
    if _sha(data) != manifest["files"][name]["sha256"]:
        raise StoreError(f"{run_prefix}/{name} does not match its manifest")
    return manifest, data


def read_run(
    store: ObjectStore, run_prefix: str, name: str = "banlist.parquet"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A run's manifest and one of its Parquet files, checked against the manifest's sha256."""
    manifest = json.loads(store.get(f"{run_prefix}/manifest.json"))
    return manifest, _read_verified(store, run_prefix, manifest, name)


def read_latest(
    store: ObjectStore, prefix: str = "banlists"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The manifest and ban list that ``latest.json`` points at (the consumer's entry point)."""
    latest = latest_pointer(store, prefix)
    if latest is None:
        raise FileNotFoundError(f"no ban list in force under {store.describe()}/{prefix}")
    manifest_bytes = store.get(f"{latest['prefix']}/manifest.json")
    if _sha(manifest_bytes) != latest["manifest_sha256"]:
        raise StoreError(f"{latest['prefix']}/manifest.json does not match latest.json")
    manifest = json.loads(manifest_bytes)
    return manifest, _read_verified(store, latest["prefix"], manifest, "banlist.parquet")
