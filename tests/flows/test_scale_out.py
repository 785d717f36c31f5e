"""The same nightly job on a cluster over an ``s3a://`` lake and over Spark Connect as locally.

The shared small world (``tests/flows/conftest.py``: generated, a model trained and the nightly
run done in local mode in this process) is the reference. Then ``farmwatch nightly`` runs as a
separate process against a standalone cluster (a master and two workers started by
``infra/spark-local-cluster.sh``) the way production runs: the Parquet lake copied to an
S3-protocol server (moto), read with ``spark.packages = ["s3a"]``, and every run intermediate
written there. A second process runs over a Spark Connect server started the same way, on the
local lake. Each publishes to its own folder; all three must publish the same run id and
byte-identical ban lists. The fixtures stop everything they started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from pyarrow import fs as pafs

from jobs.core.contracts import INPUT_TABLES

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _nightly_in_subprocess(home: Path, target: Path, **spark_env: str) -> str:
    env = {
        **os.environ,
        "FARMWATCH_LAKE__HOME": str(home),
        "FARMWATCH_PUBLISH__TARGET": str(target),
        "FARMWATCH_SPARK__DRIVER_MEMORY": "2g",
        **spark_env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "nightly", "--no-resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _s3a_lake(home: Path, url: str) -> tuple[pafs.S3FileSystem, dict[str, str]]:
    """The small world's Parquet lake copied to ``s3://lake/tables``; settings to read it."""
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="lake")
    scheme, _, host = url.partition("://")
    s3 = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, region="us-east-1")
    pafs.copy_files(str(home / "lake"), "lake/tables", destination_filesystem=s3)
    return s3, {
        "FARMWATCH_LAKE__LAKE": "s3://lake/tables",
        "FARMWATCH_LAKE__RUNS": "s3://lake/runs",
        "FARMWATCH_LAKE__ENDPOINT_URL": url,
        "FARMWATCH_LAKE__REGION": "us-east-1",
        "FARMWATCH_SPARK__PACKAGES": json.dumps(["s3a"]),
    }


def test_cluster_on_s3a_and_connect_publish_the_same_list_as_local(
    small_world, spark_cluster, spark_connect_server, s3_server
):
    farmwatch_home, local = small_world.home, small_world.summary
    run_id, reference = small_world.run_id, small_world.banlist

    s3, lake = _s3a_lake(farmwatch_home, s3_server.url)
    out = _nightly_in_subprocess(
        farmwatch_home,
        farmwatch_home / "bucket-cluster",
        FARMWATCH_SPARK__MASTER=spark_cluster,
        FARMWATCH_SPARK__CONF='{"spark.executor.memory": "1g"}',
        **lake,
    )
    assert f"accounts banned : {local['banned']:,}" in out
    assert small_world.published(farmwatch_home / "bucket-cluster") == (run_id, reference)
    run = f"lake/runs/dt={local['run_date']}"
    written = {
        info.path.removeprefix(f"{run}/").rsplit("/", 1)[0]
        for info in s3.get_file_info(pafs.FileSelector(run, recursive=True))
        if info.path.endswith(".parquet") and "/part-" in info.path
    }
    tables = [c.name for c in INPUT_TABLES]
    expected = {f"accepted/{t}" for t in tables} | {f"quarantine/{t}" for t in tables}
    expected |= {"graph/communities", "graph/account_links", "features", "scores"}
    assert expected <= written, sorted(expected - written)

    out = _nightly_in_subprocess(
        farmwatch_home,
        farmwatch_home / "bucket-connect",
        FARMWATCH_SPARK__REMOTE=spark_connect_server,
    )
    assert f"accounts banned : {local['banned']:,}" in out
    assert small_world.published(farmwatch_home / "bucket-connect") == (run_id, reference)
