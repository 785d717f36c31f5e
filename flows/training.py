"""The retraining Prefect flow: build the training set, train, evaluate, register, gate.

In: a run date whose features to train on (default: the world's end date or yesterday) and an
optional config file. Out: a new model version in the MLflow registry (alias ``challenger``;
``champion`` if it beats the current champion on the same holdout), and the training summary.
Reuses the nightly flow's ingest, graph, communities and features stages (and their ledger: a
nightly run of the same date and inputs resumes after them). Holds the run lock. Called by
``farmwatch train`` and the weekly ``retrain`` deployment (:mod:`flows.serve`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.ledger import run_lock
from flows.prepare import prepare_features, prepare_run, stage_context
from flows.runtime import resolve_run_date, settings_for
from jobs.core.config import Settings
from models import stage as training


@task(name="train-and-register", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def train_task(settings: Settings, day: str) -> dict[str, Any]:
    """Train on labelled accounts (time-aware split) and register the model pair."""
    result = training.run(stage_context(settings, day))
    get_run_logger().info(
        "model version %s: %s (promoted=%s)",
        result["version"],
        result["metrics"],
        result["promoted"],
    )
    return result


@flow(name="farmwatch-train", log_prints=True)
def training_flow(run_date: str | None = None, config_file: str | None = None) -> dict[str, Any]:
    """Retrain on the labels known at ``run_date`` and apply the promotion gate."""
    settings = settings_for(config_file)
    day = resolve_run_date(settings, run_date).isoformat()
    with run_lock(settings.home, f"training {day}"):
        prepare_features(prepare_run(settings, day, None), settings, day)
        return train_task(settings, day)
