"""The same nightly job on a Spark standalone cluster and over Spark Connect as in local mode.

The shared small world (``tests/flows/conftest.py``: generated, a model trained and the nightly
run done in local mode in this process) is the reference. Then ``farmwatch nightly`` runs as a
separate process against a standalone cluster (a master and two workers started by
``infra/spark-local-cluster.sh``) and against a Spark Connect server started the same way, each
publishing to its own folder. All three must publish the same run id and byte-identical ban
lists; the fixtures stop everything they started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_cluster_and_connect_publish_the_same_list_as_local(
    small_world, spark_cluster, spark_connect_server
):
    farmwatch_home, local = small_world.home, small_world.summary
    run_id, reference = small_world.run_id, small_world.banlist

    out = _nightly_in_subprocess(
        farmwatch_home,
        farmwatch_home / "bucket-cluster",
        FARMWATCH_SPARK__MASTER=spark_cluster,
        FARMWATCH_SPARK__CONF='{"spark.executor.memory": "1g"}',
    )
    assert f"accounts banned : {local['banned']:,}" in out
    assert small_world.published(farmwatch_home / "bucket-cluster") == (run_id, reference)

    out = _nightly_in_subprocess(
        farmwatch_home,
        farmwatch_home / "bucket-connect",
        FARMWATCH_SPARK__REMOTE=spark_connect_server,
    )
    assert f"accounts banned : {local['banned']:,}" in out
    assert small_world.published(farmwatch_home / "bucket-connect") == (run_id, reference)
