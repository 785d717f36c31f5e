"""Benchmark: scoring inside Spark (``mapInPandas``) against native LightGBM on the driver.

Takes a run's ``features`` table and the registry champion (as left by ``bench_nightly.py`` or
``bench_unseen_operator.py``), repeats the rows with fresh account ids up to ``--rows`` (scoring
cost does not depend on which accounts they are), and measures, ``--repeats`` times each:

- ``native_predict``: ``booster.predict`` on the whole matrix in one process (scores only);
- ``native_explain``: the same plus ``pred_contrib`` and the readable reasons for every row;
- ``native_explain_listed``: reasons only for rows at or above ``bans.watch_threshold`` (what
  the nightly job does), still one process;
- ``spark_scores_only``: :func:`jobs.score.score_accounts` over the Spark table with no
  reasons (the issue's bar: Spark scoring rows/s against native ``predict``), written to Parquet;
- ``spark_score``: the same with reasons for rows at or above the watch threshold (what the
  nightly job does), written to Parquet.

Probes, to show where the Spark time goes: the same ``mapInArrow`` moving the features to
Python and returning only the ids (one column per feature, and packed into one array column),
and Spark reading and summing every feature column.

Reports rows/s and the ratios of Spark rows/s over ``native_predict`` (both Spark variants) and
of ``spark_score`` over ``native_explain_listed``. The native figures start from a matrix
already in memory; the Spark figures include reading the features from Parquet. Writes JSON
(default ``benchmarks/results/scoring.json``).

    .venv/bin/python benchmarks/bench_scoring.py --features <run>/features \\
        --tracking-uri sqlite:///<home>/mlflow.db --rows 1000000
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from benchkit import bench_home, timed, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="a run's features Parquet folder")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model", default="farmwatch-farm-model")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/scoring.json")
    args = parser.parse_args()

    home = bench_home("scoring")
    import mlflow
    import numpy as np
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from flows.runtime import settings_for, spark_for
    from jobs.score import explain, score_accounts

    mlflow.set_tracking_uri(args.tracking_uri)
    booster = mlflow.lightgbm.load_model(f"models:/{args.model}@champion")
    spark = spark_for(settings_for(None))
    base = spark.read.parquet(args.features)
    n_base = base.count()
    copies = -(-args.rows // n_base)
    table = (
        base.crossJoin(spark.range(copies).withColumnRenamed("id", "_copy"))
        .withColumn("account_id", F.concat_ws("#", "account_id", F.col("_copy").cast("string")))
        .drop("_copy")
        .limit(args.rows)
    )
    table.write.mode("overwrite").parquet(str(home / "features"))
    table = spark.read.parquet(str(home / "features"))
    rows = table.count()
    matrix = table.select(*booster.feature_name()).toPandas().to_numpy(dtype=np.float64)

    native_predict = timed(lambda: booster.predict(matrix), args.repeats)
    watch = settings_for(None).bans.watch_threshold
    native_explain = timed(lambda: explain(booster, matrix, 3), args.repeats)
    native_explain_listed = timed(lambda: explain(booster, matrix, 3, watch), args.repeats)

    def spark_score(explain_min_score: float) -> Any:
        def run() -> None:
            scored = score_accounts(table, booster, "bench", 3, explain_min_score)
            scored.write.mode("overwrite").parquet(str(home / "scores"))

        return run

    spark_scores_only = timed(spark_score(math.inf), args.repeats)
    spark_scored = timed(spark_score(watch), args.repeats)

    # where the Spark time goes: moving the features to Python with no model at all
    names = list(booster.feature_name())
    ids_only = T.StructType([T.StructField("account_id", T.StringType())])

    def transfer(packed: bool) -> Any:
        columns = (
            [F.array(*[F.col(c).cast("double") for c in names]).alias("_x")] if packed else names
        )

        def run() -> None:
            moved = table.select("account_id", *columns).mapInArrow(
                lambda batches: (b.select(["account_id"]) for b in batches), ids_only
            )
            moved.write.mode("overwrite").parquet(str(home / "moved"))

        return run

    transfer_columns = timed(transfer(packed=False), args.repeats)
    transfer_packed = timed(transfer(packed=True), args.repeats)
    read_and_sum = timed(lambda: table.select(*[F.sum(c) for c in names]).collect(), args.repeats)
    result = {
        "benchmark": "scoring",
        "rows": rows,
        "features": len(booster.feature_name()),
        "trees": booster.num_trees(),
        "native_predict": {"median_seconds": native_predict[0], "runs": native_predict[1]},
        "native_explain": {"median_seconds": native_explain[0], "runs": native_explain[1]},
        "native_explain_listed": {
            "median_seconds": native_explain_listed[0],
            "runs": native_explain_listed[1],
        },
        "explain_min_score": watch,
        "spark_scores_only": {
            "median_seconds": spark_scores_only[0],
            "runs": spark_scores_only[1],
        },
        "spark_score": {"median_seconds": spark_scored[0], "runs": spark_scored[1]},
        "probe_transfer_only_columns": {
            "median_seconds": transfer_columns[0],
            "runs": transfer_columns[1],
        },
        "probe_transfer_only_packed": {
            "median_seconds": transfer_packed[0],
            "runs": transfer_packed[1],
        },
        "probe_spark_read_and_sum": {"median_seconds": read_and_sum[0], "runs": read_and_sum[1]},
        "rows_per_second": {
            "native_predict": round(rows / native_predict[0]),
            "native_explain": round(rows / native_explain[0]),
            "native_explain_listed": round(rows / native_explain_listed[0]),
            "spark_scores_only": round(rows / spark_scores_only[0]),
            "spark_score": round(rows / spark_scored[0]),
        },
        "spark_scores_only_rows_per_second_over_native_predict": round(
            native_predict[0] / spark_scores_only[0], 3
        ),
        "spark_rows_per_second_over_native_predict": round(native_predict[0] / spark_scored[0], 3),
        "spark_rows_per_second_over_native_explain_listed": round(
            native_explain_listed[0] / spark_scored[0], 3
        ),
        "machine": {"nproc": os.cpu_count(), "spark_master": settings_for(None).spark.master},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
