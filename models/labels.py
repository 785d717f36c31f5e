"""Training labels: the ``labels`` table, then what reviewers and appeals decided.

In: the accepted ``labels`` table (``account_id, label, labelled_at, source``) and the
decisions of :mod:`jobs.banlists.decisions` as labels
(:func:`jobs.banlists.decisions.decision_labels`: ``source`` ``reviewer`` or ``appeal``).
Out: one label per account and the counts the MLflow dataset fingerprint records.

Precedence: per account, the **most recent** label wins, whatever its source, so a reviewer
who clears an account that a chargeback once labelled, or an appeal denied after an account
was cleared, is what the model learns; at the **same instant**, a decision wins over the
``labels`` table (a person looked at this account). Called by the training stage
(:mod:`models.stage`) and the tests.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

DECISION_SOURCES = ("reviewer", "appeal")
LABEL_SCHEMA = "account_id string, label int, labelled_at timestamp, source string"


def with_decisions(labels: DataFrame, decisions: pd.DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    """The labels table with the decisions folded in, one row per account.

    Args:
        labels: ``account_id, label, labelled_at`` and optionally ``source``.
        decisions: :func:`jobs.banlists.decisions.decision_labels` rows.

    Returns:
        ``account_id, label, labelled_at, source`` (the winning label of each account) and the
        fingerprint block: decision rows read, accounts whose label a decision gave, and of
        those, how many a decision relabelled (the labels table said otherwise).

    Raises:
        ValueError: a column is missing.
    """
    for name, frame, columns in (
        ("labels", labels.columns, ("account_id", "label", "labelled_at")),
        ("decision labels", decisions.columns, ("account_id", "label", "labelled_at", "source")),
    ):
        missing = [c for c in columns if c not in frame]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}")
    spark = labels.sparkSession
    table = labels.select(
        "account_id",
        F.col("label").cast("int").alias("label"),
        "labelled_at",
        (F.col("source") if "source" in labels.columns else F.lit(None)).cast("string"),
        F.lit(0).alias("_decision"),
    )
    rows = decisions[["account_id", "label", "labelled_at", "source"]]
    decided = spark.createDataFrame(rows, LABEL_SCHEMA) if len(rows) else None
    combined = table
    if decided is not None:
        combined = table.unionByName(decided.withColumn("_decision", F.lit(1)))
    latest = Window.partitionBy("account_id").orderBy(
        F.desc("labelled_at"), F.desc("_decision"), F.desc("label")
    )
    ranked = combined.withColumn("_rank", F.row_number().over(latest))
    winners = ranked.where("_rank = 1").drop("_rank")
    stats = winners.agg(
        F.sum("_decision").alias("accounts"),
    ).first()
    relabelled = 0
    if decided is not None:
        before = table.withColumn(
            "_r",
            F.row_number().over(
                Window.partitionBy("account_id").orderBy(F.desc("labelled_at"), F.desc("label"))
            ),
        ).where("_r = 1")
        relabelled = (
            winners.where("_decision = 1")
            .join(before.select("account_id", F.col("label").alias("_was")), "account_id")
            .where(F.col("_was") != F.col("label"))
            .count()
        )
    fingerprint = {
        "decision_rows": len(rows),
        "accounts_labelled_by_decision": int(stats["accounts"] or 0),
        "accounts_relabelled_by_decision": int(relabelled),
        "by_source": {s: int((rows["source"] == s).sum()) for s in DECISION_SOURCES},
    }
    return winners.drop("_decision"), fingerprint
