"""The score stage: the features table and the champion -> scores, reasons, own evidence.

In: a :class:`jobs.core.stage.StageContext` carrying the champion (``ctx.model``: its account
and combined boosters) and its version, the run's ``features`` and ``feature_reference.json``,
the ``model`` and ``bans`` settings. Out: ``scores`` under the run's layout
(:data:`jobs.scoring.score.SCORE_SCHEMA`) and a summary (accounts scored, how the features were
read). Called by the nightly flow's score task and the tests.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.core.lake import persist
from jobs.core.stage import StageContext
from jobs.scoring.explain import ReasonSettings
from jobs.scoring.score import score_parquet


def run(ctx: StageContext) -> dict[str, Any]:
    """Score every account inside Spark; returns the count and the way the features were read."""
    if ctx.model is None or ctx.model_version is None:
        raise ValueError("the score stage needs the champion model and its version")
    settings, layout = ctx.settings, ctx.layout
    reasons = ReasonSettings(
        top_n=settings.model.reasons_per_account,
        min_score=settings.bans.watch_threshold,
        own_min_score=settings.bans.own_evidence_min_score,
        reference=json.loads(layout.feature_reference.read_text()),
    )
    scored, way = score_parquet(
        ctx.spark,
        str(layout.features),
        ctx.model,
        ctx.model_version,
        reasons,
        settings.model.evaluator,
    )
    scores = persist(scored, layout.scores)
    return {"accounts_scored": scores.count(), "features_read_as": way}
