"""The nightly run on a Delta and on a pandas-written lake publishes the same list.

The shared small world (``tests/flows/conftest.py``) is generated from one spec as Parquet
folders and as Delta tables; its nightly run on the Parquet lake, in local mode, is the
reference. Here the nightly run reads the Delta lake (in this process, ``lake.format =
"delta"``); a second run reads the tables rewritten by plain ``pandas.DataFrame.to_parquet``
(nanosecond timestamps). Both must publish the same run id and byte-identical ban lists (the
``s3a://`` lake is read by the cluster run of ``test_scale_out.py``). A re-run of the
Delta lake at the same versions resumes every stage; after a new commit nothing resumes and
ingest reads it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from prefect.testing.utilities import prefect_test_harness

from flows.nightly import nightly_flow, prepare_run
from flows.prepare import stage_context
from jobs.core.config import load_settings
from jobs.core.contracts import INPUT_TABLES
from jobs.ingest import stage as ingest

pytestmark = pytest.mark.e2e


def test_delta_lake_publishes_the_same_list_and_resumes_by_version(spark, small_world, monkeypatch):
    home, reference = small_world.home, small_world.summary
    assert (home / "lake-delta" / "signups" / "_delta_log").is_dir()
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", str(home / "lake-delta"))
    monkeypatch.setenv("FARMWATCH_LAKE__FORMAT", "delta")
    monkeypatch.setenv("FARMWATCH_LAKE__RUNS", str(home / "runs-delta"))
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", str(home / "bucket-delta"))

    with prefect_test_harness(server_startup_timeout=120):
        delta = nightly_flow()
        assert delta["ingest"] == reference["ingest"]
        assert small_world.published(home / "bucket-delta") == (
            small_world.run_id,
            small_world.banlist,
        )
        again = nightly_flow()  # the same Delta versions: every stage resumes
    assert {"ingest", "graph", "communities", "features", "score"} <= set(again["resumed_stages"])

    settings = load_settings()
    day = date.fromisoformat(reference["run_date"])
    ctx = stage_context(settings, day.isoformat())
    (kept,) = pq.read_table(ctx.layout.accepted("signups"), columns=["account_id"])[0][:1]
    signups = home / "lake-delta" / "signups"
    raw = DeltaTable(str(signups)).to_pyarrow_table()
    copy = raw.filter(pc.equal(raw["account_id"], kept)).slice(0, 1)
    write_deltalake(str(signups), copy, mode="append")  # version 1: an accepted row again
    ledger = prepare_run(settings, day.isoformat(), resume=True)
    counts = ledger.run("ingest", lambda: ingest.run(ctx))
    assert ledger.skipped == []  # a new commit is a new input: nothing resumes
    before, after = reference["ingest"]["signups"], counts["signups"]
    assert (after["read"], after["quarantined"]) == (before["read"] + 1, before["quarantined"] + 1)
    assert after["accepted"] == before["accepted"]


def _rewrite_with_pandas(source: Path, target: Path) -> None:
    """Every input table as a team preparing data in Python writes it: plain ``to_parquet``."""
    for contract in INPUT_TABLES:
        frame = pd.read_parquet(source / contract.name)
        for column in frame.columns:
            if str(frame[column].dtype).startswith("datetime64"):
                frame[column] = frame[column].dt.as_unit("ns")  # pandas' own unit
        (target / contract.name).mkdir(parents=True)
        frame.to_parquet(target / contract.name / "part-0.parquet")


def test_pandas_written_lake_publishes_the_same_list(spark, small_world, monkeypatch):
    home, reference = small_world.home, small_world.summary
    _rewrite_with_pandas(home / "lake", home / "lake-pandas")
    stored = pq.read_schema(home / "lake-pandas" / "ip_events" / "part-0.parquet")
    assert str(stored.field("event_ts").type) == "timestamp[ns]"  # what Spark 4 cannot read
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", str(home / "lake-pandas"))
    monkeypatch.setenv("FARMWATCH_LAKE__RUNS", str(home / "runs-pandas"))
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", str(home / "bucket-pandas"))
    with prefect_test_harness(server_startup_timeout=120):  # no _world.json: the date is given
        summary = nightly_flow(run_date=reference["run_date"])
    assert summary["ingest"] == reference["ingest"]
    assert small_world.published(home / "bucket-pandas") == (
        small_world.run_id,
        small_world.banlist,
    )
