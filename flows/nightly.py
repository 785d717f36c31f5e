"""The nightly Prefect flow: ingest, graph, communities, features, score, publish, report.

In: a run date (default: the world's end date or yesterday), a look-back window, an optional
config file (the profile) and whether to release a run the circuit breaker would hold. Out: a
ban list published under the target (see :mod:`jobs.publish`), a run report
``<run_dir>/report.json``, a Prefect markdown artifact, and the summary dict it returns.

One Prefect task per stage. Only the steps that do I/O that can fail transiently (loading the
champion from the MLflow registry, publishing) retry, with backoff from
``orchestration.io_retry_delays_seconds``. A run holds ``<home>/run.lock`` so two runs never
overlap, and records each finished stage (:mod:`flows.stages`) so a retried or re-run date
resumes after the last finished stage. A failure POSTs to ``orchestration.webhook_url`` (as does
a held ban list). Called by ``farmwatch nightly``, ``farmwatch demo``, backfills and the
``nightly`` deployment (:mod:`flows.serve`). Prefect runs it without a separately started
server (a temporary local one) unless ``PREFECT_API_URL`` names one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pyspark.sql import functions as F

from flows.notify import notify
from flows.runtime import code_version, resolve_run_date, run_dir_for, settings_for, spark_for
from flows.stages import StageLedger, input_digest, run_lock
from jobs import communities, features, ingest, publish, report
from jobs.config import Settings
from jobs.score import ReasonSettings, score_parquet
from jobs.store import StoreError, StoreUnavailable, store_for
from models.registry import load_champion


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


@task(name="graph", cache_policy=NO_CACHE)
def graph_task(settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Account graph: entities (keyed hashes), entity stats with hubs, star links."""
    spark = spark_for(settings)
    summary = communities.build_graph(
        spark, settings, ingest.load_accepted(spark, run_dir), run_dir
    )
    get_run_logger().info("graph: %s", summary)
    return summary


