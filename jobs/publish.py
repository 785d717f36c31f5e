"""Ban lists: scores -> actions -> allowlist -> evidence -> guarded, verified publication.

In: the ``scores`` table of a run, the accepted ``signups`` (for email domains of the allowlist),
the run's graph tables (for the entities that bind each farm), :class:`jobs.config.BanSettings`
and an :class:`jobs.store.ObjectStore` (S3 bucket or local folder: same code, same keys).
Out, under ``<prefix>/`` of the store::

    dt=YYYY-MM-DD/run=<run_id>/banlist.parquet     account_id, farm_id, score, action, reasons,
    dt=YYYY-MM-DD/run=<run_id>/banlist.csv         model_version (no raw emails, IPs or cards)
    dt=YYYY-MM-DD/run=<run_id>/farms.parquet       per farm: counts, scores, binding entities
    dt=YYYY-MM-DD/run=<run_id>/diff.parquet        vs the list in force: new/dropped/changed
    dt=YYYY-MM-DD/run=<run_id>/allowlisted.parquet allowlisted accounts kept off the list
    dt=YYYY-MM-DD/run=<run_id>/manifest.json       counts, sha256 of every file, model, code,
                                                   config fingerprint, inputs, breaker, diff
    dt=YYYY-MM-DD/run=<run_id>/status.json         published | held | revoked, with history
    latest.json                                    pointer to the list in force

Guarantees: ``latest.json`` is written last and only after every file of the run has been
written and read back with a matching sha256, so readers never see a partial run and a failed
run leaves the previous list in force. ``run_id`` is a hash of date, model, config and inputs:
re-running the same date with the same inputs and model rewrites nothing. A run whose ban count
trips the circuit breaker is written but ``held`` (``latest.json`` untouched) until released.
``latest.json`` never moves back to an older date except by a revoke. Called by the nightly
flow's publish task and ``farmwatch banlist``.
"""

from __future__ import annotations

import hashlib
import io
import json
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.config import BanSettings
from jobs.graph import require_columns, shared_entities, top_binding_entities
from jobs.store import LocalStore, ObjectStore, StoreError, store_for

__all__ = [
    "BANLIST_COLUMNS",
    "LocalStore",
    "Published",
    "RunContext",
    "apply_allowlist",
    "assign_actions",
    "attach_evidence",
    "find_run",
    "latest_pointer",
    "list_runs",
    "load_allowlist",
    "publish",
    "read_latest",
    "read_run",
    "release",
    "revoke",
    "store_for",
]

SCHEMA_VERSION = 2
BANLIST_COLUMNS = ("account_id", "farm_id", "score", "action", "reasons", "model_version")
ACTIONS = ("ban", "review", "watch")
ALLOWLIST_KINDS = ("account", "email_domain")


# --------------------------------------------------------------------------- Spark transforms


