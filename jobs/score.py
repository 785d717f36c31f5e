"""Scoring inside Spark, with reasons a trust analyst can read.

In: the ``features`` table of a run and the champion's two boosters (the account model and the
combined model, :class:`models.farm_model.FarmModel`). Out: ``account_id, farm_id,
component_id, score, account_score, reasons, own_evidence, model_version`` for every account:
``account_score`` is the account model's score (the account's own behaviour alone), ``score``
the combined model's, ``reasons`` the strongest contributions as sentences (:mod:`jobs.reasons`)
and ``own_evidence`` whether the account score reaches the own-evidence bar (a ban needs it,
see :func:`jobs.publish.assign_actions`). Scoring runs in ``mapInArrow`` (Arrow batches); the
models travel to the executors once per task. Called by the nightly flow's score task and the
tests.

Scores come from the models compiled to machine code with lleaves (:func:`compile_forest`),
which return LightGBM's predictions (to about 1e-18 here) several times faster than
``Booster.predict``; every task checks the two agree on its first rows and stops if they do
not. ``evaluator="lightgbm"`` scores with the boosters themselves. Reasons always come from
LightGBM's ``pred_contrib``.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlparse

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.features import GROUP_EVIDENCE
from jobs.reasons import is_unusual, reason_text

ACCOUNT_SCORE = "account_score"

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
OWN_REASONS_PER_ACCOUNT_SCORE = 2  # own reasons cited where the account score ranks
GROUP_REASONS_PER_ANOMALY = 2  # the group's sentences cited where its anomaly ranks


@dataclass(frozen=True)
class ScoringPlan:
    """Where each model's features sit in the scored matrix (one column per input feature)."""

    inputs: tuple[str, ...]
    account_columns: tuple[int, ...]
    combined_columns: tuple[int, ...]  # -1: the account score

    @classmethod
    def of(cls, account: lgb.Booster, combined: lgb.Booster) -> ScoringPlan:
        """The plan for a model pair (:class:`models.farm_model.FarmModel`'s two boosters)."""
        inputs = list(account.feature_name())
        inputs += [c for c in combined.feature_name() if c != ACCOUNT_SCORE and c not in inputs]
        position = {name: i for i, name in enumerate(inputs)}
        return cls(
            tuple(inputs),
            tuple(position[c] for c in account.feature_name()),
            tuple(-1 if c == ACCOUNT_SCORE else position[c] for c in combined.feature_name()),
        )

    def account_matrix(self, x: np.ndarray) -> np.ndarray:
        """The account model's input (C order, as the compiled forest reads it)."""
        return np.ascontiguousarray(x[:, list(self.account_columns)])

    def combined_matrix(self, x: np.ndarray, account_score: np.ndarray) -> np.ndarray:
        """The combined model's input, the account score in its column."""
        out = np.empty((len(x), len(self.combined_columns)), dtype=np.float64)
        for j, column in enumerate(self.combined_columns):
            out[:, j] = account_score if column < 0 else x[:, column]
        return out


@dataclass(frozen=True)
class ReasonSettings:
    """What the reasons need: how many, from which score, own-evidence bar, the reference."""

    top_n: int = 3
    min_score: float = 0.0
    own_min_score: float = 0.5
    reference: dict[str, Any] = field(default_factory=dict)


def explain(
    account: lgb.Booster,
    combined: lgb.Booster,
    x_account: np.ndarray,
    x_combined: np.ndarray,
    scores: np.ndarray,
    account_scores: np.ndarray,
    settings: ReasonSettings,
    evidence: list[list[str] | None] | None = None,
    threads: int = 0,
) -> tuple[pa.ListArray, np.ndarray]:
    """Reasons for the rows scoring ``settings.min_score`` or more, and own evidence for all.

    ``pred_contrib`` of the combined model ranks the reasons. Where the account score ranks,
    the account model's own strongest contributions are cited instead (up to
    :data:`OWN_REASONS_PER_ACCOUNT_SCORE`), each against what ordinary accounts show; where the
    group anomaly ranks, the group's own sentences from :mod:`jobs.anomaly` (``evidence``, the
    row's sentences strongest first) say what its accounts do. An account has evidence of
    its own when its account score reaches ``settings.own_min_score``; its strongest own reason
    is then always among its reasons. Rows below ``min_score`` get no reasons (``pred_contrib``
    costs about twenty plain predictions). The reasons come as an Arrow ``list<string>`` array.
    """
    own = account_scores >= settings.own_min_score
    counts = np.zeros(len(scores), dtype=np.int32)
    texts: list[str] = []
    rows = np.flatnonzero(scores >= settings.min_score)
    if len(rows):
        combined_names = list(combined.feature_name())
        account_names = list(account.feature_name())
        by_group = combined.predict(x_combined[rows], pred_contrib=True, num_threads=threads)
        by_own = account.predict(x_account[rows], pred_contrib=True, num_threads=threads)
        for i, row in enumerate(rows):
            own_texts = _own_reasons(
                account_names, x_account[row], by_own[i, : len(account_names)], settings
            )
            picked = _reasons(
                combined_names,
                x_combined[row],
                by_group[i, : len(combined_names)],
                own_texts,
                (evidence[row] if evidence is not None else None) or [],
                settings,
            )
            if own[row] and own_texts and not set(own_texts) & set(picked):
                picked.append(own_texts[0])
            counts[row] = len(picked)
            texts.extend(picked)
    # built from offsets: a Python list per row (most rows have none) costs more than the scoring
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
    reasons = pa.ListArray.from_arrays(pa.array(offsets), pa.array(texts, pa.string()))
    return reasons, own


