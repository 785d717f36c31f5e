"""Ban lists: score bands -> actions -> files laid out like the S3 bucket, then ``latest.json``.

In: the ``scores`` table of a run, :class:`jobs.config.BanSettings` and the publishing target.
Out, under ``<target>/<prefix>/``::

    dt=YYYY-MM-DD/run=<run_id>/banlist.parquet   account_id, farm_id, score, action, reasons,
    dt=YYYY-MM-DD/run=<run_id>/banlist.csv       model_version (no raw emails, IPs or cards)
    dt=YYYY-MM-DD/run=<run_id>/farms.parquet     per-farm summary
    dt=YYYY-MM-DD/run=<run_id>/manifest.json     counts, sha256 of every file, model, config
    latest.json                                  pointer to the newest complete run

``latest.json`` is written last, atomically, and only after every file of the run has been
written and re-read with a matching sha256: a run that fails midway leaves the previous list in
force. ``run_id`` is a hash of the run's inputs, so re-running a date rewrites the same folder.
Called by the nightly flow's publish task and ``farmwatch banlist``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.config import BanSettings

SCHEMA_VERSION = 1
BANLIST_COLUMNS = ("account_id", "farm_id", "score", "action", "reasons", "model_version")


class LocalStore:
    """A folder standing in for the bucket: same keys, atomic writes via rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        """Read the object at ``key``."""
        return (self.root / key).read_bytes()

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        return (self.root / key).is_file()

    def describe(self) -> str:
        """Where this store writes."""
        return str(self.root)


def store_for(target: str) -> LocalStore:
    """The store for a target (a local folder; ``s3://`` targets are not supported yet)."""
    if target.startswith(("s3://", "s3a://")):
        raise ValueError(
            f"publishing to {target} needs the S3 writer, which is not built yet; "
            "set FARMWATCH_PUBLISH__TARGET to a folder"
        )
    return LocalStore(target)


def assign_actions(scores: DataFrame, bans: BanSettings) -> DataFrame:
    """Turn scores into actions: ``ban`` (farm members above the ban band), ``review``, ``watch``.

    Accounts outside any farm candidate are never banned automatically: above the ban band they
    go to human review. Rows below the watch band are dropped.
    """
    for column in ("account_id", "farm_id", "score"):
        if column not in scores.columns:
            raise ValueError(f"scores is missing column {column!r}")
    if not bans.watch_threshold <= bans.review_threshold <= bans.ban_threshold:
        raise ValueError("score bands must satisfy watch <= review <= ban")
    score = F.col("score")
    action = (
        F.when((score >= bans.ban_threshold) & F.col("farm_id").isNotNull(), "ban")
        .when(score >= bans.review_threshold, "review")
        .when(score >= bans.watch_threshold, "watch")
    )
    return scores.withColumn("action", action).where(F.col("action").isNotNull())


def farm_summary(banlist: pd.DataFrame) -> pd.DataFrame:
    """Per farm: accounts listed, banned, mean and min score of the banned."""
    farms = banlist[banlist["farm_id"].notna()]
    if farms.empty:
        return pd.DataFrame(columns=["farm_id", "accounts_listed", "accounts_banned", "mean_score"])
    return (
        farms.groupby("farm_id")
        .agg(
            accounts_listed=("account_id", "size"),
            accounts_banned=("action", lambda a: int((a == "ban").sum())),
            mean_score=("score", "mean"),
        )
        .reset_index()
        .sort_values(["accounts_banned", "farm_id"], ascending=[False, True])
    )


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    flat = frame.assign(reasons=frame["reasons"].map(lambda r: " | ".join(r)))
    return flat.to_csv(index=False).encode()


@dataclass(frozen=True)
class Published:
    """Where a run's ban list went."""

    run_prefix: str
    manifest: dict[str, Any]


def run_id_for(
    run_date: str, model_version: str, config_fingerprint: str, input_digest: str
) -> str:
    """Deterministic run id: same date, model, config and inputs -> same folder."""
    text = "|".join((run_date, model_version, config_fingerprint, input_digest))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def publish(
    banlist: pd.DataFrame,
    store: LocalStore,
    prefix: str,
    run_date: str,
    model: dict[str, str],
    config_fingerprint: str,
    input_summary: dict[str, Any],
) -> Published:
    """Write one run's files, verify them, then move ``latest.json``.

    Args:
        banlist: rows with :data:`BANLIST_COLUMNS`.
        store: where to write.
        prefix: key prefix (``banlists``).
        run_date: ``YYYY-MM-DD``.
        model: ``name`` and ``version`` of the scoring model.
        config_fingerprint: :meth:`jobs.config.Settings.fingerprint`.
        input_summary: input date range and row counts (also hashed into the run id).

    Returns:
        The run's key prefix and manifest.
    """
    missing = [c for c in BANLIST_COLUMNS if c not in banlist.columns]
    if missing:
        raise ValueError(f"ban list is missing column(s) {missing}")
    banlist = banlist[list(BANLIST_COLUMNS)].sort_values(
        ["action", "score", "account_id"], ascending=[True, False, True], ignore_index=True
    )
    input_digest = hashlib.sha256(
        json.dumps(input_summary, sort_keys=True, default=str).encode()
    ).hexdigest()
    run_id = run_id_for(run_date, model["version"], config_fingerprint, input_digest)
    run_prefix = f"{prefix}/dt={run_date}/run={run_id}"
    files = {
        "banlist.parquet": _parquet_bytes(banlist),
        "banlist.csv": _csv_bytes(banlist),
        "farms.parquet": _parquet_bytes(farm_summary(banlist)),
    }
    for name, data in files.items():
        store.put(f"{run_prefix}/{name}", data)
    checksums = {}
    for name, data in files.items():
        written = store.get(f"{run_prefix}/{name}")
        digest = hashlib.sha256(written).hexdigest()
        if digest != hashlib.sha256(data).hexdigest():
            raise OSError(f"{run_prefix}/{name} does not read back as written")
        checksums[name] = digest
    counts = banlist["action"].value_counts().to_dict()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_date": run_date,
        "run_id": run_id,
        "status": "published",
        "counts": {a: int(counts.get(a, 0)) for a in ("ban", "review", "watch")},
        "farms_with_bans": int(banlist.loc[banlist["action"] == "ban", "farm_id"].nunique()),
        "files": {name: {"sha256": checksums[name], "bytes": len(files[name])} for name in files},
        "model": model,
        "config_fingerprint": config_fingerprint,
        "inputs": input_summary,
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    store.put(f"{run_prefix}/manifest.json", manifest_bytes)
    latest = {
        "run_date": run_date,
        "run_id": run_id,
        "prefix": run_prefix,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
    }
    store.put(f"{prefix}/latest.json", json.dumps(latest, indent=2).encode())
    return Published(run_prefix, manifest)


def read_latest(store: LocalStore, prefix: str = "banlists") -> tuple[dict[str, Any], pd.DataFrame]:
    """The manifest and ban list that ``latest.json`` points at (the consumer's entry point)."""
    if not store.exists(f"{prefix}/latest.json"):
        raise FileNotFoundError(f"no ban list published under {store.describe()}/{prefix}")
    latest = json.loads(store.get(f"{prefix}/latest.json"))
    manifest = json.loads(store.get(f"{latest['prefix']}/manifest.json"))
    data = store.get(f"{latest['prefix']}/banlist.parquet")
    if hashlib.sha256(data).hexdigest() != manifest["files"]["banlist.parquet"]["sha256"]:
        raise OSError(f"{latest['prefix']}/banlist.parquet does not match its manifest")
    return manifest, pd.read_parquet(io.BytesIO(data))
