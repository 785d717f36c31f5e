"""What the nightly and training flows share: context, ledger and the first four stages.

The four stages both run are ingest, graph, communities and features.

In: the settings and a run date. Out: the :class:`jobs.core.stage.StageContext` every task
builds, the run's :class:`flows.ledger.StageLedger` (resuming finished stages), and the Prefect
tasks of the shared stages, each a few lines around the stage's ``run(ctx)``. Called by
:mod:`flows.nightly` and :mod:`flows.training`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.ledger import StageLedger, input_digest
from flows.runtime import code_version, layout_for, spark_for
from jobs.communities import stage as communities
from jobs.core.config import Settings
from jobs.core.stage import StageContext
from jobs.features import stage as features
from jobs.graph import stage as graph
from jobs.ingest import stage as ingest


def stage_context(settings: Settings, day: str, **extra: Any) -> StageContext:
    """The context a stage of the run dated ``day`` runs with (``extra``: model, earlier...)."""
    run_date = date.fromisoformat(day)
    return StageContext(
        spark_for(settings),
        settings,
        layout_for(settings, run_date),
        run_date,
        code_version=code_version(),
        **extra,
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(settings: Settings, day: str) -> dict[str, Any]:
    """Validate inputs; accepted and quarantined rows go under the run folder."""
    counts = ingest.run(stage_context(settings, day))
    log = get_run_logger()
    for name, c in counts.items():
        log.info(
            "%s: read %d, accepted %d, quarantined %d, outside window %d%s",
            name,
            c["read"],
            c["accepted"],
            c["quarantined"],
            c["out_of_window"],
            f"; optional columns missing (null): {c['missing_columns']}"
            if c.get("missing_columns")
            else "",
        )
    return counts


@task(name="graph", cache_policy=NO_CACHE)
def graph_task(settings: Settings, day: str) -> dict[str, Any]:
    """Account graph: entities (keyed hashes), entity stats with hubs, star links."""
    summary = graph.run(stage_context(settings, day))
    get_run_logger().info("graph: %s", summary)
    return summary


@task(name="communities", cache_policy=NO_CACHE)
def communities_task(settings: Settings, day: str) -> dict[str, Any]:
    """Connected components, communities and farm candidates."""
    summary = communities.run(stage_context(settings, day))
    get_run_logger().info("communities: %s", summary)
    return summary


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, day: str) -> dict[str, Any]:
    """Account, neighbourhood and group features."""
    summary = features.run(stage_context(settings, day))
    get_run_logger().info("features: %s", summary)
    return summary


def prepare_run(settings: Settings, day: str, resume: bool | None) -> StageLedger:
    """The stage ledger of one run date (resumes finished stages unless told not to)."""
    # where the allowlist lives changes only what publish lists (its own key has the file's
    # digest): adding one resumes the stages before it
    upstream = settings.model_copy(
        update={"bans": settings.bans.model_copy(update={"allowlist": None})}
    )
    seed = "|".join(
        (
            upstream.fingerprint(),
            day,
            str(settings.ingest.lookback_days),
            input_digest(settings.lake.lake_path),
        )
    )
    layout = layout_for(settings, date.fromisoformat(day))
    return StageLedger(
        layout.stages, seed, settings.orchestration.resume if resume is None else resume
    )


def prepare_features(ledger: StageLedger, settings: Settings, day: str) -> dict[str, Any]:
    """Run the four shared stages; returns their summaries by stage name."""
    return {
        "ingest": ledger.run("ingest", ingest_task, settings, day),
        "graph": ledger.run("graph", graph_task, settings, day),
        "communities": ledger.run("communities", communities_task, settings, day),
        "features": ledger.run("features", features_task, settings, day),
    }
