"""Benchmark: scoring inside Spark (``mapInPandas``) against native LightGBM on the driver.

Takes a run's ``features`` table and the registry champion (as left by ``bench_nightly.py`` or
``bench_unseen_operator.py``), repeats the rows with fresh account ids up to ``--rows`` (scoring
cost does not depend on which accounts they are), writes them in as many files as the features
stage does, and measures, ``--repeats`` times each:

- ``native_predict``: LightGBM ``predict`` of both models (the account model, then the combined
  model reading its score) on the whole matrix in one process (scores only);
- ``native_compiled_predict``: the same with the lleaves-compiled forest (for reference);
- ``native_predict_parquet``: the same from the features Parquet to a scores
  Parquet (pyarrow read, matrix, predict, write) in one process: the like-for-like reference
  for ``spark_scores_only``;
- ``native_explain``: the same plus ``pred_contrib`` and the readable reasons for every row;
- ``native_explain_listed``: reasons only for rows at or above ``bans.watch_threshold`` (what
  the nightly job does), still one process;
- ``spark_scores_only``: :func:`jobs.scoring.score.score_parquet` (what the nightly job runs: the
  executors read the features Parquet, compiled forest) with no reasons, written to Parquet
  (the issue's bar: Spark scoring rows/s against native ``predict``);
- ``spark_scores_only_lightgbm``: the same with ``evaluator="lightgbm"``;
- ``spark_scores_only_dataframe``: :func:`jobs.scoring.score.score_accounts` (the features
  moved from the JVM, the way for tables executors cannot open locally), compiled forest;
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
from pathlib import Path
from typing import Any

from benchkit import bench_home, timed, write_result

Timing = tuple[float, list[float], Any]

NATIVE = (
    "native_predict",
    "native_compiled_predict",
    "native_predict_parquet",
    "native_explain",
    "native_explain_listed",
)
SPARK = (
    "spark_scores_only",
    "spark_scores_only_lightgbm",
    "spark_scores_only_dataframe",
    "spark_score",
)
PROBES = (
    "probe_transfer_only_columns",
    "probe_transfer_only_packed",
    "probe_spark_read_and_sum",
)


def parse_args() -> argparse.Namespace:
    """The command line: a run's features, the registry to take the champion from, the sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="a run's features Parquet folder")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model", default="farmwatch-farm-model")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/scoring.json")
    return parser.parse_args()


