"""The report stage: what a run found, and on synthetic worlds how right it was.

In: a :class:`jobs.core.stage.StageContext` (the run's ``banlist.parquet`` copy, the lake's
``ground_truth`` when there is one, and in ``ctx.earlier`` the summaries of the ingest, score,
communities and publish stages and the ledger's figures). Out: ``report.json`` under the run's
layout and the summary itself (:func:`jobs.report.summary.build_summary` plus identity,
publish outcome, stage seconds). Called by the nightly flow's report task and the tests.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from jobs.core.stage import StageContext
from jobs.report.summary import build_summary, missing_columns


def run(ctx: StageContext) -> dict[str, Any]:
    """Build and write the run summary; returns it."""
    earlier, layout = ctx.earlier, ctx.layout
    listed = pd.read_parquet(io.BytesIO(layout.banlist.read_bytes()))
    communities = earlier["communities"]
    summary = {
        "run_date": ctx.run_date.isoformat(),
        "model_version": ctx.model_version,
        **build_summary(
            ctx.spark,
            listed,
            earlier["score"]["accounts_scored"],
            communities["farm_candidates"],
            ctx.settings.lake.lake_path,
        ),
        "published": earlier["publish"],
        "missing_columns": missing_columns(earlier.get("ingest", {})),
        "components_backend": communities["components_backend"],
        "stage_seconds": earlier.get("ledger", {}).get("seconds", {}),
        "part_seconds": earlier.get("ledger", {}).get("parts", {}),
        "part_spans": earlier.get("ledger", {}).get("spans", {}),
        "resumed_stages": earlier.get("ledger", {}).get("skipped", []),
        "report_path": str(layout.report),
    }
    layout.report.write_text(json.dumps(summary, indent=2, default=str))
    return summary
