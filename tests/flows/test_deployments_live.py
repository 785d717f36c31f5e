"""Deployments on a real Prefect server: serve, trigger through the API, retry, fail safely.

Starts ``farmwatch serve`` as a separate process the way a newcomer does, without
``PREFECT_API_URL``, so it starts its own Prefect server (SQLite) on a free loopback port, plus
moto's S3 server. Through the Prefect API it checks that the nightly and weekly deployments
exist with their schedules and limits, triggers a nightly run on the shared small world's lake
with its champion (read only; this test has its own home and bucket) and waits for it (state,
artifact, ban list on S3), then kills the S3 server and triggers the date again with a profile
that allowlists one banned account (every stage resumes, so the failure lands in publish: the
publish step retries, the run ends Failed with a readable reason, a webhook hears about it, and
the list in force is untouched). A backfill then skips the published date, and a forced one with
the profile resumes the failed run after its last finished stage and takes the account off the
list. When serve stops, its Prefect server is gone too.

The home starts with a copy of the small world's finished stages for its date, and the bucket's
key is the small world's: the same inputs, settings and model, so the first run resumes them
and computes only its publish step (what this test is about), which also checks that stages
resume in another home when nothing upstream changed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.serve import NIGHTLY_DEPLOYMENT, RETRAIN_DEPLOYMENT, backfill_flow
from jobs.banlists.runs import latest_pointer, list_runs
from jobs.core.config import PublishSettings
from jobs.core.hash_key import KEY_FILE_NAME
from jobs.core.store import S3Store

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BUCKET = "trust-banlists"


def _wait_for_deployments(names: list[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return {n: client.read_deployment_by_name(n) for n in names}
            except Exception:  # noqa: BLE001 (not registered yet)
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


def test_served_deployments_run_retry_and_fail_safely(
    small_world, farmwatch_home, s3_server, webhook, monkeypatch, tmp_path, loopback_port
):
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=BUCKET)
    env = {
        "FARMWATCH_LAKE__LAKE": str(small_world.home / "lake"),
        "FARMWATCH_MODEL__TRACKING_URI": f"sqlite:///{small_world.home / 'mlflow.db'}",
        "FARMWATCH_PUBLISH__TARGET": f"s3://{BUCKET}",
        "FARMWATCH_PUBLISH__ENDPOINT_URL": s3_server.url,
        # required for a bucket; the small world's, so its finished stages resume here
        "FARMWATCH_PUBLISH__ENTITY_HASH_KEY": (small_world.home / KEY_FILE_NAME)
        .read_text()
        .strip(),
        "FARMWATCH_PUBLISH__S3_MAX_ATTEMPTS": "1",
        "FARMWATCH_PUBLISH__S3_CONNECT_TIMEOUT_SECONDS": "1",
        "FARMWATCH_ORCHESTRATION__IO_RETRY_DELAYS_SECONDS": "[1, 1]",
        "FARMWATCH_ORCHESTRATION__WEBHOOK_URL": webhook.url,
        "FARMWATCH_SPARK__DRIVER_MEMORY": "3g",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = S3Store(BUCKET, "", PublishSettings(endpoint_url=s3_server.url))
    end = small_world.summary["run_date"]
    shutil.copytree(small_world.home / "runs" / f"dt={end}", farmwatch_home / "runs" / f"dt={end}")

    # The newcomer's one command: no PREFECT_API_URL, so serve starts its own Prefect server.
    serve_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    serve_env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    serve_env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    # the runner looks for scheduled runs every 10 s by default: each triggered run waited
    # for that poll
    serve_env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
    api = f"http://127.0.0.1:{loopback_port}/api"
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--port", str(loopback_port)],
        cwd=ROOT,
        env=serve_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            _served(small_world, farmwatch_home, s3_server, webhook, store)
    finally:
        _drain_prefect_workers()  # ship this process's logs while serve's server is up
        serve.terminate()
        serve.wait(timeout=60)
        log.close()
    time.sleep(1)
    with pytest.raises(OSError):  # the server serve started is gone with it
        urllib.request.urlopen(f"{api}/health", timeout=2)


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=30)
        except Exception:  # noqa: BLE001 (best effort; the server stops regardless)
            pass


def _served(small_world, farmwatch_home, s3_server, webhook, store) -> None:
    end = small_world.summary["run_date"]
    found = _wait_for_deployments([NIGHTLY_DEPLOYMENT, RETRAIN_DEPLOYMENT])
    nightly = found[NIGHTLY_DEPLOYMENT]
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert nightly.global_concurrency_limit.limit == 1
    assert found[RETRAIN_DEPLOYMENT].schedules[0].schedule.cron == "0 3 * * 0"

    good = run_deployment(
        NIGHTLY_DEPLOYMENT, parameters={"run_date": end}, timeout=900, poll_interval=1
    )
    assert good.state.is_completed(), good.state
    with get_client(sync_client=True) as client:
        by_run = FlowRunFilter(id=FlowRunFilterId(any_=[good.id]))
        artifacts = client.read_artifacts(flow_run_filter=by_run)
    summary = [a for a in artifacts if a.key == "farmwatch-nightly"]
    assert summary and "| banned |" in summary[0].data
    assert "| model_version | 1 |" in summary[0].data
    assert "| ban_list.status | published |" in summary[0].data
    assert "| seconds.publish |" in summary[0].data
    in_force = latest_pointer(store)
    assert in_force["run_date"] == end
    assert f"run={in_force['run_id']}" == small_world.run_id  # same inputs, same run
    resumed = json.loads((farmwatch_home / "runs" / f"dt={end}" / "report.json").read_text())
    assert resumed["resumed_stages"] == [
        "ingest",
        "graph",
        "communities",
        "features",
        "score",
    ]

    # A profile that allowlists one banned account: a new run of the same date whose stages
    # all resume, so it reaches publish at once (a new date would compute five stages first).
    listed = pd.read_parquet(io.BytesIO(store.get(f"{in_force['prefix']}/banlist.parquet")))
    vip = listed.loc[listed["action"] == "ban", "account_id"].iloc[0]
    allowlist = farmwatch_home / "allowlist.csv"
    allowlist.write_text(f"kind,value,note\naccount,{vip},verified customer\n")
    profile = farmwatch_home / "vip.toml"
    profile.write_text(f'[bans]\nallowlist = "{allowlist}"\n')

    s3_server.kill()  # the bucket's endpoint goes down before the next run publishes
    bad = run_deployment(
        NIGHTLY_DEPLOYMENT,
        parameters={"run_date": end, "config_file": str(profile)},
        timeout=900,
        poll_interval=1,
    )
    assert bad.state.is_failed(), bad.state
    assert "cannot reach" in (bad.state.message or "") or "cannot reach" in str(
        bad.state.result(raise_on_failure=False)
    )
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[bad.id]))
        )
    publish = [t for t in tasks if t.name.startswith("publish")]
    assert publish and publish[0].run_count == 3  # the first try and two retries
    assert publish[0].state.is_failed()
    assert any(m["event"] == "run_failed" and m["run_date"] == end for m in webhook.received)

    s3_server.restart()
    assert latest_pointer(store) == in_force  # the failed run touched nothing

    # Backfill: the published date is skipped; forced with the profile, the failed run resumes
    # after its last finished stage and publishes.
    assert backfill_flow(start=end, end=end) == {end: "skipped: published"}
    outcome = backfill_flow(start=end, end=end, force=True, config_file=str(profile))
    assert outcome == {end: "published"}
    report = json.loads((farmwatch_home / "runs" / f"dt={end}" / "report.json").read_text())
    assert report["resumed_stages"] == ["ingest", "graph", "communities", "features", "score"]
    now = latest_pointer(store)
    assert now["run_date"] == end and now["run_id"] != in_force["run_id"]
    relisted = pd.read_parquet(io.BytesIO(store.get(f"{now['prefix']}/banlist.parquet")))
    assert vip not in set(relisted["account_id"])
    assert len(relisted) == len(listed) - 1
    runs = {r["run_id"]: r["status"] for r in list_runs(store)}
    assert runs == {in_force["run_id"]: "published", now["run_id"]: "published"}
