"""The run report's inputs, gathered where the list is published: profile, drift, farm graphs.

In: a :class:`jobs.core.stage.StageContext` of the publish stage (the run's ``features``,
``scores``, ``communities``, ``account_entities`` and accepted ``signups``; the ingest counts in
``ctx.earlier["ingest"]``; the ``report`` settings), the store and prefix the list goes to, and
the :class:`jobs.banlists.publish.Draft` the publish step shows before writing. Out: the files
published beside the list (``report.html``, ``profile.json``: quantiles only, no accounts) and
the outcome the stage summary carries (drift figures and alerts, the report's key). Called by
the publish stage (:mod:`jobs.banlists.stage`) through :func:`report_attachments`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pyspark.sql import functions as F

from jobs.banlists.publish import Attachments, Draft
from jobs.communities.stage import load_farm_entities
from jobs.core.stage import StageContext
from jobs.core.store import ObjectStore
from jobs.core.timing import mark
from jobs.features.table import FEATURE_COLUMNS
from jobs.report.drift import (
    PROFILE_FILE,
    SCORE_KEY,
    bans_by_farm_age,
    farm_age_days,
    farm_loss,
    judge_drift,
    quantile_profile,
    trailing_profiles,
)
from jobs.report.farm_graphs import binding_edges, sample_members
from jobs.report.html import REPORT_FILE, ReportData, render


def _from_summary(ctx: StageContext, stage: str, key: str, count: Callable[[], int]) -> int:
    """A figure an earlier stage of this run already counted; counted here only when run alone."""
    summary = ctx.earlier.get(stage) or {}
    return int(summary[key]) if key in summary else count()


def report_attachments(
    ctx: StageContext, store: ObjectStore, prefix: str
) -> tuple[Attachments, dict[str, Any]]:
    """The attachment writer for :func:`jobs.banlists.publish.publish`, and its outcome.

    Returns:
        ``(attach, outcome)``: ``attach(draft)`` returns the report files; once it has run,
        ``outcome`` holds ``report`` (the file name), ``drift`` (:func:`judge_drift`) and
        ``bans_by_farm_age``.
    """
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    outcome: dict[str, Any] = {}

    def attach(draft: Draft) -> dict[str, bytes]:
        mark("draft")  # publish's checks, diff and registry before the report's first part
        features = spark.read.parquet(str(layout.features))
        scores = spark.read.parquet(str(layout.scores))
        communities = spark.read.parquet(str(layout.communities))
        relative_error = settings.report.profile_relative_error
        profile = {
            "run_date": draft.run_date,
            "accounts": _from_summary(ctx, "score", "accounts_scored", scores.count),
            "features": quantile_profile(features, FEATURE_COLUMNS, relative_error),
            SCORE_KEY: quantile_profile(scores, [SCORE_KEY], relative_error)[SCORE_KEY],
        }
        trailing = trailing_profiles(
            store, prefix, draft.run_date, draft.run_id, settings.report.trailing_runs
        )
        loss = farm_loss(draft.last_night, draft.banlist, settings.report.farm_shrink_ratio)
        drift = judge_drift(profile, trailing, loss, settings.report)
        mark("report_profile")
        signups = spark.read.parquet(str(layout.accepted("signups")))
        ages = farm_age_days(signups, communities, ctx.run_date).toPandas()
        by_age = bans_by_farm_age(draft.banlist, ages)
        drawn = draft.farms.head(settings.report.max_farms_drawn)["farm_id"].tolist()
        members = sample_members(communities, scores, drawn, settings.report.max_members_per_farm)
        # the drawn members are a few hundred rows: computed once, then joined to the entities
        members_pd = members.toPandas()
        edges = binding_edges(
            spark.createDataFrame(members_pd, schema=members.schema),
            load_farm_entities(spark, layout),
            settings.report.max_entities_per_farm,
        ).toPandas()
        mark("report_farms")
        order = {farm: i for i, farm in enumerate(drawn)}
        members_pd = members_pd.sort_values(
            ["farm_id", "score", "account_id"],
            key=lambda c: c.map(order) if c.name == "farm_id" else c,
            ascending=[True, False, True],
            ignore_index=True,
        )
        data = ReportData(
            run={
                "run_date": draft.run_date,
                "run_id": draft.run_id,
                "status": "held" if draft.breaker["held"] else "published",
                "message": draft.breaker["reason"],
                "breaker_reason": draft.breaker["reason"],
                "model_version": ctx.model_version,
                "accounts_scored": profile["accounts"],
                "farm_candidates": _from_summary(
                    ctx,
                    "communities",
                    "farm_candidates",
                    communities.where(F.col("farm_id").isNotNull())
                    .select("farm_id")
                    .distinct()
                    .count,
                ),
            },
            banlist=draft.banlist,
            farms=draft.farms,
            members=members_pd,
            edges=edges,
            diff_summary=draft.diff_summary,
            ingest=dict(ctx.earlier.get("ingest", {})),
            profile=profile,
            trailing=trailing,
            drift=drift,
            farm_loss=loss,
            bans_by_age=by_age,
            settings=settings.report,
        )
        outcome.update(
            report=REPORT_FILE,
            drift=drift,
            bans_by_farm_age=by_age.to_dict(orient="records"),
        )
        page = render(data)
        mark("report_page")
        return {
            REPORT_FILE: page,
            PROFILE_FILE: json.dumps(profile, indent=1, sort_keys=True).encode(),
        }

    return attach, outcome
