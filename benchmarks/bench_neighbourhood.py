"""Benchmark: the neighbourhood features' two backends, ``local`` against ``spark``, on one run.

Takes a run folder that the nightly or training flow left (its ``account_features`` and
``graph/account_links``) and computes the 1- and 2-hop neighbourhood features exactly as the
features stage does (:data:`jobs.features.table.NEIGHBOUR_SOURCE_FEATURES`, degree limit
``graph.neighbour_max_degree``), once with each backend, ``--repeats`` times each.
Each timing includes collecting the result to the driver as Arrow. Then it checks that the two
backends agree in every column for every account (nulls and NaN in the same places, every other
value with the same bits) and fails if they do not.

``--local-only`` times the local backend alone; ``--save`` writes its result and ``--expect``
checks it against one saved before (an A/B of a change to the local backend, bit for bit).
Reports the median seconds per backend, their ratio, the number of differing columns, and the
peak resident memory of the driver's Python process after the local runs (the local backend
computes there; the Spark JVM is not included). Writes JSON (default
``benchmarks/results/neighbourhood.json``).

    .venv/bin/python benchmarks/bench_neighbourhood.py --run <home>/runs/dt=<date>
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from benchkit import bench_home, timed, write_result


def differing_columns(local: pa.Table, spark: pa.Table) -> list[str]:
    """Columns that differ (rows matched by account id).

    Nulls and NaN must be in the same places; every other double must have the same bits.
    """
    local = local.sort_by("account_id")
    spark = spark.sort_by("account_id")
    if local.num_rows != spark.num_rows or not local["account_id"].equals(spark["account_id"]):
        return ["account_id"]
    differ = []
    for name in local.column_names:
        a, b = local[name].combine_chunks(), spark[name].combine_chunks()
        if a.type != b.type or not pc.all(pc.equal(a.is_null(), b.is_null())).as_py():
            differ.append(name)
            continue
        if pa.types.is_floating(a.type):
            values_a, values_b = np.asarray(a.fill_null(0.0)), np.asarray(b.fill_null(0.0))
            nan_a, nan_b = np.isnan(values_a), np.isnan(values_b)
            same = np.array_equal(nan_a, nan_b) and np.array_equal(
                values_a[~nan_a].view(np.int64), values_b[~nan_b].view(np.int64)
            )
            if not same:
                differ.append(name)
        elif not a.equals(b):
            differ.append(name)
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder (runs/dt=<date>)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/neighbourhood.json")
    parser.add_argument(
        "--local-only", action="store_true", help="time the local backend alone (an A/B of it)"
    )
    parser.add_argument("--save", help="write the local backend's result here (Parquet)")
    parser.add_argument(
        "--expect", help="a result saved by --save that the local backend must equal, bit for bit"
    )
    args = parser.parse_args()
    bench_home("neighbourhood")

    from flows.runtime import settings_for, spark_for
    from jobs.core.layout import RunLayout
    from jobs.features.neighbourhood import neighbour_aggregates
    from jobs.features.table import NEIGHBOUR_SOURCE_FEATURES

    settings = settings_for(None)
    spark = spark_for(settings)
    run = RunLayout.at(Path(args.run))
    accounts = spark.read.parquet(str(run.account_features)).select(
        "account_id", *NEIGHBOUR_SOURCE_FEATURES
    )
    links = spark.read.parquet(str(run.account_links))

    def collect(backend: str) -> pa.Table:
        return neighbour_aggregates(
            accounts,
            links,
            NEIGHBOUR_SOURCE_FEATURES,
            hops=2,
            max_degree=settings.graph.neighbour_max_degree,
            backend=backend,  # type: ignore[arg-type]
            local_max_paths=settings.graph.neighbour_local_max_paths,
        ).toArrow()

    local_s, local_runs, local = timed(lambda: collect("local"), args.repeats)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.save:
        pq.write_table(local, args.save)
    result: dict[str, Any] = {
        "benchmark": "neighbourhood",
        "run": str(run.root),
        "accounts": local.num_rows,
        "links": links.count(),
        "feature_columns": local.num_columns - 1,
        "local_seconds": local_s,
        "local_runs": local_runs,
        "driver_python_peak_rss_gib_after_local": round(peak_rss_gib, 2),
        "machine": {"spark_master": settings.spark.master},
    }
    differ: dict[str, list[str]] = {}
    if args.expect:
        differ["expected"] = differing_columns(local, pq.read_table(args.expect))
        result["differing_columns_from_expected"] = differ["expected"]
    if not args.local_only:
        spark_s, spark_runs, on_spark = timed(lambda: collect("spark"), args.repeats)
        differ["spark"] = differing_columns(local, on_spark)
        result.update(
            spark_seconds=spark_s,
            spark_runs=spark_runs,
            spark_over_local=round(spark_s / local_s, 2),
            differing_columns=differ["spark"],
        )
    write_result(result, args.out)
    for other, columns in differ.items():
        if columns:
            raise SystemExit(f"local and {other} differ in {len(columns)} column(s): {columns}")


if __name__ == "__main__":
    main()
