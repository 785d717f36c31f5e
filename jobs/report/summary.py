"""Run report: what a run found, and (on synthetic worlds) how right it was.

In: the published ban list (pandas), the run's ``scores`` count and, when the lake holds one,
the synthetic ``ground_truth`` table. Out: a summary dict (accounts scored, farm candidates,
farms with bans, bans by action, precision and recall of bans against ground truth, campaign
recall) and its rendering as a short text and a markdown table, both naming the optional input
columns a table lacked (from the ingest counts), the run report's location and the drift alerts
of the publish step. Called by the nightly flow's report task and by
the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def truth_metrics(banned: DataFrame, truth: DataFrame) -> dict[str, float]:
    """Precision and recall of banned accounts against ground truth.

    Args:
        banned: ``account_id`` of accounts with action ``ban``.
        truth: ``account_id, is_farm, is_campaign``.

    Returns:
        ``precision``, ``recall`` (all farm accounts), ``campaign_recall``, ``false_bans``.
    """
    for column in ("account_id", "is_farm", "is_campaign"):
        if column not in truth.columns:
            raise ValueError(f"ground_truth is missing column {column!r}")
    flagged = truth.join(
        banned.select("account_id").withColumn("banned", F.lit(True)), "account_id", "left"
    ).fillna(False, subset=["banned"])
    row = flagged.agg(
        F.sum((F.col("banned") & F.col("is_farm")).cast("long")).alias("tp"),
        F.sum((F.col("banned") & ~F.col("is_farm")).cast("long")).alias("fp"),
        F.sum(F.col("is_farm").cast("long")).alias("farm"),
        F.sum((F.col("banned") & F.col("is_campaign")).cast("long")).alias("camp_tp"),
        F.sum(F.col("is_campaign").cast("long")).alias("camp"),
    ).first()
    tp, fp, farm = row["tp"] or 0, row["fp"] or 0, row["farm"] or 0
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / farm if farm else 0.0,
        "campaign_recall": (row["camp_tp"] or 0) / row["camp"] if row["camp"] else 0.0,
        "false_bans": float(fp),
    }


def _group_purity(joined: DataFrame, group: str, purity: float) -> DataFrame:
    """Per group: campaign-pure, standing alone, farm-pure and its largest farm operator."""
    operator = F.when(F.col("is_farm"), F.col("operator"))
    by_operator = (
        joined.groupBy(group, operator.alias("op"))
        .agg(F.count("*").alias("n"))
        .where(F.col("op").isNotNull())
    )
    top_operator = by_operator.groupBy(group).agg(F.max(F.struct("n", "op")).alias("top"))
    return (
        joined.groupBy(group)
        .agg(
            F.count("*").alias("size"),
            F.sum(F.col("is_campaign").cast("long")).alias("campaign"),
        )
        .join(top_operator, group, "left")
        .select(
            group,
            (F.col("campaign") > F.col("size") * purity).alias("campaign_pure"),
            (F.col("size") == 1).alias("alone"),
            (F.coalesce(F.col("top.n"), F.lit(0)) > F.col("size") * purity).alias("farm_pure"),
            F.col("top.op").alias("top_operator"),
        )
    )


def community_quality(
    communities: DataFrame, truth: DataFrame, group: str = "community_id", purity: float = 0.5
) -> dict[str, float]:
    """How well communities separate farms from legitimate accounts (the issue 3 bars).

    A community is *campaign-pure* when more than ``purity`` of its members are campaign
    accounts, and *farm-pure* when more than ``purity`` belong to one farm operator.

    Args:
        communities: ``account_id`` and the ``group`` column (every account).
        truth: ``account_id, is_farm, is_campaign, operator``.
        group: ``community_id`` (after refinement) or ``component_id`` (before).
        purity: member share that makes a community pure.

    Returns:
        ``campaign_in_campaign_communities`` (share of campaign accounts in campaign-pure
        communities), ``campaign_standing_alone`` (share of campaign accounts in a community of
        their own, which counts as campaign-pure but groups nothing),
        ``legit_in_campaign_communities`` (share of legitimate accounts there),
        ``farm_in_own_operator_communities``, ``legit_in_farm_communities``, and the number of
        groups.
    """
    for column in ("account_id", "is_farm", "is_campaign", "operator"):
        if column not in truth.columns:
            raise ValueError(f"ground_truth is missing column {column!r}")
    joined = communities.select("account_id", group).join(truth, "account_id")
    groups = _group_purity(joined, group, purity)
    row = (
        joined.join(groups, group)
        .agg(
            F.sum(F.col("is_campaign").cast("long")).alias("campaign"),
            F.sum((F.col("is_campaign") & F.col("campaign_pure")).cast("long")).alias("c_in"),
            F.sum((F.col("is_campaign") & F.col("alone")).cast("long")).alias("c_alone"),
            F.sum((~F.col("is_farm")).cast("long")).alias("legit"),
            F.sum((~F.col("is_farm") & F.col("campaign_pure")).cast("long")).alias("l_in_c"),
            F.sum(F.col("is_farm").cast("long")).alias("farm"),
            F.sum(
                (
                    F.col("is_farm")
                    & F.col("farm_pure")
                    & (F.col("operator") == F.col("top_operator"))
                ).cast("long")
            ).alias("f_in"),
            F.sum((~F.col("is_farm") & F.col("farm_pure")).cast("long")).alias("l_in_f"),
            F.countDistinct(group).alias("groups"),
        )
        .first()
    )

    def share(part: str, whole: str) -> float:
        return (row[part] or 0) / row[whole] if row[whole] else 0.0

    return {
        "campaign_in_campaign_communities": share("c_in", "campaign"),
        "campaign_standing_alone": share("c_alone", "campaign"),
        "legit_in_campaign_communities": share("l_in_c", "legit"),
        "farm_in_own_operator_communities": share("f_in", "farm"),
        "legit_in_farm_communities": share("l_in_f", "legit"),
        "groups": float(row["groups"]),
    }


def build_summary(
    spark: SparkSession,
    banlist: pd.DataFrame,
    accounts_scored: int,
    farm_candidates: int,
    lake: Path,
) -> dict[str, Any]:
    """Summary figures of one run, with ground-truth metrics when the world has them."""
    actions = banlist["action"].value_counts().to_dict() if len(banlist) else {}
    bans = banlist[banlist["action"] == "ban"]
    summary: dict[str, Any] = {
        "accounts_scored": accounts_scored,
        "farm_candidates": farm_candidates,
        "farms_with_bans": int(bans["farm_id"].nunique()),
        "banned": int(actions.get("ban", 0)),
        "review": int(actions.get("review", 0)),
        "watch": int(actions.get("watch", 0)),
    }
    truth_path = lake / "ground_truth"
    if truth_path.exists():
        banned = spark.createDataFrame(bans[["account_id"]].astype(str), "account_id string")
        summary["ground_truth"] = truth_metrics(banned, spark.read.parquet(str(truth_path)))
    return summary


def missing_columns(ingest_counts: dict[str, Any]) -> dict[str, list[str]]:
    """The optional columns each input table lacked (ingest filled them with null)."""
    return {
        table: list(counts["missing_columns"])
        for table, counts in ingest_counts.items()
        if counts.get("missing_columns")
    }


def render_text(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"accounts scored : {summary['accounts_scored']:,}",
        f"farm candidates : {summary['farm_candidates']:,} "
        f"({summary['farms_with_bans']:,} with bans)",
        f"accounts banned : {summary['banned']:,} (review {summary['review']:,}, "
        f"watch {summary['watch']:,})",
    ]
    published = summary.get("published")
    if published:
        lines.append(f"ban list        : {published['message']}")
        if published.get("allowlisted_would_ban"):
            lines.append(
                f"allowlisted     : {published['allowlisted_would_ban']:,} would-be bans kept off"
            )
    if published and published.get("report"):
        lines.append(f"run report      : {published['store']}/{published['report']}")
    for alert in drift_alerts(summary):
        lines.append(f"DRIFT ALERT     : {alert}")
    missing = [
        f"{table}.{column}"
        for table, columns in (summary.get("missing_columns") or {}).items()
        for column in columns
    ]
    if missing:
        lines.append(f"missing columns : {', '.join(missing)} (optional; read as null)")
    truth = summary.get("ground_truth")
    if truth:
        lines.append(
            f"vs ground truth : precision {truth['precision']:.4f}, recall {truth['recall']:.4f},"
            f" campaign recall {truth['campaign_recall']:.4f}, false bans "
            f"{int(truth['false_bans'])}"
        )
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any]) -> str:
    """A markdown table for the Prefect artifact."""
    rows = [(k, v) for k, v in summary.items() if not isinstance(v, dict)]
    published = summary.get("published") or {}
    for key in ("status", "message", "store", "prefix", "report"):
        if key in published:
            rows.append((f"ban_list.{key}", published[key]))
    drift = published.get("drift") or {}
    if drift:
        rows.append(("drift.score_psi", drift["score_psi"]))
        rows.append(("drift.farms_lost_share", drift["farms"]["share_lost"]))
        top = next(iter(drift["features"].items()), None)
        if top:
            rows.append(("drift.top_feature_psi", f"{top[0]} {top[1]}"))
    for table, columns in (summary.get("missing_columns") or {}).items():
        rows.append((f"missing_columns.{table}", ", ".join(columns)))
    for key, value in (summary.get("ground_truth") or {}).items():
        rows.append((f"ground_truth.{key}", round(value, 4)))
    for key, value in (summary.get("stage_seconds") or {}).items():
        rows.append((f"seconds.{key}", round(value, 1)))
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    alerts = "".join(f"\n- **drift alert**: {a}" for a in drift_alerts(summary))
    return "| figure | value |\n|---|---|\n" + body + ("\n" + alerts if alerts else "")


def drift_alerts(summary: dict[str, Any]) -> list[str]:
    """The drift alerts the publish step raised for this run (:mod:`jobs.report.drift`)."""
    return list(((summary.get("published") or {}).get("drift") or {}).get("alerts") or [])