def assign_actions(
    scores: DataFrame, bans: BanSettings, anomaly: DataFrame | None = None
) -> DataFrame:
    """Turn scores into actions: ``ban`` (farm members above the ban band), ``review``, ``watch``.

    Accounts outside any farm candidate are never banned automatically: above the ban band they
    go to human review. With ``bans.ban_needs_own_evidence``, neither is an account without
    evidence of its own (``own_evidence`` false: its account score, what its own features say
    without its group, is under ``bans.own_evidence_min_score``): a household caught in a
    farm's community goes to a person, not to the ban list.

    The first-night path: with ``anomaly`` (the ``group_anomaly`` table of
    :mod:`jobs.anomaly`), every member of a farm candidate that is unlike random groups of its
    size in ``bans.anomaly_review_families`` or more evidence families goes at least to
    ``review``, even when the model is unsure (a brand-new operator), and its reasons start with
    what the group does. Group evidence alone never bans. Rows without an action are dropped.
    """
    needed = ("account_id", "farm_id", "score", "reasons")
    require_columns(
        scores, "scores", (*needed, "own_evidence") if bans.ban_needs_own_evidence else needed
    )
    if not bans.watch_threshold <= bans.review_threshold <= bans.ban_threshold:
        raise ValueError("score bands must satisfy watch <= review <= ban")
    score = F.col("score")
    bannable = F.col("farm_id").isNotNull()
    if bans.ban_needs_own_evidence:
        bannable = bannable & F.col("own_evidence")
    first_night = F.lit(False)
    if anomaly is not None and bans.anomaly_review_families > 0:
        require_columns(anomaly, "group_anomaly", ("farm_id", "group_anomalous_families"))
        groups = anomaly.select(
            "farm_id",
            F.col("group_anomalous_families").alias("_families"),
            F.slice(F.col("evidence"), 1, 2).alias("_evidence"),
        )
        scores = scores.join(groups, "farm_id", "left")
        first_night = F.coalesce(
            F.col("_families") >= bans.anomaly_review_families, F.lit(False)
        ) & (score < bans.review_threshold)
        note = F.format_string(
            "first night: its group is unlike random groups of its size in %d of 7 kinds of "
            "behaviour, and the model is not sure",
            F.col("_families").cast("int"),
        )
        scores = scores.withColumn(
            "reasons",
            F.when(
                first_night,
                F.array_distinct(F.concat(F.array(note), F.col("_evidence"), F.col("reasons"))),
            ).otherwise(F.col("reasons")),
        )
    action = (
        F.when((score >= bans.ban_threshold) & bannable, "ban")
        .when((score >= bans.review_threshold) | first_night, "review")
        .when(score >= bans.watch_threshold, "watch")
    )
    listed = scores.withColumn("action", action).where(F.col("action").isNotNull())
    return listed.drop("_families", "_evidence")


def load_allowlist(spark: SparkSession, path: Path) -> DataFrame:
    """Read an allowlist file (CSV or Parquet with ``kind, value[, note]``) and validate it.

    ``kind`` is ``account`` (value: account id) or ``email_domain`` (value: a domain such as
    ``bigcorp.com``; an organisation is allowlisted through its domains). Domains are compared
    lower-case.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing or a row has an unknown kind or an empty value.
    """
    if not path.is_file():
        raise FileNotFoundError(f"allowlist {path} does not exist (bans.allowlist)")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = {"kind", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"allowlist {path} is missing column(s) {sorted(missing)}")
    if "note" not in frame.columns:
        frame["note"] = ""
    frame = frame[["kind", "value", "note"]].astype(str)
    frame["kind"] = frame["kind"].str.strip().str.lower()
    frame["value"] = frame["value"].str.strip()
    bad = frame[~frame["kind"].isin(ALLOWLIST_KINDS) | (frame["value"] == "")]
    if not bad.empty:
        rows = ", ".join(str(i + 2) for i in bad.index[:5])
        raise ValueError(
            f"allowlist {path}: row(s) {rows} need kind in {ALLOWLIST_KINDS} and a value"
        )
    frame.loc[frame["kind"] == "email_domain", "value"] = frame["value"].str.lower()
    return spark.createDataFrame(frame, "kind string, value string, note string")


