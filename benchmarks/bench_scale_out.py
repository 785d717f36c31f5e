"""Benchmark: the nightly run in local mode vs on a 2-worker standalone cluster, same machine.

Uses a generated world (``--lake``, or generates ``--accounts``), trains one model, then runs
``farmwatch nightly --no-resume`` twice as separate processes: once with ``local[2]`` and once
against a standalone master with two 1-core workers started by ``infra/spark-local-cluster.sh``
(same total cores). Records wall seconds and stage seconds of each, the ratio cluster/local, and
whether both published byte-identical ban lists. Writes JSON (default
``benchmarks/results/scale_out.json``).

    .venv/bin/python benchmarks/bench_scale_out.py --lake /path/to/1M/lake
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchkit import bench_home, write_result

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infra" / "spark-local-cluster.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nightly(home: Path, target: Path, extra_env: dict[str, str]) -> dict:
    env = {
        **os.environ,
        "FARMWATCH_LAKE__HOME": str(home),
        "FARMWATCH_PUBLISH__TARGET": str(target),
        **extra_env,
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "nightly", "--no-resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    (run,) = list(target.glob("banlists/dt=*/run=*"))
    report = json.loads(next(home.glob("runs/dt=*/report.json")).read_text())
    return {
        "wall_seconds": round(seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in report["stage_seconds"].items()},
        "run": run.name,
        "banlist": (run / "banlist.parquet").read_bytes(),
        "banned": report["banned"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--lake", help="reuse a generated world")
    parser.add_argument("--executor-memory", default="4g")
    parser.add_argument("--out", default="benchmarks/results/scale_out.json")
    args = parser.parse_args()

    home = bench_home("scale", args.lake)
    from flows.runtime import configure_prefect_env, settings_for, spark_for

    settings = settings_for(None)
    configure_prefect_env(settings)
    from flows.training import training_flow
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    if not args.lake:
        generate(
            spark_for(settings),
            build_spec("distillation-campaign", args.accounts, 7),
            settings.lake.lake_path,
        )
    training_flow()
    spark_for(settings).stop()  # free the cores and memory for the measured runs

    local = _nightly(home, home / "bucket-local", {"FARMWATCH_SPARK__MASTER": "local[2]"})
    state = home / "spark-cluster"
    port = _free_port()
    script_env = {**os.environ, "FARMWATCH_SPARK_STATE": str(state), "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(SCRIPT), "start-cluster", str(port), "2", "1", args.executor_memory],
        env=script_env,
        check=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (state / "master.log").read_text().count("Registering worker") < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register")
            time.sleep(1)
        cluster = _nightly(
            home,
            home / "bucket-cluster",
            {
                "FARMWATCH_SPARK__MASTER": f"spark://127.0.0.1:{port}",
                "FARMWATCH_SPARK__CONF": json.dumps(
                    {"spark.executor.memory": args.executor_memory}
                ),
            },
        )
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop-cluster"], env=script_env, check=False)

    result = {
        "benchmark": "scale_out",
        "lake": str(settings.lake.lake_path),
        "local": {k: v for k, v in local.items() if k != "banlist"} | {"master": "local[2]"},
        "cluster": {k: v for k, v in cluster.items() if k != "banlist"}
        | {"master": "standalone, 2 workers x 1 core", "executor_memory": args.executor_memory},
        "ratio_cluster_vs_local": round(cluster["wall_seconds"] / local["wall_seconds"], 2),
        "same_ban_list": local["run"] == cluster["run"] and local["banlist"] == cluster["banlist"],
        "machine": {"nproc": os.cpu_count()},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