def repeat_features(spark: Any, features: str, rows: int, home: Path, partitions: int) -> Any:
    """The features repeated with fresh account ids up to ``rows``, written and read back."""
    from pyspark.sql import functions as F

    base = spark.read.parquet(features)
    n_base = base.count()
    copies = -(-rows // n_base)
    table = (
        base.crossJoin(spark.range(copies).withColumnRenamed("id", "_copy"))
        .withColumn("account_id", F.concat_ws("#", "account_id", F.col("_copy").cast("string")))
        .drop("_copy")
        .limit(rows)
        # as many files as the features stage writes (one per shuffle partition): a single
        # file of one row group would be read by one task, on one core
        .repartition(partitions)
    )
    table.write.mode("overwrite").parquet(str(home / "features"))
    return spark.read.parquet(str(home / "features"))


def time_native(
    model: Any, plan: Any, matrix: Any, home: Path, repeats: int, watch: float
) -> tuple[dict[str, Timing], dict[str, float]]:
    """The one-process LightGBM (and compiled-forest) timings, and the forest's compile figures."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.scoring.explain import ReasonSettings, explain
    from jobs.scoring.forest import compile_forest, load_forest

    names = list(plan.inputs)
    timings: dict[str, Timing] = {}

    def predict(x: Any) -> Any:
        """Both models, the way the scorer runs them: account score, then combined score."""
        own = model.account.predict(plan.account_matrix(x))
        return model.combined.predict(plan.combined_matrix(x, own)), own

    timings["native_predict"] = timed(lambda: predict(matrix), repeats)
    started = time.perf_counter()
    forests = [load_forest(compile_forest(b)) for b in (model.account, model.combined)]
    compile_seconds = round(time.perf_counter() - started, 2)

    def compiled(x: Any) -> Any:
        own = forests[0].predict(plan.account_matrix(x))
        return forests[1].predict(plan.combined_matrix(x, own))

    timings["native_compiled_predict"] = timed(lambda: compiled(matrix), repeats)
    compiled_gap = float(np.max(np.abs(compiled(matrix) - predict(matrix)[0])))

    def native_parquet() -> None:
        read = pq.read_table(str(home / "features"), columns=["account_id", *names])
        x = np.column_stack(
            [read.column(n).to_numpy().astype(np.float64, copy=False) for n in names]
        )
        scores, _ = predict(x)
        pq.write_table(
            pa.table({"account_id": read.column("account_id"), "score": scores}),
            str(home / "native_scores.parquet"),
        )

    timings["native_predict_parquet"] = timed(native_parquet, repeats)

    def native_reasons(min_score: float) -> Any:
        scores, own = predict(matrix)
        xa, xc = plan.account_matrix(matrix), plan.combined_matrix(matrix, own)
        settings = ReasonSettings(3, min_score)
        return explain(model.account, model.combined, xa, xc, scores, own, settings)

    timings["native_explain"] = timed(lambda: native_reasons(0.0), repeats)
    timings["native_explain_listed"] = timed(lambda: native_reasons(watch), repeats)
    forest = {"max_abs_difference_from_lightgbm": compiled_gap, "compile_seconds": compile_seconds}
    return timings, forest


def time_spark(
    spark: Any, model: Any, table: Any, home: Path, repeats: int, watch: float
) -> dict[str, Timing]:
    """The Spark scoring timings: the Parquet path (both evaluators) and the DataFrame path."""
    from jobs.scoring.explain import ReasonSettings
    from jobs.scoring.score import score_accounts, score_parquet

    def spark_score(explain_min_score: float, evaluator: str = "compiled") -> Any:
        def run() -> None:
            scored, way = score_parquet(
                spark,
                str(home / "features"),
                model,
                "bench",
                ReasonSettings(3, explain_min_score),
                evaluator,
            )
            assert way == "parquet", way
            scored.write.mode("overwrite").parquet(str(home / "scores"))

        return run

    def spark_dataframe() -> None:
        scored = score_accounts(table, model, "bench", ReasonSettings(3, math.inf))
        scored.write.mode("overwrite").parquet(str(home / "scores"))

    return {
        "spark_scores_only": timed(spark_score(math.inf), repeats),
        "spark_scores_only_lightgbm": timed(spark_score(math.inf, "lightgbm"), repeats),
        "spark_scores_only_dataframe": timed(spark_dataframe, repeats),
        "spark_score": timed(spark_score(watch), repeats),
    }


def time_probes(table: Any, names: list[str], home: Path, repeats: int) -> dict[str, Timing]:
    """Where the Spark time goes: moving the features to Python with no model at all."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

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

    return {
        "probe_transfer_only_columns": timed(transfer(packed=False), repeats),
        "probe_transfer_only_packed": timed(transfer(packed=True), repeats),
        "probe_spark_read_and_sum": timed(
            lambda: table.select(*[F.sum(c) for c in names]).collect(), repeats
        ),
    }


def median_and_runs(timing: Timing) -> dict[str, Any]:
    """One variant's entry in the result: its median seconds and every run's seconds."""
    return {"median_seconds": timing[0], "runs": timing[1]}


def rates(rows: int, timings: dict[str, Timing]) -> dict[str, Any]:
    """Rows per second of every scorer, and Spark rows/s over native rows/s."""
    seconds = {name: timing[0] for name, timing in timings.items()}
    native, spark_score = seconds["native_predict"], seconds["spark_score"]
    return {
        "rows_per_second": {name: round(rows / seconds[name]) for name in NATIVE + SPARK},
        "spark_scores_only_rows_per_second_over_native_predict": round(
            native / seconds["spark_scores_only"], 3
        ),
        "spark_scores_only_lightgbm_rows_per_second_over_native_predict": round(
            native / seconds["spark_scores_only_lightgbm"], 3
        ),
        "spark_scores_only_rows_per_second_over_native_predict_parquet": round(
            seconds["native_predict_parquet"] / seconds["spark_scores_only"], 3
        ),
        "spark_scores_only_dataframe_rows_per_second_over_native_predict": round(
            native / seconds["spark_scores_only_dataframe"], 3
        ),
        "spark_rows_per_second_over_native_predict": round(native / spark_score, 3),
        "spark_rows_per_second_over_native_explain_listed": round(
            seconds["native_explain_listed"] / spark_score, 3
        ),
    }


def main() -> None:
    """Score the repeated features every way, ``--repeats`` times each, and write the JSON."""
    args = parse_args()
    home = bench_home("scoring")
    import numpy as np

    from flows.runtime import settings_for, spark_for
    from jobs.core.config import ModelSettings
    from jobs.scoring.explain import ScoringPlan
    from models.registry import load_champion

    model, _ = load_champion(ModelSettings(registered_model=args.model), args.tracking_uri)
    plan = ScoringPlan.of(model.account, model.combined)
    spark = spark_for(settings_for(None))
    partitions = settings_for(None).spark.shuffle_partitions
    table = repeat_features(spark, args.features, args.rows, home, partitions)
    rows = table.count()
    names = list(plan.inputs)
    matrix = table.select(*names).toPandas().to_numpy(dtype=np.float64)
    watch = settings_for(None).bans.watch_threshold

    timings, forest = time_native(model, plan, matrix, home, args.repeats, watch)
    timings |= time_spark(spark, model, table, home, args.repeats, watch)
    timings |= time_probes(table, names, home, args.repeats)
    result: dict[str, Any] = {
        "benchmark": "scoring",
        "rows": rows,
        "features": len(names),
        "trees": {"account": model.account.num_trees(), "combined": model.combined.num_trees()},
    }
    result |= {name: median_and_runs(timings[name]) for name in NATIVE}
    result["native_compiled_predict"] |= forest
    result["explain_min_score"] = watch
    result |= {name: median_and_runs(timings[name]) for name in SPARK + PROBES}
    result |= rates(rows, timings)
    result["machine"] = {"nproc": os.cpu_count(), "spark_master": settings_for(None).spark.master}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
