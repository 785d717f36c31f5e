"""The nightly Prefect flow: ingest -> graph/communities -> features -> score -> publish -> report.

In: a run date (default: the world's end date or yesterday), a look-back window and an optional
config file. Out: a ban list published under the target (see :mod:`jobs.publish`), a run report
``<run_dir>/report.json``, a Prefect markdown artifact, and the summary dict it returns. One
Prefect task per stage; only the stages that talk to the MLflow registry or write the ban list
retry. Called by ``farmwatch nightly`` and ``farmwatch demo``. Prefect runs it without a
separately started server (a temporary local one).
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import code_version, resolve_run_date, run_dir_for, settings_for, spark_for
from jobs import communities, features, ingest, publish, report
from jobs.config import Settings
from jobs.score import score_accounts
from jobs.store import StoreError, StoreUnavailable, store_for
from models.farm_model import load_champion


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(settings: Settings, run_date: str, run_dir: Path) -> dict[str, Any]:
    """Validate inputs; accepted and quarantined rows are written under the run folder."""
    counts = ingest.run(
        spark_for(settings), settings, datetime.fromisoformat(run_date).date(), run_dir
    )
    log = get_run_logger()
    for c in counts.values():
        log.info(
            "%s: read %d, accepted %d, quarantined %d, outside window %d",
            c.table,
            c.read,
            c.accepted,
            c.quarantined,
            c.out_of_window,
        )
    return {name: dataclasses.asdict(c) for name, c in counts.items()}


@task(name="communities", cache_policy=NO_CACHE)
def communities_task(settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Account graph, connected components and farm candidates."""
    spark = spark_for(settings)
    summary = communities.run(spark, settings, ingest.load_accepted(spark, run_dir), run_dir)
    get_run_logger().info("communities: %s", summary)
    return summary


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, run_date: str, run_dir: Path) -> int:
    """Account and community features; returns the number of accounts."""
    spark = spark_for(settings)
    window_end = datetime.fromisoformat(run_date) + timedelta(days=1)
    table = features.run(
        spark,
        ingest.load_accepted(spark, run_dir),
        communities.load(spark, run_dir),
        window_end,
        run_dir,
    )
    return table.count()


@task(name="load-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def load_champion_task(settings: Settings) -> tuple[Any, str]:
    """The registry's champion (retried: the tracking server may blip)."""
    return load_champion(settings.model, settings.model.tracking_uri_for(settings.home))


@task(name="score", cache_policy=NO_CACHE)
def score_task(settings: Settings, run_dir: Path, booster: Any, version: str) -> int:
    """Score every account inside Spark; writes ``<run_dir>/scores``."""
    spark = spark_for(settings)
    table = spark.read.parquet(str(run_dir / "features"))
    scored = score_accounts(table, booster, version, settings.model.reasons_per_account)
    scored.write.mode("overwrite").parquet(str(run_dir / "scores"))
    return spark.read.parquet(str(run_dir / "scores")).count()


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can fix: an unreachable store, not a denied bucket or bad data."""
    try:
        state.result()
    except StoreUnavailable:
        return True
    except StoreError:
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 (bad data or a bug: retrying gives the same answer)
        return False
    return False


@task(
    name="publish",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=_transient,
)
def publish_task(
    settings: Settings,
    run_date: str,
    run_dir: Path,
    version: str,
    ingest_counts: dict[str, Any],
    release_held: bool,
) -> dict[str, Any]:
    """Actions, allowlist, evidence, then a guarded publish (``latest.json`` moves last)."""
    spark = spark_for(settings)
    scores = spark.read.parquet(str(run_dir / "scores"))
    listed = publish.assign_actions(scores, settings.bans)
    allowlisted = None
    if settings.bans.allowlist is not None:
        accepted = ingest.load_accepted(spark, run_dir)
        rules = publish.load_allowlist(spark, settings.bans.allowlist)
        listed, allowlisted_df = publish.apply_allowlist(listed, accepted["signups"], rules)
        allowlisted = allowlisted_df.toPandas()
    graph = communities.load(spark, run_dir)
    listed, farm_entities = publish.attach_evidence(
        listed, graph["communities"], graph["account_entities"]
    )
    banlist = listed.toPandas()
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    context = publish.RunContext(
        run_date=run_date,
        model={"name": settings.model.registered_model, "version": version},
        config_fingerprint=settings.fingerprint(),
        code_version=code_version(),
        inputs={"lookback_days": settings.ingest.lookback_days, "tables": ingest_counts},
    )
    result = publish.publish(
        banlist,
        store,
        settings.publish.prefix,
        context,
        settings.bans,
        farm_entities=farm_entities.toPandas(),
        allowlisted=allowlisted,
        release_held=release_held,
    )
    banlist.to_parquet(run_dir / "banlist.parquet", index=False)
    log = get_run_logger()
    (log.warning if result.status != "published" else log.info)("publish: %s", result.message)
    return {
        "prefix": result.run_prefix,
        "store": store.describe(),
        "status": result.status,
        "in_force": result.in_force,
        "message": result.message,
        "allowlisted_would_ban": result.manifest["allowlisted"]["would_have_been_banned"],
        **result.manifest["counts"],
    }


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    settings: Settings,
    run_dir: Path,
    scored: int,
    graph_summary: dict[str, Any],
    published: dict[str, Any],
    stage_seconds: dict[str, float],
) -> dict[str, Any]:
    """Summary figures, ground-truth metrics on synthetic worlds, and a Prefect artifact."""
    import pandas as pd

    spark = spark_for(settings)
    listed = pd.read_parquet(run_dir / "banlist.parquet")
    summary = report.build_summary(
        spark, listed, scored, graph_summary["farm_candidates"], settings.lake.lake_path
    )
    summary.update(
        published=published,
        components_backend=graph_summary["components_backend"],
        stage_seconds=stage_seconds,
    )
    (run_dir / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    create_markdown_artifact(
        key="farmwatch-nightly",
        markdown=report.render_markdown(summary),
        description="farmwatch nightly run summary",
    )
    return summary


@flow(name="farmwatch-nightly", log_prints=True)
def nightly_flow(
    run_date: str | None = None,
    lookback_days: int | None = None,
    config_file: str | None = None,
    release_held: bool = False,
) -> dict[str, Any]:
    """Run the whole nightly batch for one date and return its summary.

    Args:
        run_date: ``YYYY-MM-DD``; default the world's end date or yesterday.
        lookback_days: override of ``ingest.lookback_days``.
        config_file: TOML config file.
        release_held: publish even if the circuit breaker trips (after a human review).
    """
    settings = settings_for(config_file)
    if lookback_days is not None:
        settings = settings.model_copy(
            update={"ingest": settings.ingest.model_copy(update={"lookback_days": lookback_days})}
        )
    day = resolve_run_date(settings, run_date).isoformat()
    run_dir = run_dir_for(settings, datetime.fromisoformat(day).date())
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        seconds[name] = time.perf_counter() - start
        return result

    counts = timed("ingest", ingest_task, settings, day, run_dir)
    graph_summary = timed("communities", communities_task, settings, run_dir)
    timed("features", features_task, settings, day, run_dir)
    booster, version = timed("load_champion", load_champion_task, settings)
    scored = timed("score", score_task, settings, run_dir, booster, version)
    published = timed(
        "publish", publish_task, settings, day, run_dir, version, counts, release_held
    )
    summary = report_task(settings, run_dir, scored, graph_summary, published, seconds)
    summary.update(run_date=day, model_version=version, ingest=counts)
    return summary
