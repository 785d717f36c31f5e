"""Scoring inside Spark, with reasons a trust analyst can read.

In: the ``features`` table of a run and the champion's two boosters (the account model and the
combined model, :class:`models.farm_model.FarmModel`). Out: ``account_id, farm_id, component_id,
score, account_score, reasons, own_evidence, model_version`` for every account: ``account_score`` is
the account model's score (the account's own behaviour alone), ``score`` the combined model's,
``reasons`` the strongest contributions as sentences (:mod:`jobs.scoring.reasons`) and
``own_evidence`` whether the account score reaches the own-evidence bar (a ban needs it, see
:func:`jobs.banlists.actions.assign_actions`). Scoring runs in ``mapInArrow`` (Arrow batches); the
models travel to the executors once per task. Called by the nightly flow's score task and the tests.

Scores come from the models compiled to machine code with lleaves (:func:`compile_forest`),
which return LightGBM's predictions (to about 1e-18 here) several times faster than
``Booster.predict``; every task checks the two agree on its first rows and stops if they do
not. ``evaluator="lightgbm"`` scores with the boosters themselves. Reasons always come from
LightGBM's ``pred_contrib``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote, urlparse

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.features.table import GROUP_EVIDENCE
from jobs.scoring.explain import ReasonSettings, ScoringPlan, explain
from jobs.scoring.forest import (
    AGREEMENT_ROWS,
    CompiledForest,
    check_agreement,
    compile_forest,
    load_forest,
)

SCORE_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType(), False),
        T.StructField("farm_id", T.StringType(), True),
        T.StructField("component_id", T.StringType(), True),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("account_score", T.DoubleType(), False),
        T.StructField("reasons", T.ArrayType(T.StringType()), False),
        T.StructField("own_evidence", T.BooleanType(), False),
        T.StructField("model_version", T.StringType(), False),
    ]
)


_BATCH_SCHEMA = T.StructType(SCORE_SCHEMA.fields[:-1])  # model_version is added in Spark


_BATCH_ARROW_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string()),
        pa.field("farm_id", pa.string()),
        pa.field("component_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("account_score", pa.float64()),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("own_evidence", pa.bool_()),
    ]
)


Evaluator = Literal["compiled", "lightgbm"]


class ModelPair(Protocol):
    """What scoring needs of a model: the account booster and the combined booster."""

    account: lgb.Booster
    combined: lgb.Booster


@dataclass(frozen=True)
class _Shipped:
    """A model pair as it travels to the executors: model texts and compiled forests."""

    account_text: str
    combined_text: str
    account_forest: CompiledForest | None
    combined_forest: CompiledForest | None
    plan: ScoringPlan
    reasons: ReasonSettings

    @classmethod
    def of(cls, model: ModelPair, evaluator: str, reasons: ReasonSettings) -> _Shipped:
        compiled = evaluator == "compiled"
        return cls(
            model.account.model_to_string(),
            model.combined.model_to_string(),
            compile_forest(model.account) if compiled else None,
            compile_forest(model.combined) if compiled else None,
            ScoringPlan.of(model.account, model.combined),
            reasons,
        )


class _TaskScorer:
    """What one task scores with: the boosters (reasons) and the compiled forests (scores)."""

    def __init__(self, shipped: _Shipped):
        self.account = lgb.Booster(model_str=shipped.account_text)
        self.combined = lgb.Booster(model_str=shipped.combined_text)
        forests = (shipped.account_forest, shipped.combined_forest)
        self.compiled = [load_forest(f) if f is not None else None for f in forests]
        self.plan, self.reasons, self.checked = shipped.plan, shipped.reasons, False

    def _predict(self, which: int, x: np.ndarray) -> np.ndarray:
        booster = (self.account, self.combined)[which]
        compiled = self.compiled[which]
        if compiled is None:
            return booster.predict(x, num_threads=1)
        scores = compiled.predict(x, n_jobs=1)
        if not self.checked:
            check_agreement(booster, x[:AGREEMENT_ROWS], scores[:AGREEMENT_ROWS])
        return scores

    def __call__(
        self, ids: list[pa.Array], x: np.ndarray, evidence: pa.Array | None
    ) -> pa.RecordBatch:
        """One output batch: ``ids`` (account, farm, component) and the scores of ``x``."""
        x_account = self.plan.account_matrix(x)
        own = self._predict(0, x_account)
        x_combined = self.plan.combined_matrix(x, own)
        scores = self._predict(1, x_combined)
        self.checked = True
        rows = None
        if evidence is not None:
            rows = [None] * len(scores)
            for i in np.flatnonzero(scores >= self.reasons.min_score):
                rows[i] = evidence[int(i)].as_py() or []
        reasons, own_evidence = explain(
            self.account, self.combined, x_account, x_combined, scores, own, self.reasons, rows, 1
        )
        return pa.RecordBatch.from_arrays(
            [
                *ids,
                pa.array(scores, pa.float64()),
                pa.array(own, pa.float64()),
                reasons,
                pa.array(own_evidence, pa.bool_()),
            ],
            schema=_BATCH_ARROW_SCHEMA,
        )


def _checked(model: ModelPair, columns: list[str], evaluator: str) -> list[str]:
    """The input features, after checking the table has them and the evaluator exists."""
    needed = list(ScoringPlan.of(model.account, model.combined).inputs)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"features are missing columns the model expects: {missing}")
    if evaluator not in ("compiled", "lightgbm"):
        raise ValueError(f"unknown evaluator {evaluator!r}: use 'compiled' or 'lightgbm'")
    return needed


def score_accounts(
    features: DataFrame,
    model: ModelPair,
    model_version: str,
    reasons: ReasonSettings | None = None,
    evaluator: Evaluator = "compiled",
) -> DataFrame:
    """Score every account of a DataFrame in Spark (``mapInArrow``) and attach reasons.

    The features travel to Python as one ``array<double>`` column (packed by the JVM), which
    Arrow hands over as a single buffer: about a third cheaper than one column per feature.
    Scores come from the compiled forests (``evaluator="compiled"``, see
    :func:`compile_forest`; each task first checks them against LightGBM on
    :data:`AGREEMENT_ROWS` rows) or from LightGBM (``"lightgbm"``), one thread per task (Spark
    already runs one task per core): first the account model, then the combined model with the
    account score as one of its inputs. Every account scoring ``reasons.min_score`` or more gets
    its reasons (:func:`explain`); the others (no action) get none, which keeps scoring near
    plain prediction speed. A features table on disk is cheaper to score with
    :func:`score_parquet`.

    Raises:
        ValueError: the features table lacks a column the model was trained on, or the
            evaluator is unknown.
    """
    needed = _checked(model, features.columns, evaluator)
    shipped = _Shipped.of(model, evaluator, reasons or ReasonSettings())
    width = len(needed)
    has_evidence = GROUP_EVIDENCE in features.columns

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = _TaskScorer(shipped)
        for batch in batches:
            if batch.num_rows:
                # nulls in the features become NaN, which both evaluators treat as missing
                x = batch.column("_x").flatten().to_numpy(zero_copy_only=False)
                evidence = batch.column(GROUP_EVIDENCE) if has_evidence else None
                yield score([batch.column(i) for i in range(3)], x.reshape(-1, width), evidence)

    packed = features.select(
        "account_id",
        F.col("farm_id").cast("string").alias("farm_id"),
        F.col("component_id").cast("string").alias("component_id"),
        F.array(*[F.col(c).cast("double") for c in needed]).alias("_x"),
        *([GROUP_EVIDENCE] if has_evidence else []),
    )
    scored = packed.mapInArrow(score_batches, _BATCH_SCHEMA)
    return scored.withColumn("model_version", F.lit(model_version))


def score_parquet(
    spark: SparkSession,
    path: str,
    model: ModelPair,
    model_version: str,
    reasons: ReasonSettings | None = None,
    evaluator: Evaluator = "compiled",
    max_rows_per_task: int | None = None,
) -> tuple[DataFrame, str]:
    """Score a features table stored as Parquet; the executors read the files themselves.

    :func:`score_accounts` moves every feature value from the JVM to Python, which on 1M rows
    costs more than the scoring (``benchmarks/bench_scoring.py``). Here Spark only hands each
    task a list of Parquet row-group slices; the task reads them with pyarrow, straight into
    the matrix the models take, and returns the same rows and columns as
    :func:`score_accounts` (the same scores and reasons: the values are the same doubles).
    Files an executor cannot open as a local path (``s3a://``, ``hdfs://``) are scored through
    :func:`score_accounts` instead. Returns the scores and which way was taken (``"parquet"``
    or ``"dataframe"``).

    Each task gets a slice of one row group: at most ``max_rows_per_task`` rows (default: the
    table spread over Spark's default parallelism, at least :data:`_MIN_TASK_ROWS`), so a table
    written as one big row group still keeps every core busy.

    Raises:
        ValueError: the table lacks a column the model was trained on, or the evaluator is
            unknown.
    """
    table = spark.read.parquet(path)
    needed = _checked(model, table.columns, evaluator)
    local = [_local_path(f) for f in sorted(table.inputFiles())]
    units = (
        [] if None in local else _slices(local, max_rows_per_task or _rows_per_task(spark, local))
    )
    if not units:  # not local to the executors, or empty: nothing to hand out
        scored = score_accounts(table, model, model_version, reasons, evaluator)
        return scored, "dataframe"
    has_evidence = GROUP_EVIDENCE in table.columns
    columns = [
        "account_id",
        "farm_id",
        "component_id",
        *needed,
        *([GROUP_EVIDENCE] if has_evidence else []),
    ]
    shipped = _Shipped.of(model, evaluator, reasons or ReasonSettings())

    def score_units(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = _TaskScorer(shipped)
        for batch in batches:
            for unit in batch.to_pylist():
                for part in _read_slice(unit, columns):
                    ids = [_as_string(part.column(c)) for c in columns[:3]]
                    evidence = part.column(GROUP_EVIDENCE) if has_evidence else None
                    yield score(ids, _matrix(part, needed), evidence)

    work = spark.createDataFrame(
        units, "file string, row_group int, start long, stop long"
    ).repartition(len(units))
    scored = work.mapInArrow(score_units, _BATCH_SCHEMA)
    return scored.withColumn("model_version", F.lit(model_version)), "parquet"


_READ_ROWS = 65_536  # rows per pyarrow batch: about 50 MB of features at 100 columns


_MIN_TASK_ROWS = 65_536  # smaller slices cost more in task overhead than they spread


def _rows_per_task(spark: SparkSession, files: list[str]) -> int:
    """The table's rows over Spark's default parallelism (shuffle partitions over Connect)."""
    try:
        parallelism = spark.sparkContext.defaultParallelism
    except Exception:  # noqa: BLE001 (Spark Connect has no SparkContext)
        parallelism = int(spark.conf.get("spark.sql.shuffle.partitions") or 1)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return max(_MIN_TASK_ROWS, math.ceil(total / max(1, parallelism)))


def _slices(files: list[str], max_rows: int) -> list[tuple[str, int, int, int]]:
    """``(file, row_group, start, stop)`` units of at most ``max_rows`` rows, in equal slices."""
    units = []
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            step = math.ceil(rows / max(1, math.ceil(rows / max_rows))) if rows else 1
            units += [
                (file, group, start, min(rows, start + step)) for start in range(0, rows, step)
            ]
    return units


def _read_slice(unit: dict, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Rows ``start`` to ``stop`` of one row group (pyarrow decodes the group from its start)."""
    offset = 0
    for part in pq.ParquetFile(unit["file"]).iter_batches(
        batch_size=_READ_ROWS, row_groups=[unit["row_group"]], columns=columns
    ):
        end = offset + part.num_rows
        first, last = max(unit["start"], offset), min(unit["stop"], end)
        if first < last:
            yield part.slice(first - offset, last - first)
        offset = end
        if offset >= unit["stop"]:
            return


def _local_path(uri: str) -> str | None:
    """The filesystem path of a ``file:`` URI (or a bare path); None for any other scheme."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return None


def _matrix(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """The features as a float64 matrix; nulls become NaN (missing, for both evaluators).

    Row-major (C order), the layout the compiled forest reads without a copy.
    """
    x = np.empty((batch.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = pc.cast(batch.column(name), pa.float64())
        x[:, j] = column.to_numpy(zero_copy_only=False)  # nulls -> NaN
    return x


def _as_string(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
