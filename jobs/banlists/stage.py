"""The publish stage: scores -> actions -> allowlist -> farm floor -> evidence -> a verified list.

In: a :class:`jobs.core.stage.StageContext` (the run's ``scores``, ``group_anomaly``,
communities and entities; the champion's version; the ingest stage's counts in
``ctx.earlier["ingest"]``, which the breaker compares with earlier runs'; the ``bans`` and
``publish`` settings and the entity-hash key id; whether an operator released a held list).
Out: a run published to ``publish.target`` (:mod:`jobs.banlists.publish`) with its run report
and drift profile beside the list (:mod:`jobs.report.run_report`), the run's copy
``banlist.parquet`` under its layout, and a summary (where, status, in force, counts, drift
alerts, the report's key). Called
by the nightly flow's publish task and the tests.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.banlists.actions import (
    allowlist_digest,
    apply_allowlist,
    assign_actions,
    attach_evidence,
    hold_small_farms,
    load_allowlist,
)
from jobs.banlists.decisions import decisions_folder
from jobs.banlists.journal import last_key
from jobs.banlists.publish import RunContext, publish
from jobs.communities.stage import load as load_graph
from jobs.communities.stage import load_farm_entities
from jobs.core.stage import StageContext
from jobs.core.store import store_for
from jobs.core.timing import mark
from jobs.ingest.stage import load_accepted
from jobs.report.html import REPORT_FILE
from jobs.report.run_report import report_attachments


def run(ctx: StageContext) -> dict[str, Any]:
    """Actions, allowlist, evidence, then a guarded publish (``latest.json`` moves last)."""
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    # a decision made since a run changes what a re-run of its date must list; read first, so
    # an unreachable store fails the stage (and each retry) before any Spark work
    decisions = last_key(store, decisions_folder(settings.publish.prefix))
    scores = spark.read.parquet(str(layout.scores))
    anomaly = spark.read.parquet(str(layout.group_anomaly))
    listed = assign_actions(scores, settings.bans, anomaly)
    allowlisted = None
    if settings.bans.allowlist is not None:
        signups = load_accepted(spark, layout)["signups"]
        rules = load_allowlist(spark, settings.bans.allowlist)
        listed, allowlisted_rows = apply_allowlist(listed, signups, rules)
        allowlisted = allowlisted_rows.toPandas()
    listed = hold_small_farms(listed, settings.bans)
    graph = load_graph(spark, layout)
    listed, farm_entities = attach_evidence(
        listed, load_farm_entities(spark, layout), settings.graph.binding_entities
    )
    farm_entities = farm_entities.join(
        anomaly.select("farm_id", F.col("evidence").alias("group_evidence")), "farm_id", "left"
    )
    banlist, farm_entities = _with_farm_columns(listed, farm_entities)
    mark("banlist")
    identity = RunContext(
        run_date=ctx.run_date.isoformat(),
        model={"name": settings.model.registered_model, "version": str(ctx.model_version)},
        config_fingerprint=settings.fingerprint(),
        code_version=ctx.code_version,
        inputs={
            "lookback_days": settings.ingest.lookback_days,
            "tables": dict(ctx.earlier.get("ingest", {})),
            "decisions": decisions,
            # so does an edited allowlist (only with one: runs without keep their ids)
            **(
                {"allowlist": allowlist_digest(settings.bans.allowlist)}
                if settings.bans.allowlist is not None
                else {}
            ),
        },
        entity_hash_key_id=settings.entity_hash_key().key_id,
    )
    attach, report = report_attachments(ctx, store, settings.publish.prefix)
    farm_tables = {
        "farm_entities": farm_entities,
        "farm_members": graph["communities"]
        .where(F.col("farm_id").isNotNull())
        .select("account_id", "farm_id")
        .toPandas(),
    }
    mark("farm_tables")
    result = publish(
        banlist,
        store,
        settings.publish.prefix,
        identity,
        settings.bans,
        allowlisted=allowlisted,
        release_held=ctx.release_held,
        attachments=attach,
        **farm_tables,
    )
    mark("publish")  # the lists, the registry and the report written, read back and pointed at
    layout.banlist.write_bytes(banlist.to_parquet(index=False))
    return {
        "prefix": result.run_prefix,
        "store": store.describe(),
        "status": result.status,
        "in_force": result.in_force,
        "message": result.message,
        "run_id": result.manifest["run_id"],
        "allowlisted_would_ban": result.manifest["allowlisted"]["would_have_been_banned"],
        **result.manifest["counts"],
        "report": (
            f"{result.run_prefix}/{REPORT_FILE}"
            if REPORT_FILE in result.manifest["files"]
            else None
        ),
        "drift": report.get("drift"),
    }


FARM_COLUMNS = ("binding_entities", "group_evidence")


def _with_farm_columns(listed: DataFrame, farms: DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The listed rows and their farms' table, from one Spark job.

    Both come from the run's ``farm_entities``: as two jobs, that table was read and ranked
    twice. Every farm of ``farms`` has a listed member, so its row rides on its members' rows
    and is taken back off on the driver.

    Returns:
        ``(banlist, farm_entities)``: the rows of ``listed`` (its columns), and ``farm_id`` with
        :data:`FARM_COLUMNS`, one row per farm.
    """
    extra = [F.col(c).alias(f"_farm_{c}") for c in FARM_COLUMNS]
    rows = listed.join(farms.select("farm_id", *extra), "farm_id", "left").select(
        *listed.columns, *(f"_farm_{c}" for c in FARM_COLUMNS)
    )
    frame = rows.toPandas()
    frame.attrs = {}  # Spark Connect attaches query metrics that pandas cannot serialise
    farm_rows = frame[frame["farm_id"].notna()].drop_duplicates("farm_id", ignore_index=True)
    farm_entities = farm_rows[["farm_id", *(f"_farm_{c}" for c in FARM_COLUMNS)]].rename(
        columns={f"_farm_{c}": c for c in FARM_COLUMNS}
    )
    return frame[list(listed.columns)], farm_entities
