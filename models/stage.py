"""The training stage: a run's features and labels -> a registered model pair.

In: a :class:`jobs.core.stage.StageContext` (the run's ``features``, accepted ``labels`` and
``communities``, the ``model`` and ``bans`` settings) and the reviewers' and appeals' decisions
on the ban-list store (:mod:`jobs.banlists.decisions`, folded in by :mod:`models.labels`).
Out: a new model version in the MLflow registry (:func:`models.registry.train_and_register`:
alias ``challenger``, ``champion`` when it passes the promotion gate) and the training summary.
Called by the training flow's task and the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from pyspark.sql import DataFrame

from jobs.banlists.decisions import decision_labels, read_decisions
from jobs.core.stage import StageContext
from jobs.core.store import store_for
from models.farm_model import build_training_set
from models.labels import with_decisions
from models.registry import train_and_register


def training_labels(ctx: StageContext) -> tuple[DataFrame, dict[str, Any]]:
    """The accepted ``labels`` with the decisions made up to the end of the run date folded in.

    Decisions are read from the ban-list store (``publish.target``); their time is when they
    were decided, so a model trained as of a date learns only what was decided by then.
    """
    settings = ctx.settings
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    day_end = datetime.combine(ctx.run_date + timedelta(days=1), time(), UTC)
    decided = decision_labels(read_decisions(store, settings.publish.prefix), until=day_end)
    return with_decisions(ctx.spark.read.parquet(str(ctx.layout.accepted("labels"))), decided)


def run(ctx: StageContext) -> dict[str, Any]:
    """Build the time-split training set, train both models, register, apply the gate.

    The known-bad community features are recomputed as of the split's cut-off from the run's
    communities table, so no row sees labels given after it. Decisions made up to the end of
    the run date are labels too (the latest label of an account wins); the dataset fingerprint
    counts them under ``decisions``.
    """
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    labels, decisions = training_labels(ctx)
    training = build_training_set(
        spark.read.parquet(str(layout.features)),
        labels,
        settings.model.test_fraction_by_time,
        spark.read.parquet(str(layout.communities)),
    )
    training.fingerprint["decisions"] = decisions
    return train_and_register(
        training,
        settings.model,
        settings.model.tracking_uri_for(settings.home),
        settings.bans.ban_threshold,
        run_tags={
            "run_date": ctx.run_date.isoformat(),
            "config_fingerprint": settings.fingerprint(),
        },
        artifact_location=settings.model.artifact_location_for(settings.home),
    )
