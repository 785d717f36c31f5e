"""Delta, pandas-written and ``s3a://`` lakes ingest the same rows as the Parquet folders.

The shared small world (``tests/flows/conftest.py``) is generated from one spec as Parquet
folders and as Delta tables; its nightly run on the Parquet lake, in local mode, is the
reference. A separate process with a classic local session and ``spark.packages = ["s3a"]``
runs the ingest stage on the Parquet lake copied to an S3-protocol server (moto), its run
folder there too: the same counts, and the accepted rows on S3. (The whole nightly run on an
``s3a://`` lake, through Spark Connect on a cluster, is ``tests/flows/test_scale_out.py``.)

A Delta lake and a lake rewritten by plain ``pandas.DataFrame.to_parquet`` (nanosecond
timestamps, dates as strings, a narrower integer) differ from the reference only in how the
ingest stage reads them: everything after ingest reads the accepted tables, typed by the
contracts. So their ingest must accept and quarantine the same counts and write accepted
tables with exactly the reference's rows (every column, every value); the later stages on
equal accepted tables are what the scale-out test compares bit for bit. A re-run of
the Delta lake at the same version resumes ingest; after a new commit it does not, and ingest
reads the new row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from pyarrow import fs as pafs

from flows.ledger import StageLedger
from flows.nightly import prepare_run
from flows.prepare import stage_context
from jobs.core.config import load_settings
from jobs.core.contracts import API_USAGE, INPUT_TABLES
from jobs.ingest import stage as ingest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _ingest(day: str) -> tuple[StageLedger, dict, Path]:
    """The ingest stage of ``day`` through the run's ledger (resuming when nothing changed)."""
    settings = load_settings()
    ledger = prepare_run(settings, day, resume=True)
    ctx = stage_context(settings, day)
    counts = ledger.run("ingest", lambda: ingest.run(ctx))
    return ledger, counts, ctx.layout.root


def _same_accepted_rows(run: Path, reference: Path) -> None:
    """Every accepted table of ``run`` holds exactly the rows of ``reference``'s."""
    for contract in INPUT_TABLES:
        got, expected = (
            pq.read_table(root / "accepted" / contract.name).to_pandas()
            for root in (run, reference)
        )
        assert list(got.columns) == list(expected.columns), contract.name
        columns = list(expected.columns)
        pd.testing.assert_frame_equal(
            got.sort_values(columns, ignore_index=True),
            expected.sort_values(columns, ignore_index=True),
            obj=contract.name,
        )


def test_delta_lake_ingests_the_same_rows_and_resumes_by_version(small_world, monkeypatch):
    home, reference = small_world.home, small_world.summary
    day = reference["run_date"]
    assert (home / "lake-delta" / "signups" / "_delta_log").is_dir()
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", str(home / "lake-delta"))
    monkeypatch.setenv("FARMWATCH_LAKE__FORMAT", "delta")
    monkeypatch.setenv("FARMWATCH_LAKE__RUNS", str(home / "runs-delta"))

    ledger, counts, run = _ingest(day)
    assert ledger.skipped == []
    assert counts == reference["ingest"]
    _same_accepted_rows(run, home / "runs" / f"dt={day}")
    ledger, _, _ = _ingest(day)  # the same Delta versions: ingest resumes
    assert ledger.skipped == ["ingest"]

    (kept,) = pq.read_table(run / "accepted" / "signups", columns=["account_id"])[0][:1]
    signups = home / "lake-delta" / "signups"
    raw = DeltaTable(str(signups)).to_pyarrow_table()
    copy = raw.filter(pc.equal(raw["account_id"], kept)).slice(0, 1)
    write_deltalake(str(signups), copy, mode="append")  # version 1: an accepted row again
    ledger, counts, _ = _ingest(day)
    assert ledger.skipped == []  # a new commit is a new input: nothing resumes
    before, after = reference["ingest"]["signups"], counts["signups"]
    assert (after["read"], after["quarantined"]) == (before["read"] + 1, before["quarantined"] + 1)
    assert after["accepted"] == before["accepted"]


# the ingest stage in a fresh process (the s3a package must be on the JVM's classpath when it
# starts), printing its counts
_INGEST_IN_A_NEW_PROCESS = """
import json, sys
from flows.prepare import stage_context
from jobs.core.config import load_settings
from jobs.ingest import stage as ingest
print(json.dumps(ingest.run(stage_context(load_settings(), sys.argv[1]))))
"""


def test_a_classic_session_ingests_an_s3a_lake(small_world, s3_server):
    home, reference = small_world.home, small_world.summary
    s3 = small_world.lake_on(s3_server.url)
    env = {
        **os.environ,
        "FARMWATCH_LAKE__HOME": str(home),
        "FARMWATCH_LAKE__LAKE": "s3://lake/tables",
        "FARMWATCH_LAKE__RUNS": "s3://lake/runs",
        "FARMWATCH_LAKE__ENDPOINT_URL": s3_server.url,
        "FARMWATCH_LAKE__REGION": "us-east-1",
        "FARMWATCH_SPARK__PACKAGES": json.dumps(["s3a"]),
        "FARMWATCH_SPARK__DRIVER_MEMORY": "2g",
        "FARMWATCH_SPARK__SHUFFLE_PARTITIONS": "2",
    }
    env.pop("FARMWATCH_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", _INGEST_IN_A_NEW_PROCESS, reference["run_date"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == reference["ingest"]
    run = f"lake/runs/dt={reference['run_date']}"
    accepted = f"{run}/accepted/signups"
    parts = [
        info.path
        for info in s3.get_file_info(pafs.FileSelector(accepted))
        if info.path.endswith(".parquet")
    ]
    rows = sum(pq.read_metadata(s3.open_input_file(p)).num_rows for p in parts)
    assert rows == reference["ingest"]["signups"]["accepted"]


def _rewrite_with_pandas(source: Path, target: Path) -> None:
    """Every input table as a team preparing data in Python writes it: plain ``to_parquet``,
    nanosecond timestamps, dates kept as ISO strings, a narrower integer column."""
    for contract in INPUT_TABLES:
        frame = pd.read_parquet(source / contract.name)
        for column in frame.columns:
            if str(frame[column].dtype).startswith("datetime64"):
                frame[column] = frame[column].dt.as_unit("ns")  # pandas' own unit
        if contract is API_USAGE:
            frame["usage_date"] = frame["usage_date"].astype(str)
            frame["requests"] = frame["requests"].astype("int32")
        (target / contract.name).mkdir(parents=True)
        frame.to_parquet(target / contract.name / "part-0.parquet")


def test_pandas_written_lake_ingests_the_same_rows(small_world, monkeypatch):
    home, reference = small_world.home, small_world.summary
    _rewrite_with_pandas(home / "lake", home / "lake-pandas")
    stored = pq.read_schema(home / "lake-pandas" / "ip_events" / "part-0.parquet")
    assert str(stored.field("event_ts").type) == "timestamp[ns]"  # what Spark 4 cannot read
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", str(home / "lake-pandas"))
    monkeypatch.setenv("FARMWATCH_LAKE__RUNS", str(home / "runs-pandas"))
    _, counts, run = _ingest(reference["run_date"])  # no _world.json: the date is given
    assert counts == reference["ingest"]
    _same_accepted_rows(run, home / "runs" / f"dt={reference['run_date']}")
