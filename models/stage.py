"""The training stage: a run's features and labels -> a registered model pair.

In: a :class:`jobs.core.stage.StageContext` (the run's ``features``, accepted ``labels`` and
``communities``, the ``model`` and ``bans`` settings). Out: a new model version in the MLflow
registry (:func:`models.registry.train_and_register`: alias ``challenger``, ``champion`` when it
passes the promotion gate) and the training summary. Called by the training flow's task and
the tests.
"""

from __future__ import annotations

from typing import Any

from jobs.core.stage import StageContext
from models.farm_model import build_training_set
from models.registry import train_and_register


def run(ctx: StageContext) -> dict[str, Any]:
    """Build the time-split training set, train both models, register, apply the gate.

    The known-bad community features are recomputed as of the split's cut-off from the run's
    communities table, so no row sees labels given after it.
    """
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    training = build_training_set(
        spark.read.parquet(str(layout.features)),
        spark.read.parquet(str(layout.accepted("labels"))),
        settings.model.test_fraction_by_time,
        spark.read.parquet(str(layout.communities)),
    )
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
