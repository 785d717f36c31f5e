"""Deployments as code, the long-lived scheduler process, and backfills.

In: settings (``orchestration.nightly_cron``, ``retrain_cron``, ``timezone``) and, for a
backfill, a date range. Out: two Prefect deployments served by one process:
``farmwatch-nightly/nightly`` (daily, 02:00 UTC by default, concurrency limit 1) and
``farmwatch-train/retrain`` (weekly, Sunday 03:00 UTC by default, concurrency limit 1), and a
backfill flow that runs the nightly flow date by date in order. ``farmwatch serve`` starts a
local Prefect server first when ``PREFECT_API_URL`` is not set, so one command gives a working
scheduler with a UI. Called by the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.nightly import nightly_flow
from flows.runtime import settings_for
from flows.training import training_flow
from jobs.banlists.runs import list_runs
from jobs.core.config import Settings
from jobs.core.store import store_for

NIGHTLY_DEPLOYMENT = "farmwatch-nightly/nightly"
RETRAIN_DEPLOYMENT = "farmwatch-train/retrain"


def deployments(settings: Settings, config_file: str | None = None) -> list[Any]:
    """The nightly and weekly retraining deployments (schedules, parameters, limits)."""
    parameters = {"config_file": config_file} if config_file else {}
    zone = settings.orchestration.timezone
    nightly = nightly_flow.to_deployment(
        name="nightly",
        schedule=Cron(settings.orchestration.nightly_cron, timezone=zone),
        parameters=parameters,
        concurrency_limit=1,
        tags=["farmwatch", "nightly"],
        description="Score every account for yesterday (UTC) and publish the ban list.",
    )
    retrain = training_flow.to_deployment(
        name="retrain",
        schedule=Cron(settings.orchestration.retrain_cron, timezone=zone),
        parameters=parameters,
        concurrency_limit=1,
        tags=["farmwatch", "training"],
        description="Retrain on labels known yesterday; promote only past the gate.",
    )
    return [nightly, retrain]


@contextmanager
def prefect_api(settings: Settings, port: int = 4200) -> Iterator[str]:
    """Use ``PREFECT_API_URL`` if set; otherwise run ``prefect server start`` for the duration."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    url = f"http://127.0.0.1:{port}/api"
    log_path = settings.home / "prefect-server.log"
    settings.home.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("a") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited early; see {log_path}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"prefect server not ready after 180s; see {log_path}"
                    ) from None
                time.sleep(1)
        # the flow runs serve starts inherit the environment; this process's Prefect client
        # read its settings at import, so it is pointed at the server explicitly (left on the
        # default, it would run an API of its own on the same database, and a run's
        # concurrency slot, held in that API's memory, would be lost to the server's)
        os.environ["PREFECT_API_URL"] = url
        print(f"Prefect server on {url.removesuffix('/api')} (UI), log {log_path}")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def serve_forever(settings: Settings, config_file: str | None = None, port: int = 4200) -> None:
    """Serve both deployments until interrupted (runs execute in this process's children)."""
    from prefect import serve

    with prefect_api(settings, port):
        serve(*deployments(settings, config_file))


def dates_between(start: str, end: str) -> list[str]:
    """Every date from ``start`` to ``end`` inclusive, oldest first."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise ValueError(f"backfill range ends ({end}) before it starts ({start})")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


@flow(name="farmwatch-backfill", log_prints=True)
def backfill_flow(
    start: str, end: str, force: bool = False, config_file: str | None = None
) -> dict[str, str]:
    """Run the nightly flow for each date in order, skipping dates already published.

    A date counts as done when the store holds a ``published`` or ``held`` run for it (a held
    one waits for review, not for a re-run); ``force`` runs every date. A failing date stops
    the backfill, so later dates never publish over a gap.

    Returns:
        Date -> what happened (``skipped: published``, ``published``, ``held``, ...).
    """
    settings = settings_for(config_file)
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    done = {
        r["run_date"]: r["status"]
        for r in list_runs(store, settings.publish.prefix)
        if r["status"] in ("published", "held")
    }
    log = get_run_logger()
    outcome: dict[str, str] = {}
    for day in dates_between(start, end):
        if day in done and not force:
            outcome[day] = f"skipped: {done[day]}"
            log.info("%s already %s, skipped", day, done[day])
            continue
        summary = nightly_flow(run_date=day, config_file=config_file)
        outcome[day] = summary["published"]["status"]
    return outcome