@task(name="communities", cache_policy=NO_CACHE)
def communities_task(settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Connected components and farm candidates."""
    spark = spark_for(settings)
    accounts = ingest.load_accepted(spark, run_dir)["signups"]
    summary = communities.find_communities(spark, settings, accounts, run_dir)
    get_run_logger().info("communities: %s", summary)
    return summary


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, run_date: str, run_dir: Path) -> int:
    """Account, neighbourhood and group features; returns the number of accounts."""
    spark = spark_for(settings)
    window_end = datetime.fromisoformat(run_date) + timedelta(days=1)
    table = features.run(
        spark,
        settings,
        ingest.load_accepted(spark, run_dir),
        communities.load(spark, run_dir),
        window_end,
        run_dir,
    )
    return table.count()


@task(name="load-champion", cache_policy=NO_CACHE)
def load_champion_task(settings: Settings) -> tuple[Any, str]:
    """The registry's champion (retried: the tracking server may blip)."""
    return load_champion(settings.model, settings.model.tracking_uri_for(settings.home))


@task(name="score", cache_policy=NO_CACHE)
def score_task(settings: Settings, run_dir: Path, model: Any, version: str) -> int:
    """Score every account inside Spark; writes ``<run_dir>/scores``."""
    spark = spark_for(settings)
    reasons = ReasonSettings(
        top_n=settings.model.reasons_per_account,
        min_score=settings.bans.watch_threshold,
        own_min_score=settings.bans.own_evidence_min_score,
        reference=json.loads((run_dir / "feature_reference.json").read_text()),
    )
    scored, way = score_parquet(
        spark, str(run_dir / "features"), model, version, reasons, settings.model.evaluator
    )
    get_run_logger().info(
        "scored with the %s trees, features read as %s", settings.model.evaluator, way
    )
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


@task(name="publish", cache_policy=NO_CACHE, retry_condition_fn=_transient)
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
    anomaly = spark.read.parquet(str(run_dir / "group_anomaly"))
    listed = publish.assign_actions(scores, settings.bans, anomaly)
    allowlisted = None
    if settings.bans.allowlist is not None:
        accepted = ingest.load_accepted(spark, run_dir)
        rules = publish.load_allowlist(spark, settings.bans.allowlist)
        listed, allowlisted_df = publish.apply_allowlist(listed, accepted["signups"], rules)
        allowlisted = allowlisted_df.toPandas()
    graph = communities.load(spark, run_dir)
    listed, farm_entities = publish.attach_evidence(
        listed, graph["communities"], graph["account_entities"], settings.graph.binding_entities
    )
    farm_entities = farm_entities.join(
        anomaly.select("farm_id", F.col("evidence").alias("group_evidence")), "farm_id", "left"
    )
    banlist = listed.toPandas()
    banlist.attrs = {}  # Spark Connect attaches query metrics that pandas cannot serialise
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
    (run_dir / "banlist.parquet").write_bytes(banlist.to_parquet(index=False))
    log = get_run_logger()
    (log.warning if result.status != "published" else log.info)("publish: %s", result.message)
    if result.status == "held":
        notify(
            settings.orchestration.webhook_url,
            "banlist_held",
            result.message,
            run_date=run_date,
            run_id=result.manifest["run_id"],
            prefix=result.run_prefix,
            store=store.describe(),
        )
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
    ledger: dict[str, Any],
    identity: dict[str, str],
) -> dict[str, Any]:
    """Summary figures, ground-truth metrics on synthetic worlds, and a Prefect artifact.

    ``identity`` carries ``run_date`` and ``model_version`` (first rows of the artifact).
    """
    import pandas as pd

    spark = spark_for(settings)
    listed = pd.read_parquet(io.BytesIO((run_dir / "banlist.parquet").read_bytes()))
    summary = report.build_summary(
        spark, listed, scored, graph_summary["farm_candidates"], settings.lake.lake_path
    )
    summary = {**identity, **summary}
    summary.update(
        published=published,
        components_backend=graph_summary["components_backend"],
        stage_seconds=ledger["seconds"],
        resumed_stages=ledger["skipped"],
        report_path=str(run_dir / "report.json"),
    )
    (run_dir / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    create_markdown_artifact(
        key="farmwatch-nightly",
        markdown=report.render_markdown(summary),
        description="farmwatch nightly run summary",
    )
    return summary


def _on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Failure hook: tell the on-call channel which run failed and why."""
    parameters = dict(getattr(flow_run, "parameters", {}) or {})
    try:
        settings = settings_for(parameters.get("config_file"))
    except Exception:  # noqa: BLE001 (a broken config must not hide the failure itself)
        return
    notify(
        settings.orchestration.webhook_url,
        "run_failed",
        state.message or "the nightly run failed",
        flow=flow.name,
        flow_run=getattr(flow_run, "name", None),
        run_date=parameters.get("run_date"),
    )


def io_task(task_fn: Any, settings: Settings) -> Any:
    """A task with the configured retries and backoff (only for steps doing fallible I/O)."""
    return task_fn.with_options(
        retries=settings.orchestration.io_retries,
        retry_delay_seconds=list(settings.orchestration.io_retry_delays_seconds),
    )


def prepare_run(settings: Settings, day: str, run_dir: Path, resume: bool | None) -> StageLedger:
    """The stage ledger of one run date (resumes finished stages unless told not to)."""
    seed = "|".join(
        (
            settings.fingerprint(),
            day,
            str(settings.ingest.lookback_days),
            input_digest(settings.lake.lake_path),
        )
    )
    return StageLedger(run_dir, seed, settings.orchestration.resume if resume is None else resume)


def prepare_features(ledger: StageLedger, settings: Settings, day: str, run_dir: Path) -> Any:
    """The stages shared with training: ingest, graph, communities, features."""
    counts = ledger.run("ingest", ingest_task, settings, day, run_dir)
    ledger.run("graph", graph_task, settings, run_dir)
    graph_summary = ledger.run("communities", communities_task, settings, run_dir)
    ledger.run("features", features_task, settings, day, run_dir)
    return counts, graph_summary


@flow(name="farmwatch-nightly", log_prints=True, on_failure=[_on_failure])
def nightly_flow(
    run_date: str | None = None,
    lookback_days: int | None = None,
    config_file: str | None = None,
    release_held: bool = False,
    resume: bool | None = None,
) -> dict[str, Any]:
    """Run the whole nightly batch for one date and return its summary.

    Args:
        run_date: ``YYYY-MM-DD``; default the world's end date or yesterday.
        lookback_days: override of ``ingest.lookback_days``.
        config_file: TOML config file (the profile).
        release_held: publish even if the circuit breaker trips (after a human review).
        resume: skip stages an earlier attempt of this run finished (default from config).
    """
    settings = settings_for(config_file)
    if lookback_days is not None:
        settings = settings.model_copy(
            update={"ingest": settings.ingest.model_copy(update={"lookback_days": lookback_days})}
        )
    day = resolve_run_date(settings, run_date).isoformat()
    with run_lock(settings.home, f"nightly {day}"):
        run_dir = run_dir_for(settings, datetime.fromisoformat(day).date())
        ledger = prepare_run(settings, day, run_dir, resume)
        counts, graph_summary = prepare_features(ledger, settings, day, run_dir)
        start = time.perf_counter()
        model, version = io_task(load_champion_task, settings)(settings)
        ledger.seconds["load_champion"] = time.perf_counter() - start
        # the registry's location too: two registries both have a version "1"
        registry = settings.model.tracking_uri_for(settings.home)
        scored = ledger.run(
            "score",
            score_task,
            settings,
            run_dir,
            model,
            version,
            depends_on=f"{registry}|{settings.model.registered_model}|{version}",
        )
        target = settings.publish.target_for(settings.home)
        published = ledger.run(
            "publish",
            io_task(publish_task, settings),
            settings,
            day,
            run_dir,
            version,
            counts,
            release_held,
            depends_on=f"{target}|{settings.publish.prefix}|{release_held}",
        )
        summary = report_task(
            settings,
            run_dir,
            scored,
            graph_summary,
            published,
            {"seconds": ledger.seconds, "skipped": ledger.skipped},
            {"run_date": day, "model_version": version},
        )
    summary.update(ingest=counts)
    return summary