def apply_allowlist(
    listed: DataFrame, signups: DataFrame, allowlist: DataFrame
) -> tuple[DataFrame, DataFrame]:
    """Split listed accounts into (kept, allowlisted).

    Args:
        listed: rows with ``account_id`` and ``action`` (from :func:`assign_actions`).
        signups: ``account_id, email`` (the email domain is used here and never published).
        allowlist: ``kind, value, note`` from :func:`load_allowlist`.

    Returns:
        The rows of accounts not allowlisted, and the allowlisted rows with ``allowlist_rule``
        (``kind:value``) and ``allowlist_note``; their ``action`` is the one they would have had.
    """
    require_columns(listed, "listed", ("account_id", "action"))
    require_columns(signups, "signups", ("account_id", "email"))
    require_columns(allowlist, "allowlist", ("kind", "value", "note"))
    domains = signups.select(
        "account_id", F.lower(F.substring_index("email", "@", -1)).alias("email_domain")
    )
    by_account = allowlist.where(F.col("kind") == "account").select(
        F.col("value").alias("account_id"),
        F.concat(F.lit("account:"), F.col("value")).alias("allowlist_rule"),
        F.col("note").alias("allowlist_note"),
    )
    by_domain = (
        allowlist.where(F.col("kind") == "email_domain")
        .select(
            F.col("value").alias("email_domain"),
            F.concat(F.lit("email_domain:"), F.col("value")).alias("allowlist_rule"),
            F.col("note").alias("allowlist_note"),
        )
        .join(domains, "email_domain")
        .drop("email_domain")
    )
    first_rule = Window.partitionBy("account_id").orderBy("allowlist_rule")
    matches = (
        by_account.unionByName(by_domain)
        .withColumn("_n", F.row_number().over(first_rule))
        .where("_n = 1")
        .drop("_n")
    )
    kept = listed.join(matches.select("account_id"), "account_id", "left_anti")
    allowlisted = listed.join(matches, "account_id")
    return kept, allowlisted


def attach_evidence(
    listed: DataFrame, communities: DataFrame, account_entities: DataFrame, top_entities: int = 3
) -> tuple[DataFrame, DataFrame]:
    """Name, by keyed hash, the entities that bind each farm and each listed account to it.

    Args:
        listed: rows with ``account_id, farm_id, reasons``.
        communities: ``account_id, farm_id``.
        account_entities: ``account_id, entity_type, entity_id`` (ids are keyed hashes).
        top_entities: entities kept per farm.

    Returns:
        ``listed`` with one more reason for farm members ("shares instrument 3fa2... with 211
        other accounts of its farm") and a per-farm table ``farm_id, binding_entities`` (list of
        ``type:hash (n accounts)``, most shared first).
    """
    require_columns(listed, "listed", ("account_id", "farm_id", "reasons"))
    require_columns(communities, "communities", ("account_id", "farm_id"))
    require_columns(
        account_entities, "account_entities", ("account_id", "entity_type", "entity_id")
    )
    farms = listed.where(F.col("farm_id").isNotNull()).select("farm_id").distinct()
    members = communities.join(farms, "farm_id").select("account_id", "farm_id")
    member_entities = members.join(account_entities, "account_id").distinct()
    shared = shared_entities(members, account_entities, "farm_id")
    farm_entities = top_binding_entities(shared, "farm_id", top_entities)
    per_account = Window.partitionBy("account_id").orderBy(
        F.desc("members"), "entity_type", "entity_id"
    )
    strongest = (
        member_entities.join(shared, ["farm_id", "entity_type", "entity_id"])
        .withColumn("_rank", F.row_number().over(per_account))
        .where("_rank = 1")
        .select(
            "account_id",
            F.format_string(
                "shares %s %s with %d other accounts of its farm",
                "entity_type",
                "entity_id",
                F.col("members") - 1,
            ).alias("_evidence"),
        )
    )
    with_evidence = (
        listed.join(strongest, "account_id", "left")
        .withColumn(
            "reasons",
            F.when(
                F.col("_evidence").isNotNull(),
                F.concat("reasons", F.array(F.col("_evidence"))),
            ).otherwise(F.col("reasons")),
        )
        .drop("_evidence")
    )
    return with_evidence, farm_entities


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class RunContext:
    """What identifies a run and goes into its manifest."""

    run_date: str
    model: dict[str, str]
    config_fingerprint: str
    code_version: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """Deterministic: same date, model, config and inputs -> same run id and folder."""
        inputs = json.dumps(self.inputs, sort_keys=True, default=str)
        text = "|".join((self.run_date, self.model["version"], self.config_fingerprint, inputs))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Published:
    """The outcome of :func:`publish`."""

    run_prefix: str
    manifest: dict[str, Any]
    status: str
    in_force: bool
    message: str


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    frame = frame.copy(deep=False)
    frame.attrs = {}  # Spark Connect's toPandas() leaves query metrics here; not file content
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    flat = frame.assign(reasons=frame["reasons"].map(lambda r: " | ".join(r)))
    return flat.to_csv(index=False).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode()


