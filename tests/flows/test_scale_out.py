"""The same nightly job over Spark Connect on a standalone cluster as in local mode.

The shared small world (``tests/flows/conftest.py``: generated, a model trained and the nightly
run done in local mode in this process) is the reference. Then ``farmwatch nightly`` runs as a
separate process through a Spark Connect server whose jobs run on a standalone cluster (a master
and two 1-core workers, all started by ``infra/spark-local-cluster.sh``): the client speaks
Spark Connect and every task, Python UDFs included, runs in the workers' executors, shuffled
between them. It must publish the same run id and a byte-identical ban list; the fixtures stop
everything they started. (A classic session with ``spark.master`` set to the cluster runs the
same stage code; ``benchmarks/bench_scale_out.py`` runs that one.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _nightly_in_subprocess(home: Path, target: Path, prefect: dict, **spark_env: str) -> str:
    env = {
        **os.environ,
        "FARMWATCH_LAKE__HOME": str(home),
        "FARMWATCH_PUBLISH__TARGET": str(target),
        "FARMWATCH_SPARK__DRIVER_MEMORY": "2g",
        **prefect,
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


def test_connect_on_a_cluster_publishes_the_same_list_as_local(
    small_world, spark_connect_server, harness_env
):
    farmwatch_home, local = small_world.home, small_world.summary
    out = _nightly_in_subprocess(
        farmwatch_home,
        farmwatch_home / "bucket-connect",
        harness_env,
        FARMWATCH_SPARK__REMOTE=spark_connect_server,
    )
    assert f"accounts banned : {local['banned']:,}" in out
    assert small_world.published(farmwatch_home / "bucket-connect") == (
        small_world.run_id,
        small_world.banlist,
    )
