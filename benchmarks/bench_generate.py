"""Benchmark: how long the synthetic-world generator takes for N accounts.

Generates the ``distillation-campaign`` world ``--repeats`` times into a temporary folder with
the default Spark settings (``local[*]``), prints wall seconds per repeat, the median, rows per
table and rows per second, and writes the figures as JSON (default
``benchmarks/results/generate.json``).

    .venv/bin/python benchmarks/bench_generate.py --accounts 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyspark

from jobs.core.config import SparkSettings
from jobs.core.session import build_session
from jobs.world.generate import generate
from jobs.world.spec import build_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/generate.json")
    args = parser.parse_args()

    spark = build_session(SparkSettings())
    spec = build_spec("distillation-campaign", args.accounts, args.seed)
    seconds: list[float] = []
    counts: dict[str, int] = {}
    for repeat in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="farmwatch-bench-"))
        try:
            start = time.perf_counter()
            counts = generate(spark, spec, folder / "lake")
            seconds.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"repeat {repeat + 1}: {seconds[-1]:.1f}s")
    median = statistics.median(seconds)
    total_rows = sum(counts.values())
    result = {
        "benchmark": "generate",
        "scenario": spec.scenario,
        "accounts": args.accounts,
        "seconds": [round(s, 2) for s in seconds],
        "median_seconds": round(median, 2),
        "rows": counts,
        "rows_per_second": round(total_rows / median),
        "note": "wall time includes writing zstd Parquet and re-reading each table to count it",
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "pyspark": pyspark.__version__,
            "spark_master": "local[*]",
        },
    }
    print(
        f"accounts {args.accounts:,}: median {median:.1f}s over {len(seconds)} run(s), "
        f"{total_rows:,} rows, {result['rows_per_second']:,} rows/s"
    )
    print("rows: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    spark.stop()


if __name__ == "__main__":
    main()
