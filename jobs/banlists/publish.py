"""Writing one run's ban list: verified files, the circuit breaker, then ``latest.json``.

In: the listed rows of :mod:`jobs.banlists.actions` (pandas), the run's identity
(:class:`RunContext`), :class:`jobs.core.config.BanSettings` and an
:class:`jobs.core.store.ObjectStore` (S3 bucket or local folder: same code, same keys).
Out, under ``<prefix>/`` of the store::

    dt=YYYY-MM-DD/run=<run_id>/banlist.parquet     account_id, farm_id, score, action, reasons,
    dt=YYYY-MM-DD/run=<run_id>/banlist.csv         model_version, stable_farm_id (no raw PII)
    dt=YYYY-MM-DD/run=<run_id>/farms.parquet       per farm: counts, scores, binding entities
    dt=YYYY-MM-DD/run=<run_id>/diff.parquet        vs the list in force: new/dropped/changed
    dt=YYYY-MM-DD/run=<run_id>/allowlisted.parquet allowlisted accounts kept off the list
                                                   (also by a reviewer's or appeal's decision)
    dt=YYYY-MM-DD/run=<run_id>/farm_*.parquet      the farm registry: stable ids, members,
                                                   lineage history (jobs/banlists/registry.py)
    dt=YYYY-MM-DD/run=<run_id>/<attachments>      files the caller adds (the run report)
    dt=YYYY-MM-DD/run=<run_id>/manifest.json       counts, sha256 of every file, model, code,
                                                   config fingerprint, entity-hash key id,
                                                   inputs, breaker, diff
    dt=YYYY-MM-DD/run=<run_id>/status.json         published | held | revoked, with history
    latest.json                                    pointer to the list in force

Guarantees: ``latest.json`` is written last and only after every file of the run has been
written and read back with a matching sha256, so readers never see a partial run and a failed
run leaves the previous list in force. ``run_id`` is a hash of date, model, config, inputs and
entity-hash key id: re-running the same date with the same inputs and model rewrites nothing.
A run that trips the circuit breaker (:mod:`jobs.banlists.breaker`: too many or too few bans,
farms vanishing, a starved input table) is written but ``held`` (``latest.json`` untouched)
until released. ``latest.json`` never moves back to an older date except by a revoke. The diff
against the list in force says when the two lists' entity hashes were made with different
keys. Called by the publish stage (:mod:`jobs.banlists.stage`) and the tests; the registry of
runs (list, release, revoke, verified reads) is :mod:`jobs.banlists.runs`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pandas as pd

from jobs.banlists.actions import ACTIONS
from jobs.banlists.audit import record_action
from jobs.banlists.breaker import judge
from jobs.banlists.decisions import apply_decisions, kept_off, read_decisions
from jobs.banlists.registry import registry_before, registry_files, with_lineage
from jobs.banlists.runs import (
    Published,
    _json_bytes,
    _now,
    _point_latest,
    _sha,
    _status_key,
    _write_status,
    latest_pointer,
    list_runs,
    read_run,
    read_status,
    release,
)
from jobs.core.config import BanSettings
from jobs.core.store import ObjectStore, StoreError

SCHEMA_VERSION = 3
KEY_CHANGED = "entity hash key changed since the list in force"
BANLIST_COLUMNS = ("account_id", "farm_id", "score", "action", "reasons", "model_version")


@dataclass(frozen=True)
class RunContext:
    """What identifies a run and goes into its manifest."""

    run_date: str
    model: dict[str, str]
    config_fingerprint: str
    code_version: str
    inputs: dict[str, Any] = field(default_factory=dict)
    entity_hash_key_id: str = ""
    """:func:`jobs.core.hash_key.key_id` of the key the list's hashes were made with."""

    @property
    def run_id(self) -> str:
        """Deterministic: same date, model, config, inputs and key -> same run id and folder."""
        inputs = json.dumps(self.inputs, sort_keys=True, default=str)
        text = "|".join(
            (
                self.run_date,
                self.model["version"],
                self.config_fingerprint,
                inputs,
                self.entity_hash_key_id,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Draft:
    """What a run is about to publish, shown to attachment writers before anything is written."""

    run_id: str
    run_date: str
    banlist: pd.DataFrame
    farms: pd.DataFrame
    diff_summary: dict[str, Any]
    breaker: dict[str, Any]
    last_night: pd.DataFrame | None
    """The list in force before this run (None on a first run and for a backfill)."""


Attachments = Callable[[Draft], dict[str, bytes]]


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    frame = frame.copy(deep=False)
    frame.attrs = {}  # Spark Connect's toPandas() leaves query metrics here; not file content
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    flat = frame.assign(reasons=frame["reasons"].map(lambda r: " | ".join(r)))
    return flat.to_csv(index=False).encode()


def farm_summary(banlist: pd.DataFrame, farm_entities: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per farm: accounts listed and banned, scores, binding entities and group evidence.

    ``group_evidence`` says what the group does that random groups of its size do not
    (:mod:`jobs.features.anomaly`), when ``farm_entities`` carries it.
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


def publish(
    banlist: pd.DataFrame,
    store: ObjectStore,
    prefix: str,
    context: RunContext,
    bans: BanSettings,
    farm_entities: pd.DataFrame | None = None,
    allowlisted: pd.DataFrame | None = None,
    release_held: bool = False,
    attachments: Attachments | None = None,
    farm_members: pd.DataFrame | None = None,
) -> Published:
    """Write one run's files, verify them, apply the circuit breaker, then move ``latest.json``.

    Args:
        banlist: rows with :data:`BANLIST_COLUMNS` (allowlisted accounts already removed).
        store: where to write.
        prefix: key prefix (``banlists``).
        context: date, model, code and config versions, input summary and key id of the run.
        bans: score bands and circuit-breaker settings.
        farm_entities: ``farm_id, binding_entities`` from :func:`attach_evidence`.
        allowlisted: allowlisted rows from :func:`apply_allowlist`, reported separately.
        release_held: publish even if the breaker trips (after a human reviewed the run).
        attachments: returns more files for the run folder (the run report) from the draft;
            they are written, verified and listed in the manifest like the list itself.
        farm_members: ``account_id, farm_id`` of every farm candidate's members, for the farm
            registry (:mod:`jobs.banlists.registry`); default: the listed members.

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

    # Upheld appeals and not-fraud decisions keep accounts off (jobs/banlists/decisions.py).
    off = kept_off(read_decisions(store, prefix))
    banlist, allowlisted = apply_decisions(banlist[list(BANLIST_COLUMNS)], allowlisted, off)
    banlist = banlist.sort_values(
        ["action", "score", "account_id"], ascending=[True, False, True], ignore_index=True
    )
    previous_run, previous_manifest, previous = None, None, None
    if latest is not None and latest["run_id"] != run_id:
        previous_run = latest["prefix"]
        previous_manifest, previous = read_run(store, previous_run)
    diff = diff_lists(previous, banlist)
    allowlisted = _allowlisted_frame(allowlisted)
    banlist, farms, registry = with_lineage(
        banlist,
        farm_summary(banlist, farm_entities),
        farm_members,
        registry_before(store, prefix, context.run_date),
        context.run_date,
        bans,
    )
    files = {
        "banlist.parquet": _parquet_bytes(banlist),
        "banlist.csv": _csv_bytes(banlist),
        "farms.parquet": _parquet_bytes(farms),
        "diff.parquet": _parquet_bytes(diff),
        "allowlisted.parquet": _parquet_bytes(allowlisted),
        **registry_files(registry),
    }
    earlier = _earlier_runs(store, prefix, context, bans.breaker_history_runs)
    # A backfill is never put in force, so farms vanishing against a newer list lift no ban.
    last_night = previous if latest is not None and latest["run_date"] <= context.run_date else None
    breaker = judge(banlist, last_night, context.inputs, earlier, bans, release_held)
    if attachments is not None:
        draft = Draft(
            run_id,
            context.run_date,
            banlist,
            pd.read_parquet(io.BytesIO(files["farms.parquet"])),
            _diff_summary(diff, previous_run),
            breaker,
            last_night,
        )
        extra = attachments(draft)
        clash = sorted(set(extra) & set(files))
        if clash:
            raise ValueError(f"attachments may not replace the list's own files {clash}")
        files.update(extra)
    _write_verified(store, run_prefix, files)
    held = breaker["held"]
    status = "held" if held else "published"
    manifest = _manifest(context, status, banlist, allowlisted, breaker, files)
    manifest["diff"] = _diff_summary(diff, previous_run)
    manifest["diff"]["entity_hash_key"] = _key_change(previous_manifest, context)
    store.put(f"{run_prefix}/manifest.json", _json_bytes(manifest))
    _write_status(store, run_prefix, status, {"reason": breaker["reason"]})
    record_action(
        store,
        prefix,
        "hold" if held else "publish",
        breaker["reason"],
        "nightly",
        run_id=run_id,
        run_date=context.run_date,
    )
    if held:
        message = f"HELD, latest.json untouched: {breaker['reason']}"
        return Published(run_prefix, manifest, "held", False, message)
    in_force = latest is None or context.run_date >= latest["run_date"]
    if in_force:
        _point_latest(store, prefix, run_prefix, files_verified=True)
    message = "published" if in_force else f"published (older than {latest['run_date']})"
    if manifest["diff"]["entity_hash_key"]["changed"]:
        message += f" ({KEY_CHANGED})"
    return Published(run_prefix, manifest, "published", in_force, message)


def _earlier_runs(
    store: ObjectStore, prefix: str, context: RunContext, newest: int
) -> list[dict[str, Any]]:
    """Runs dated up to this run's date, other than this run (what the breaker compares with).

    Runs of the same date count: re-running a date with other inputs is judged against the run
    it would replace.
    """
    after = (date.fromisoformat(context.run_date) + timedelta(days=1)).isoformat()
    runs = list_runs(store, prefix, before=after, newest=newest)
    return [r for r in runs if r["run_id"] != context.run_id]


def _key_change(previous: dict[str, Any] | None, context: RunContext) -> dict[str, Any]:
    """The diff's ``entity_hash_key`` block: the key ids of both lists and whether they differ.

    The account-level diff compares account ids, farm ids and actions, none of which is hashed,
    so it stays true across a key change; what cannot be matched are the hashes quoted in
    reasons and binding entities. A previous list without a key id counts as another key.
    """
    before = previous.get("entity_hash_key_id") if previous is not None else None
    changed = previous is not None and before != context.entity_hash_key_id
    block: dict[str, Any] = {
        "previous": before,
        "current": context.entity_hash_key_id,
        "changed": changed,
    }
    if changed:
        block["note"] = (
            f"{KEY_CHANGED}: the entity hashes in reasons and binding entities cannot be matched "
            "with the previous list's; account changes compare account ids and actions, which "
            "are not hashed"
        )
    return block


def _manifest(
    context: RunContext,
    status: str,
    banlist: pd.DataFrame,
    allowlisted: pd.DataFrame,
    breaker: dict[str, Any],
    files: dict[str, bytes],
) -> dict[str, Any]:
    """The run's manifest (its ``diff`` block is added by the caller)."""
    counts = banlist["action"].value_counts().to_dict()
    return {
        "schema_version": SCHEMA_VERSION,
        "run_date": context.run_date,
        "run_id": context.run_id,
        "status": status,
        "created_at": _now(),
        "counts": {a: int(counts.get(a, 0)) for a in ACTIONS},
        "farms_with_bans": int(banlist.loc[banlist["action"] == "ban", "farm_id"].nunique()),
        "allowlisted": {
            "accounts": len(allowlisted),
            "would_have_been_banned": int((allowlisted["action"] == "ban").sum()),
        },
        "breaker": breaker,
        "diff": None,
        "files": {name: {"sha256": _sha(data), "bytes": len(data)} for name, data in files.items()},
        "model": context.model,
        "code_version": context.code_version,
        "config_fingerprint": context.config_fingerprint,
        "entity_hash_key_id": context.entity_hash_key_id,
        "inputs": context.inputs,
    }


def _allowlisted_frame(allowlisted: pd.DataFrame | None) -> pd.DataFrame:
    """The allowlisted rows in the published file's columns and order."""
    columns = ["account_id", "farm_id", "score", "action", "allowlist_rule"]
    frame = allowlisted if allowlisted is not None else pd.DataFrame(columns=columns)
    return frame.reindex(columns=columns).sort_values("account_id", ignore_index=True)


def _write_verified(store: ObjectStore, run_prefix: str, files: dict[str, bytes]) -> None:
    """Write every file, then read each back and compare its sha256 (before any manifest)."""
    for name, data in files.items():
        store.put(f"{run_prefix}/{name}", data)
    for name, data in files.items():
        if _sha(store.get(f"{run_prefix}/{name}")) != _sha(data):
            raise StoreError(f"{run_prefix}/{name} does not read back as written")


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
