"""The nightly Prefect flow: ingest, graph, communities, features, score, publish, report.

In: a run date (default: the world's end date or yesterday), a look-back window, an optional
config file (the profile) and whether to release a run the circuit breaker would hold. Out: a
ban list published under the target (see :mod:`jobs.banlists`), a run report
(``report.json`` in the run's layout), a Prefect markdown artifact, and the summary it returns.

One Prefect task per stage, each a few lines around the stage's ``run(ctx)``; the stages
shared with training are in :mod:`flows.prepare`. Only the steps that do I/O that can fail
transiently (loading the champion from the MLflow registry, publishing) retry, with backoff from
``orchestration.io_retry_delays_seconds``. A run holds ``<home>/run.lock`` so two runs never
overlap, and records each finished stage (:mod:`flows.ledger`) so a retried or re-run date
resumes after the last finished stage. A failure POSTs to ``orchestration.webhook_url`` (as do
a held ban list and a run whose drift crossed a threshold). Called by ``farmwatch nightly``,
``farmwatch demo``, backfills and the ``nightly`` deployment (:mod:`flows.serve`). Prefect runs
it without a separately started server (a temporary local one) unless ``PREFECT_API_URL`` names
one.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.ledger import run_lock
from flows.notify import notify, notify_drift
from flows.prepare import prepare_features, prepare_run, stage_context
from flows.runtime import resolve_run_date, settings_for
from jobs.banlists import stage as publishing
from jobs.banlists.actions import allowlist_digest
from jobs.banlists.decisions import decisions_folder
from jobs.banlists.journal import last_key
from jobs.core.config import Settings
from jobs.core.store import StoreError, StoreUnavailable, store_for
from jobs.report import stage as reporting
from jobs.report.summary import drift_alerts, render_markdown
from jobs.scoring import stage as scoring
from models.registry import load_champion


@task(name="load-champion", cache_policy=NO_CACHE)
def load_champion_task(settings: Settings) -> tuple[Any, str]:
    """The registry's champion (retried: the tracking server may blip)."""
    return load_champion(settings.model, settings.model.tracking_uri_for(settings.home))


@task(name="score", cache_policy=NO_CACHE)
def score_task(settings: Settings, day: str, model: Any, version: str) -> dict[str, Any]:
    """Score every account inside Spark (scores under the run's layout)."""
    summary = scoring.run(stage_context(settings, day, model=model, model_version=version))
    get_run_logger().info("score (%s trees): %s", settings.model.evaluator, summary)
    return summary


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
    settings: Settings, day: str, version: str, earlier: dict[str, Any], release_held: bool
) -> dict[str, Any]:
    """Actions, allowlist, evidence, then a guarded publish (``latest.json`` moves last)."""
    ctx = stage_context(
        settings, day, model_version=version, earlier=earlier, release_held=release_held
    )
    summary = publishing.run(ctx)
    log = get_run_logger()
    (log.warning if summary["status"] != "published" else log.info)(
        "publish: %s", summary["message"]
    )
    if summary["status"] == "held":
        notify(
            settings.orchestration.webhook_url,
            "banlist_held",
            summary["message"],
            run_date=day,
            run_id=summary["run_id"],
            prefix=summary["prefix"],
            store=summary["store"],
        )
    return summary


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    settings: Settings, day: str, version: str, earlier: dict[str, Any]
) -> dict[str, Any]:
    """Summary figures, ground-truth metrics on synthetic worlds, and a Prefect artifact."""
    summary = reporting.run(stage_context(settings, day, model_version=version, earlier=earlier))
    create_markdown_artifact(
        key="farmwatch-nightly",
        markdown=render_markdown(summary),
        description="farmwatch nightly run summary",
    )
    alerts = drift_alerts(summary)
    if alerts:
        get_run_logger().warning("drift: %s", "; ".join(alerts))
        notify_drift(settings.orchestration.webhook_url, day, summary)
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


def _decisions_marker(settings: Settings) -> str:
    """The newest trust decision's id, in the publish stage's ledger key.

    A re-run of a published date after a decision must publish again (the decision is in the
    run's inputs, so it is a new run that applies it), not resume the old publish. When the
    store cannot be listed, a marker that matches nothing: the publish stage then runs, retries
    and reports the store's error itself.
    """
    try:
        store = store_for(settings.publish.target_for(settings.home), settings.publish)
        return last_key(store, decisions_folder(settings.publish.prefix)) or "none"
    except (StoreError, OSError) as exc:
        return f"unlisted {time.time_ns()} ({type(exc).__name__})"


def _allowlist_marker(settings: Settings) -> str:
    """The allowlist file and a digest of its bytes, in the publish stage's ledger key.

    A re-run after the allowlist changed (another file, or the same file edited) must publish
    again, not resume the publish that listed the accounts it now keeps off. An unreadable
    file gives a marker that matches nothing: publish runs and reports the error itself.
    """
    path = settings.bans.allowlist
    if path is None:
        return "none"
    try:
        return f"{path}|{allowlist_digest(path)}"
    except OSError as exc:
        return f"unreadable {time.time_ns()} ({type(exc).__name__})"


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
        ledger = prepare_run(settings, day, resume)
        earlier = prepare_features(ledger, settings, day)
        start = time.perf_counter()
        model, version = io_task(load_champion_task, settings)(settings)
        ledger.seconds["load_champion"] = time.perf_counter() - start
        # the registry's location too: two registries both have a version "1"
        registry = settings.model.tracking_uri_for(settings.home)
        earlier["score"] = ledger.run(
            "score",
            score_task,
            settings,
            day,
            model,
            version,
            depends_on=f"{registry}|{settings.model.registered_model}|{version}",
        )
        target = settings.publish.target_for(settings.home)
        earlier["publish"] = ledger.run(
            "publish",
            io_task(publish_task, settings),
            settings,
            day,
            version,
            {"ingest": earlier["ingest"]},
            release_held,
            depends_on=(
                f"{target}|{settings.publish.prefix}|{release_held}|{_decisions_marker(settings)}"
                f"|{_allowlist_marker(settings)}"
            ),
        )
        earlier["ledger"] = {
            "seconds": ledger.seconds,
            "skipped": ledger.skipped,
            "parts": ledger.parts,
            "spans": ledger.spans,
        }
        summary = report_task(settings, day, version, earlier)
    summary.update(ingest=earlier["ingest"])
    return summary
