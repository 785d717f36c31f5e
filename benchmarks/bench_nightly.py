"""Benchmark: the nightly pipeline stage by stage on a generated world.

Generates a ``distillation-campaign`` world of ``--accounts`` accounts (or reuses ``--lake``),
trains a model, runs the nightly flow, and records the seconds of each stage (from the flow's
own timings), the wall time of training and of the whole nightly run, and the ground-truth
figures. Writes JSON (default ``benchmarks/results/nightly.json``).

    .venv/bin/python benchmarks/bench_nightly.py --accounts 1000000
"""

from __future__ import annotations

import argparse
import os
import time

from benchkit import bench_home, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lake", help="reuse a generated world instead of generating one")
    parser.add_argument("--out", default="benchmarks/results/nightly.json")
    args = parser.parse_args()

    bench_home("nightly", args.lake)
    from flows.runtime import configure_prefect_env, settings_for, spark_for

    settings = settings_for(None)
    configure_prefect_env(settings)
    from flows.nightly import nightly_flow
    from flows.training import training_flow
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    generate_seconds = None
    if not args.lake:
        start = time.perf_counter()
        generate(
            spark_for(settings),
            build_spec("distillation-campaign", args.accounts, args.seed),
            settings.lake.lake_path,
        )
        generate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trained = training_flow()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summary = nightly_flow(resume=False)  # measure every stage, not the ones training left
    nightly_seconds = time.perf_counter() - start
    result = {
        "benchmark": "nightly",
        "accounts": summary["accounts_scored"],
        "generate_seconds": generate_seconds,
        "train_flow_seconds": round(train_seconds, 1),
        "nightly_flow_seconds": round(nightly_seconds, 1),
        "nightly_stage_seconds": {k: round(v, 1) for k, v in summary["stage_seconds"].items()},
        "components_backend": summary["components_backend"],
        "holdout": trained["metrics"],
        "ground_truth": summary.get("ground_truth"),
        "banned": summary["banned"],
        "machine": {"nproc": os.cpu_count(), "spark_master": settings.spark.master},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