def _own_reasons(
    names: list[str], values: np.ndarray, contrib: np.ndarray, settings: ReasonSettings
) -> list[str]:
    """The account model's positive contributions as sentences, distinct.

    Values beyond what 99% of ordinary accounts show come first (strongest first), then the
    others: a reason that quotes a normal value tells the analyst less.
    """
    positive = [int(c) for c in np.argsort(-contrib, kind="stable") if contrib[c] > 0]
    unusual = [c for c in positive if is_unusual(names[c], float(values[c]), settings.reference)]
    out: list[str] = []
    for c in unusual + [c for c in positive if c not in unusual]:
        if len(out) == settings.top_n:
            break
        text = reason_text(names[c], float(values[c]), settings.reference)
        if text not in out:
            out.append(text)
    return out


def _reasons(
    names: list[str],
    values: np.ndarray,
    contrib: np.ndarray,
    own_texts: list[str],
    evidence: list[str],
    settings: ReasonSettings,
) -> list[str]:
    """The first ``top_n`` distinct sentences of the combined model's positive contributions."""
    row = dict(zip(names, values.tolist(), strict=True))
    picked: list[str] = []
    for c in np.argsort(-contrib, kind="stable"):
        if contrib[c] <= 0 or len(picked) >= settings.top_n:
            break
        if names[c] == ACCOUNT_SCORE:
            candidates = own_texts[:OWN_REASONS_PER_ACCOUNT_SCORE]
        elif names[c] == "group_anomaly":
            candidates = evidence[:GROUP_REASONS_PER_ANOMALY]
        else:
            candidates = [
                reason_text(names[c], float(values[c]), settings.reference, row, evidence)
            ]
        for text in candidates:
            if text and text not in picked and len(picked) < settings.top_n:
                picked.append(text)
    return picked


Evaluator = Literal["compiled", "lightgbm"]
AGREEMENT_ROWS = 256  # rows per task scored both ways before the compiled scores are trusted
AGREEMENT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CompiledForest:
    """A booster compiled to machine code by lleaves, ready to ship to the executors.

    ``cpu`` names the host CPU and features the code was compiled for: an executor on another
    CPU compiles the model again from ``model_text`` rather than run code that may use
    instructions it lacks.
    """

    model_text: str
    object_code: bytes
    cpu: str

    @property
    def key(self) -> str:
        """Identifies the model and target (what a worker's cache is keyed by)."""
        return hashlib.sha256(f"{self.cpu}\n{self.model_text}".encode()).hexdigest()


def _cpu_signature() -> str:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM could not read them; never reuse code compiled elsewhere
        features = f"unknown:{os.getpid()}"
    return f"{llvm.get_host_cpu_name()};{features}"


def _compile(model_text: str, object_code: bytes | None) -> tuple[object, bytes]:
    """An lleaves model for ``model_text``, from ``object_code`` when given, and its code."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="farmwatch-forest-") as folder:
        model_file, cache = Path(folder, "model.txt"), Path(folder, "forest.o")
        model_file.write_text(model_text)
        if object_code is not None:
            cache.write_bytes(object_code)
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(cache))  # compiles and writes the cache, or loads it
        return model, cache.read_bytes()


_CACHE_MODELS = 4  # compiled forests kept per process: a model pair and the one before
_COMPILED: dict[str, CompiledForest] = {}  # on the driver: the last models compiled


def _remember(cache: dict, key: str, value: object) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > _CACHE_MODELS:
        cache.pop(next(iter(cache)))


def compile_forest(booster: lgb.Booster) -> CompiledForest:
    """Compile ``booster`` on the driver (about a second for 400 trees of 31 leaves).

    The last models compiled are kept, so a process that scores with one model pair again
    (the benchmark's repeats, a long-lived worker) compiles each once.
    """
    text = booster.model_to_string()
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _COMPILED:
        _remember(_COMPILED, key, CompiledForest(text, _compile(text, None)[1], _cpu_signature()))
    return _COMPILED[key]


_LOADED: dict[str, object] = {}  # per Python worker: the last compiled forests it loaded


def load_forest(forest: CompiledForest) -> object:
    """The executable forest in this worker: the driver's code if the CPU matches, else rebuilt."""
    model = _LOADED.get(forest.key)
    if model is None:
        same_cpu = _cpu_signature() == forest.cpu
        model = _compile(forest.model_text, forest.object_code if same_cpu else None)[0]
        _remember(_LOADED, forest.key, model)
    return model


def check_agreement(booster: lgb.Booster, x: np.ndarray, compiled_scores: np.ndarray) -> None:
    """Stop if the compiled forest's scores for ``x`` differ from LightGBM's.

    Raises:
        RuntimeError: a difference above :data:`AGREEMENT_TOLERANCE`.
    """
    expected = booster.predict(x, num_threads=1)
    gap = float(np.max(np.abs(expected - compiled_scores), initial=0.0))
    if not gap <= AGREEMENT_TOLERANCE:
        raise RuntimeError(
            f"the compiled model's scores differ from LightGBM's by {gap:.3g} on this executor; "
            "score with FARMWATCH_MODEL__EVALUATOR=lightgbm and report it"
        )


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