def farm_summary(banlist: pd.DataFrame, farm_entities: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per farm: accounts listed and banned, scores, binding entities and group evidence.

    ``group_evidence`` says what the group does that random groups of its size do not
    (:mod:`jobs.anomaly`), when ``farm_entities`` carries it.
    """
    columns = ["farm_id", "accounts_listed", "accounts_banned", "mean_score", "min_score"]
    farms = banlist[banlist["farm_id"].notna()]
    if farms.empty:
        summary = pd.DataFrame(columns=columns)
    else:
        summary = (
            farms.groupby("farm_id")
            .agg(
                accounts_listed=("account_id", "size"),
                accounts_banned=("action", lambda a: int((a == "ban").sum())),
                mean_score=("score", "mean"),
                min_score=("score", "min"),
            )
            .reset_index()
            .sort_values(["accounts_banned", "farm_id"], ascending=[False, True], ignore_index=True)
        )
    entities = farm_entities if farm_entities is not None else pd.DataFrame(columns=["farm_id"])
    summary = summary.merge(
        entities.reindex(columns=["farm_id", "binding_entities", "group_evidence"]),
        on="farm_id",
        how="left",
    )
    for column in ("binding_entities", "group_evidence"):
        summary[column] = summary[column].map(
            lambda e: list(e) if isinstance(e, list | tuple) or hasattr(e, "tolist") else []
        )
    return summary


def diff_lists(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Account-level changes between two ban lists.

    Returns:
        ``account_id, farm_id, action_before, action_after, change`` where change is ``new``,
        ``dropped``, ``changed`` (different action) or ``unchanged``.
    """
    before = (
        previous[["account_id", "farm_id", "action"]]
        if previous is not None
        else pd.DataFrame(columns=["account_id", "farm_id", "action"])
    ).rename(columns={"action": "action_before", "farm_id": "farm_before"})
    after = current[["account_id", "farm_id", "action"]].rename(columns={"action": "action_after"})
    merged = before.merge(after, on="account_id", how="outer")
    merged["farm_id"] = merged["farm_id"].where(merged["farm_id"].notna(), merged["farm_before"])
    change = pd.Series("unchanged", index=merged.index)
    change[merged["action_before"].isna()] = "new"
    change[merged["action_after"].isna()] = "dropped"
    both = merged["action_before"].notna() & merged["action_after"].notna()
    change[both & (merged["action_before"] != merged["action_after"])] = "changed"
    merged["change"] = change
    return (
        merged[["account_id", "farm_id", "action_before", "action_after", "change"]]
        .sort_values("account_id", ignore_index=True)
        .astype({"action_before": "object", "action_after": "object", "farm_id": "object"})
    )


def _diff_summary(diff: pd.DataFrame, previous_run: str | None) -> dict[str, Any]:
    counts = diff["change"].value_counts().to_dict()
    banned_before = set(diff.loc[diff["action_before"] == "ban", "farm_id"].dropna())
    banned_after = set(diff.loc[diff["action_after"] == "ban", "farm_id"].dropna())
    return {
        "previous_run": previous_run,
        "accounts": {c: int(counts.get(c, 0)) for c in ("new", "dropped", "changed", "unchanged")},
        "farms_with_bans": {
            "new": len(banned_after - banned_before),
            "dropped": len(banned_before - banned_after),
            "unchanged": len(banned_after & banned_before),
        },
    }


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
    """Runs under ``prefix`` (oldest first): date, id, status, counts, key prefix.

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


def breaker_decision(bans: int, history: list[int], settings: BanSettings) -> tuple[bool, str]:
    """Should a run with ``bans`` bans be held, given recent published runs' ban counts?

    Returns:
        (held, reason). The absolute ceiling always applies; the trailing-median rule applies
        once ``breaker_min_history`` runs exist and only above ``breaker_floor`` bans.
    """
    if bans > settings.breaker_max_bans:
        return True, f"{bans} bans exceed the ceiling of {settings.breaker_max_bans}"
    recent = history[-settings.breaker_window_runs :]
    if len(recent) < settings.breaker_min_history:
        return False, f"{len(recent)} earlier run(s): only the ceiling applies"
    median = statistics.median(recent)
    limit = max(settings.breaker_multiple * median, settings.breaker_floor)
    if bans > limit:
        return True, (
            f"{bans} bans exceed {settings.breaker_multiple:g}x the median of the last "
            f"{len(recent)} published runs ({median:g})"
        )
    return False, f"{bans} bans within {limit:g} ({settings.breaker_multiple:g}x median {median:g})"


def publish(
    banlist: pd.DataFrame,
    store: ObjectStore,
    prefix: str,
    context: RunContext,
    bans: BanSettings,
    farm_entities: pd.DataFrame | None = None,
    allowlisted: pd.DataFrame | None = None,
    release_held: bool = False,
) -> Published:
    """Write one run's files, verify them, apply the circuit breaker, then move ``latest.json``.

    Args:
        banlist: rows with :data:`BANLIST_COLUMNS` (allowlisted accounts already removed).
        store: where to write.
        prefix: key prefix (``banlists``).
        context: date, model, code and config versions and input summary of the run.
        bans: score bands and circuit-breaker settings.
        farm_entities: ``farm_id, binding_entities`` from :func:`attach_evidence`.
        allowlisted: allowlisted rows from :func:`apply_allowlist`, reported separately.
        release_held: publish even if the breaker trips (after a human reviewed the run).

    Returns:
        The run's prefix, manifest, status (``published``, ``held`` or ``revoked``), whether it
        is the list in force, and a one-line message.
    """
    missing = [c for c in BANLIST_COLUMNS if c not in banlist.columns]
    if missing:
        raise ValueError(f"ban list is missing column(s) {missing}")
    run_id = context.run_id
    run_prefix = f"{prefix}/dt={context.run_date}/run={run_id}"
    latest = latest_pointer(store, prefix)

    if store.exists(f"{run_prefix}/manifest.json") and store.exists(_status_key(run_prefix)):
        return _rerun(store, prefix, run_prefix, latest, release_held)

    banlist = banlist[list(BANLIST_COLUMNS)].sort_values(
        ["action", "score", "account_id"], ascending=[True, False, True], ignore_index=True
    )
    previous_run, previous = None, None
    if latest is not None and latest["run_id"] != run_id:
        previous_run = latest["prefix"]
        previous = pd.read_parquet(io.BytesIO(store.get(f"{previous_run}/banlist.parquet")))
    diff = diff_lists(previous, banlist)
    allowlisted = (
        allowlisted
        if allowlisted is not None
        else pd.DataFrame(columns=["account_id", "farm_id", "score", "action", "allowlist_rule"])
    )
    allowlisted = allowlisted.reindex(
        columns=["account_id", "farm_id", "score", "action", "allowlist_rule"]
    ).sort_values("account_id", ignore_index=True)
    files = {
        "banlist.parquet": _parquet_bytes(banlist),
        "banlist.csv": _csv_bytes(banlist),
        "farms.parquet": _parquet_bytes(farm_summary(banlist, farm_entities)),
        "diff.parquet": _parquet_bytes(diff),
        "allowlisted.parquet": _parquet_bytes(allowlisted),
    }
    counts = banlist["action"].value_counts().to_dict()
    counts = {a: int(counts.get(a, 0)) for a in ACTIONS}
    recent = list_runs(store, prefix, before=context.run_date, newest=4 * bans.breaker_window_runs)
    history = [r["counts"]["ban"] for r in recent if r["status"] == "published"]
    held, breaker_reason = breaker_decision(counts["ban"], history, bans)
    if held and release_held:
        held, breaker_reason = False, f"released by operator flag: {breaker_reason}"
    for name, data in files.items():
        store.put(f"{run_prefix}/{name}", data)
    for name, data in files.items():
        if _sha(store.get(f"{run_prefix}/{name}")) != _sha(data):
            raise StoreError(f"{run_prefix}/{name} does not read back as written")
    status = "held" if held else "published"
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_date": context.run_date,
        "run_id": run_id,
        "status": status,
        "created_at": _now(),
        "counts": counts,
        "farms_with_bans": int(banlist.loc[banlist["action"] == "ban", "farm_id"].nunique()),
        "allowlisted": {
            "accounts": len(allowlisted),
            "would_have_been_banned": int((allowlisted["action"] == "ban").sum()),
        },
        "breaker": {"held": held, "reason": breaker_reason, "history_bans": history[-7:]},
        "diff": _diff_summary(diff, previous_run),
        "files": {name: {"sha256": _sha(data), "bytes": len(data)} for name, data in files.items()},
        "model": context.model,
        "code_version": context.code_version,
        "config_fingerprint": context.config_fingerprint,
        "inputs": context.inputs,
    }
    store.put(f"{run_prefix}/manifest.json", _json_bytes(manifest))
    _write_status(store, run_prefix, status, {"reason": breaker_reason})
    if held:
        return Published(
            run_prefix, manifest, "held", False, f"HELD, latest.json untouched: {breaker_reason}"
        )
    in_force = latest is None or context.run_date >= latest["run_date"]
    if in_force:
        _point_latest(store, prefix, run_prefix, files_verified=True)
    message = "published" if in_force else f"published (older than {latest['run_date']})"
    return Published(run_prefix, manifest, "published", in_force, message)


def _rerun(
    store: ObjectStore,
    prefix: str,
    run_prefix: str,
    latest: dict[str, Any] | None,
    release_held: bool,
) -> Published:
    """Same date, inputs, model and config as an existing run: write nothing new."""
    manifest = json.loads(store.get(f"{run_prefix}/manifest.json"))
    status = read_status(store, run_prefix)["status"]
    if status == "held" and release_held:
        return release(store, prefix, manifest["run_id"], "released by operator flag")
    if status != "published":
        return Published(
            run_prefix, manifest, status, False, f"identical run already exists and is {status}"
        )
    in_force = latest is None or manifest["run_date"] >= latest["run_date"]
    if in_force and (latest is None or latest["prefix"] != run_prefix):
        _point_latest(store, prefix, run_prefix)
    return Published(run_prefix, manifest, status, in_force, "identical run already published")


def find_run(store: ObjectStore, prefix: str, run_id: str) -> dict[str, Any]:
    """The :func:`list_runs` entry of one run id; ``KeyError`` if there is none."""
    for run in list_runs(store, prefix):
        if run["run_id"] == run_id:
            return run
    raise KeyError(f"no run {run_id!r} under {store.describe()}/{prefix}")


def release(store: ObjectStore, prefix: str, run_id: str, note: str) -> Published:
    """Publish a held run after review: verify it and move ``latest.json`` to it if newest."""
    run = find_run(store, prefix, run_id)
    if run["status"] != "held":
        raise ValueError(f"run {run_id} is {run['status']}, only a held run can be released")
    manifest = json.loads(store.get(f"{run['prefix']}/manifest.json"))
    latest = latest_pointer(store, prefix)
    _write_status(store, run["prefix"], "published", {"reason": note})
    in_force = latest is None or run["run_date"] >= latest["run_date"]
    if in_force:
        _point_latest(store, prefix, run["prefix"])
    return Published(run["prefix"], manifest, "published", in_force, f"released: {note}")


def revoke(store: ObjectStore, prefix: str, run_id: str, reason: str) -> dict[str, Any] | None:
    """Mark a run revoked; if it was in force, point ``latest.json`` at the newest good run.

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
