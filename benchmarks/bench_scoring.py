"""Benchmark: scoring inside Spark (``mapInPandas``) against native LightGBM on the driver.

Takes a run's ``features`` table and the registry champion (as left by ``bench_nightly.py`` or
``bench_unseen_operator.py``), repeats the rows with fresh account ids up to ``--rows`` (scoring
cost does not depend on which accounts they are), writes them in as many files as the features
stage does, and measures, ``--repeats`` times each:

- ``native_predict``: ``booster.predict`` on the whole matrix in one process (scores only);
- ``native_compiled_predict``: the same with the lleaves-compiled forest (for reference);
- ``native_predict_parquet``: ``booster.predict`` from the features Parquet to a scores
  Parquet (pyarrow read, matrix, predict, write) in one process: the like-for-like reference
  for ``spark_scores_only``;
- ``native_explain``: the same plus ``pred_contrib`` and the readable reasons for every row;
- ``native_explain_listed``: reasons only for rows at or above ``bans.watch_threshold`` (what
  the nightly job does), still one process;
- ``spark_scores_only``: :func:`jobs.score.score_parquet` (what the nightly job runs: the
  executors read the features Parquet, compiled forest) with no reasons, written to Parquet
  (the issue's bar: Spark scoring rows/s against native ``predict``);
- ``spark_scores_only_lightgbm``: the same with ``evaluator="lightgbm"``;
- ``spark_scores_only_dataframe``: :func:`jobs.score.score_accounts` (the features moved from
  the JVM, the way for tables executors cannot open locally), compiled forest;
- ``spark_score``: the same with reasons for rows at or above the watch threshold (what the
  nightly job does), written to Parquet.

Probes, to show where the Spark time goes: the same ``mapInArrow`` moving the features to
Python and returning only the ids (one column per feature, and packed into one array column),
and Spark reading and summing every feature column.

Reports rows/s and the ratios of Spark rows/s over native rows/s: ``spark_scores_only`` over
``native_predict`` (the strictest: Spark reads and writes Parquet, native starts from memory),
over ``native_predict_parquet`` (both Parquet to Parquet), the other Spark variants over
``native_predict``, and ``spark_score`` over ``native_explain_listed``. The compile time of the
forest is reported once (the repeats reuse it, as one run's tasks do).
Writes JSON (default ``benchmarks/results/scoring.json``).

    .venv/bin/python benchmarks/bench_scoring.py --features <run>/features \\
        --tracking-uri sqlite:///<home>/mlflow.db --rows 1000000
"""

from __future__ import annotations

import argparse
import math
import os
import time
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
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from flows.runtime import settings_for, spark_for
    from jobs.score import compile_forest, explain, load_forest, score_accounts, score_parquet

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
        # as many files as the features stage writes (one per shuffle partition): a single
        # file of one row group would be read by one task, on one core
        .repartition(settings_for(None).spark.shuffle_partitions)
    )
    table.write.mode("overwrite").parquet(str(home / "features"))
    table = spark.read.parquet(str(home / "features"))
    rows = table.count()
    matrix = table.select(*booster.feature_name()).toPandas().to_numpy(dtype=np.float64)

    names = list(booster.feature_name())
    native_predict = timed(lambda: booster.predict(matrix), args.repeats)
    started = time.perf_counter()
    forest = load_forest(compile_forest(booster))
    compile_seconds = round(time.perf_counter() - started, 2)
    native_compiled = timed(lambda: forest.predict(matrix), args.repeats)
    compiled_gap = float(np.max(np.abs(forest.predict(matrix) - booster.predict(matrix))))

    def native_parquet() -> None:
        read = pq.read_table(str(home / "features"), columns=["account_id", *names])
        x = np.column_stack(
            [read.column(n).to_numpy().astype(np.float64, copy=False) for n in names]
        )
        scores = booster.predict(x)
        pq.write_table(
            pa.table({"account_id": read.column("account_id"), "score": scores}),
            str(home / "native_scores.parquet"),
        )

    native_predict_parquet = timed(native_parquet, args.repeats)
    watch = settings_for(None).bans.watch_threshold
    native_explain = timed(lambda: explain(booster, matrix, 3), args.repeats)
    native_explain_listed = timed(lambda: explain(booster, matrix, 3, watch), args.repeats)

    def spark_score(explain_min_score: float, evaluator: str = "compiled") -> Any:
        def run() -> None:
            scored, way = score_parquet(
                spark, str(home / "features"), booster, "bench", 3, explain_min_score, evaluator
            )
            assert way == "parquet", way
            scored.write.mode("overwrite").parquet(str(home / "scores"))

        return run

    def spark_dataframe() -> None:
        scored = score_accounts(table, booster, "bench", 3, math.inf)
        scored.write.mode("overwrite").parquet(str(home / "scores"))

    spark_scores_only = timed(spark_score(math.inf), args.repeats)
    spark_scores_only_lightgbm = timed(spark_score(math.inf, "lightgbm"), args.repeats)
    spark_scores_only_dataframe = timed(spark_dataframe, args.repeats)
    spark_scored = timed(spark_score(watch), args.repeats)

    # where the Spark time goes: moving the features to Python with no model at all
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
        "native_compiled_predict": {
            "median_seconds": native_compiled[0],
            "runs": native_compiled[1],
            "max_abs_difference_from_lightgbm": compiled_gap,
            "compile_seconds": compile_seconds,
        },
        "native_predict_parquet": {
            "median_seconds": native_predict_parquet[0],
            "runs": native_predict_parquet[1],
        },
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
        "spark_scores_only_lightgbm": {
            "median_seconds": spark_scores_only_lightgbm[0],
            "runs": spark_scores_only_lightgbm[1],
        },
        "spark_scores_only_dataframe": {
            "median_seconds": spark_scores_only_dataframe[0],
            "runs": spark_scores_only_dataframe[1],
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
            "native_compiled_predict": round(rows / native_compiled[0]),
            "native_predict_parquet": round(rows / native_predict_parquet[0]),
            "native_explain": round(rows / native_explain[0]),
            "native_explain_listed": round(rows / native_explain_listed[0]),
            "spark_scores_only": round(rows / spark_scores_only[0]),
            "spark_scores_only_lightgbm": round(rows / spark_scores_only_lightgbm[0]),
            "spark_scores_only_dataframe": round(rows / spark_scores_only_dataframe[0]),
            "spark_score": round(rows / spark_scored[0]),
        },
        "spark_scores_only_rows_per_second_over_native_predict": round(
            native_predict[0] / spark_scores_only[0], 3
        ),
        "spark_scores_only_lightgbm_rows_per_second_over_native_predict": round(
            native_predict[0] / spark_scores_only_lightgbm[0], 3
        ),
        "spark_scores_only_rows_per_second_over_native_predict_parquet": round(
            native_predict_parquet[0] / spark_scores_only[0], 3
        ),
        "spark_scores_only_dataframe_rows_per_second_over_native_predict": round(
            native_predict[0] / spark_scores_only_dataframe[0], 3
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
