"""Scoring inside Spark, with readable reasons.

In: the ``features`` table of a run and a LightGBM booster (the registry's champion). Out:
``account_id, farm_id, component_id, score, reasons, own_evidence, model_version`` for every
account, where ``reasons`` are the top positive contributions (LightGBM ``pred_contrib``) turned
into sentences a trust analyst can check ("shares a payment instrument with 11 accounts") and
``own_evidence`` says whether one of them is about the account itself, not only its group (a
ban needs it, see :func:`jobs.publish.assign_actions`). Scoring runs in
``mapInArrow`` (Arrow batches); the model travels to the executors once per task.
Called by the nightly flow's score task and the tests.

Scores come from the champion compiled to machine code with lleaves (:func:`compile_forest`),
which returns LightGBM's predictions (to about 1e-18 here) several times faster than
``Booster.predict``; every task checks the two agree on its first rows and stops if they do
not. ``evaluator="lightgbm"`` scores with the booster itself. Reasons always come from
LightGBM's ``pred_contrib``.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

SCORE_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType(), False),
        T.StructField("farm_id", T.StringType(), True),
        T.StructField("component_id", T.StringType(), True),
        T.StructField("score", T.DoubleType(), False),
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
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("own_evidence", pa.bool_()),
    ]
)
# Features that describe the account's group rather than the account: a reason from them says
# "its group looks like a farm", not "this account does what a farm account does".
GROUP_FEATURE_PREFIXES = ("community_", "component_")


def _shared(what: str) -> Callable[[float], str]:
    return lambda v: f"shares {what} with {max(int(round(math.expm1(v))) - 1, 0)} other accounts"


REASON_TEMPLATES: dict[str, Callable[[float], str]] = {
    "max_share_instrument": _shared("a payment instrument"),
    "max_share_device": _shared("a device fingerprint"),
    "max_share_ip": _shared("an IP address"),
    "max_share_email": _shared("an email address"),
    "max_share_bin_postcode": _shared("a card BIN and billing postcode"),
    "max_share_ip24_asn_day": _shared("a /24 network on one day"),
    "max_share_email_shape": _shared("an email name pattern and domain"),
    "max_share_signup_minute_asn": lambda v: (
        f"signed up in the same minute and network as "
        f"{max(int(round(math.expm1(v))) - 1, 0)} other accounts"
    ),
    "max_share_prompt": _shared("a prompt template"),
    "max_share_client": _shared("a client fingerprint"),
    "max_share_behaviour": _shared("an activity pattern (same hours, network and prompts)"),
    "community_size": lambda v: f"belongs to a linked group of {int(v)} accounts",
    "community_log_size": lambda v: (
        f"belongs to a linked group of {int(round(math.expm1(v)))} accounts"
    ),
    "component_log_size": lambda v: (
        f"its group sits in a connected cluster of {int(round(math.expm1(v)))} accounts"
    ),
    "community_accounts_per_instrument": lambda v: f"its group has {v:.1f} accounts per card",
    "community_accounts_per_device": lambda v: f"its group has {v:.1f} accounts per device",
    "community_accounts_per_ip24": lambda v: f"its group has {v:.1f} accounts per /24 network",
    "community_prompt_share": lambda v: f"{v:.0%} of its group's activity uses one prompt template",
    "community_hours_share": lambda v: (
        f"{v:.0%} of its group's active days follow one identical hourly schedule"
    ),
    "community_signup_burst_share": lambda v: f"{v:.0%} of its group signed up in the same hour",
    "community_signup_spread_h": lambda v: (
        f"its group signed up within {v:.0f} hours (standard deviation)"
    ),
    "community_email_shape_share": lambda v: f"{v:.0%} of its group share one email name pattern",
    "community_mean_decline_rate": lambda v: f"its group's payment decline rate is {v:.0%}",
    "decline_rate": lambda v: f"{v:.0%} of its payments were declined",
    "virtual_card_share": lambda v: f"{v:.0%} of its payments used virtual or prepaid cards",
    "requests_per_active_day": lambda v: f"makes {v:.0f} requests per active day",
    "requests_cv": lambda v: f"daily request volume varies by only {v:.0%}",
    "prompt_diversity": lambda v: f"{v:.2f} distinct prompt templates per active day",
    "account_age_days": lambda v: f"account is {v:.0f} days old",
    "ips_per_active_day": lambda v: f"uses {v:.1f} IP addresses per active day",
    "hosting_vpn_share": lambda v: f"{v:.0%} of its sessions come from hosting or VPN networks",
    "mobile_share": lambda v: f"{v:.0%} of its sessions come from mobile networks",
    "tokens_per_request": lambda v: f"uses {v:,.0f} tokens per request",
    "first_use_delay_days": lambda v: f"first used the API {v:.1f} days after signup",
    "active_days": lambda v: f"active on {v:.0f} days of the window",
    "requests_total": lambda v: f"made {v:,.0f} requests in the window",
    "active_hours_per_day": lambda v: f"active in {v:.1f} distinct hours per day",
    "hours_profile_changes": lambda v: f"{v:.2f} distinct hourly schedules per active day",
    "n_payments": lambda v: f"made {v:.0f} payment attempts",
    "chargebacks": lambda v: f"has {v:.0f} chargebacks",
    "n_instruments": lambda v: f"used {v:.0f} payment instruments",
    "n_ips": lambda v: f"used {v:.0f} distinct IP addresses",
    "n_asns": lambda v: f"used {v:.0f} distinct networks (ASNs)",
    "hub_entities": lambda v: f"shares {v:.0f} very common identifiers (hubs)",
    "community_density": lambda v: f"its group's link density is {v:.3f}",
    "community_mean_age_days": lambda v: f"its group's accounts are {v:.0f} days old on average",
    "community_known_bad": lambda v: (
        f"{v:.0f} other accounts of its group are confirmed farm accounts"
    ),
    "community_known_bad_share": lambda v: f"{v:.0%} of its group are confirmed farm accounts",
}

_NEIGHBOUR_LABELS = {
    "account_age_days": ("account age", "{:.0f} days"),
    "first_use_delay_days": ("delay from signup to first use", "{:.1f} days"),
    "requests_per_active_day": ("requests per active day", "{:.0f}"),
    "active_hours_per_day": ("active hours per day", "{:.1f}"),
    "decline_rate": ("payment decline rate", "{:.0%}"),
    "virtual_card_share": ("virtual/prepaid card share", "{:.0%}"),
    "hosting_vpn_share": ("hosting/VPN traffic share", "{:.0%}"),
    "max_share_instrument": ("card sharing (log accounts per card)", "{:.1f}"),
}
_STATISTIC_WORDS = {"mean": "average", "max": "highest", "std": "spread of"}


def _neighbour_reason(feature: str) -> Callable[[float], str] | None:
    """Reason template for ``nbr<h>_count`` and ``nbr<h>_<stat>_<feature>`` columns."""
    if not feature.startswith("nbr") or "_" not in feature:
        return None
    hop, rest = feature[3], feature.split("_", 1)[1]
    scope = "its directly linked accounts" if hop == "1" else "accounts within two links"
    if rest == "count":
        return lambda v: f"has {v:.0f} {scope}"
    statistic, _, source = rest.partition("_")
    if statistic not in _STATISTIC_WORDS or source not in _NEIGHBOUR_LABELS:
        return None
    label, value_format = _NEIGHBOUR_LABELS[source]
    return lambda v: f"{_STATISTIC_WORDS[statistic]} {label} of {scope}: {value_format.format(v)}"


def reason_text(feature: str, value: float) -> str:
    """One readable sentence for a feature and its value."""
    template = REASON_TEMPLATES.get(feature) or _neighbour_reason(feature)
    if template is None or value is None or not np.isfinite(value):
        return f"{feature} = {value:.3g}"
    return template(float(value))


def explain(
    booster: lgb.Booster,
    x: np.ndarray,
    top_n: int,
    min_score: float = 0.0,
    threads: int = 0,
    scores: np.ndarray | None = None,
) -> tuple[np.ndarray, pa.ListArray, np.ndarray]:
    """Scores, and the ``top_n`` distinct positive-contribution reasons of rows ``min_score``+.

    ``x`` holds the booster's features in its order. ``pred_contrib`` costs about twenty plain
    predictions, so rows below ``min_score`` (accounts that get no action) are scored but not
    explained: their reasons are empty. ``threads`` 0 lets LightGBM use every core. ``scores``,
    when given, are this booster's predictions for ``x`` computed elsewhere (the compiled
    forest); otherwise LightGBM computes them. The reasons come as an Arrow ``list<string>``
    array, one entry per row. The third result flags rows whose reasons include the account's
    own evidence (see :func:`_top_reasons`); unexplained rows are false.
    """
    names = list(booster.feature_name())
    if scores is None:
        scores = booster.predict(x, num_threads=threads)
    counts = np.zeros(len(x), dtype=np.int32)
    texts: list[str] = []
    own = np.zeros(len(x), dtype=bool)
    explained = np.flatnonzero(scores >= min_score)
    if len(explained):
        contrib = booster.predict(x[explained], pred_contrib=True, num_threads=threads)
        contrib = contrib[:, : len(names)]
        order = np.argsort(-contrib, axis=1)
        is_own = own_features(names)  # once, not per explained row
        for i, row in enumerate(explained):
            picked, own[row] = _top_reasons(names, is_own, x[row], contrib[i], order[i], top_n)
            counts[row] = len(picked)
            texts.extend(picked)
    # built from offsets: a Python list per row (most rows have none) costs more than the scoring
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
    reasons = pa.ListArray.from_arrays(pa.array(offsets), pa.array(texts, pa.string()))
    return scores, reasons, own


def own_features(names: list[str]) -> np.ndarray:
    """Mask of the features about the account itself (not :data:`GROUP_FEATURE_PREFIXES`)."""
    return np.array([not name.startswith(GROUP_FEATURE_PREFIXES) for name in names], dtype=bool)


def _top_reasons(
    names: list[str],
    is_own: np.ndarray,
    values: np.ndarray,
    contrib: np.ndarray,
    order: np.ndarray,
    top_n: int,
) -> tuple[list[str], bool]:
    """The first ``top_n`` distinct sentences of the positive contributions, largest first.

    Two features can read the same (``community_size`` and ``community_log_size``); a reason
    list that says one thing twice tells the analyst less. Also says whether the account has
    evidence of its own: its own features (``is_own``, from :func:`own_features`) taken
    together raise its score. Where the group's features fill the first ``top_n`` places, the
    account's strongest own reason is added after them, so the list always shows it. (When a
    community is almost all farm, the model credits the group features with nearly everything
    and an account's own card sharing may only rank fifth; ranking alone sent whole farms to
    review.)
    """
    picked: list[str] = []
    cited_own = False
    for c in order:
        if contrib[c] <= 0 or len(picked) == top_n:
            break
        text = reason_text(names[c], values[c])
        if text not in picked:
            picked.append(text)
            cited_own = cited_own or bool(is_own[c])
    own = bool(contrib[is_own].sum() > 0)
    if own and not cited_own:
        best = int(np.flatnonzero(is_own)[np.argmax(contrib[is_own])])
        picked.append(reason_text(names[best], values[best]))
    return picked, own


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


_COMPILED: dict[str, CompiledForest] = {}  # on the driver: the last model compiled


def compile_forest(booster: lgb.Booster) -> CompiledForest:
    """Compile ``booster`` on the driver (about a second for 400 trees of 31 leaves).

    The last model compiled is kept, so a process that scores with one model again (the
    benchmark's repeats, a long-lived worker) compiles it once.
    """
    text = booster.model_to_string()
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _COMPILED:
        forest = CompiledForest(text, _compile(text, None)[1], _cpu_signature())
        _COMPILED.clear()
        _COMPILED[key] = forest
    return _COMPILED[key]


_LOADED: dict[str, object] = {}  # per Python worker: the last compiled forest it loaded


def load_forest(forest: CompiledForest) -> object:
    """The executable forest in this worker: the driver's code if the CPU matches, else rebuilt."""
    model = _LOADED.get(forest.key)
    if model is None:
        same_cpu = _cpu_signature() == forest.cpu
        model = _compile(forest.model_text, forest.object_code if same_cpu else None)[0]
        _LOADED.clear()
        _LOADED[forest.key] = model
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


class _TaskScorer:
    """What one task scores with: the booster (reasons) and the compiled forest (scores)."""

    def __init__(self, model_text: str, forest: CompiledForest | None, top_n: int, floor: float):
        self.model = lgb.Booster(model_str=model_text)
        self.compiled = load_forest(forest) if forest is not None else None
        self.top_n, self.floor, self.checked = top_n, floor, False

    def __call__(self, ids: list[pa.Array], x: np.ndarray) -> pa.RecordBatch:
        """One output batch: ``ids`` (account, farm, component) and the scores of ``x``."""
        scores = None
        if self.compiled is not None:
            scores = self.compiled.predict(x, n_jobs=1)
            if not self.checked:
                check_agreement(self.model, x[:AGREEMENT_ROWS], scores[:AGREEMENT_ROWS])
                self.checked = True
        scores, reasons, own = explain(self.model, x, self.top_n, self.floor, 1, scores)
        return pa.RecordBatch.from_arrays(
            [*ids, pa.array(scores, pa.float64()), reasons, pa.array(own, pa.bool_())],
            schema=_BATCH_ARROW_SCHEMA,
        )


def _checked(booster: lgb.Booster, columns: list[str], evaluator: str) -> list[str]:
    """The booster's features, after checking the table has them and the evaluator exists."""
    needed = list(booster.feature_name())
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"features are missing columns the model expects: {missing}")
    if evaluator not in ("compiled", "lightgbm"):
        raise ValueError(f"unknown evaluator {evaluator!r}: use 'compiled' or 'lightgbm'")
    return needed


def score_accounts(
    features: DataFrame,
    booster: lgb.Booster,
    model_version: str,
    top_n: int = 3,
    explain_min_score: float = 0.0,
    evaluator: Evaluator = "compiled",
) -> DataFrame:
    """Score every account of a DataFrame in Spark (``mapInArrow``) and attach reasons.

    The features travel to Python as one ``array<double>`` column (packed by the JVM), which
    Arrow hands over as a single buffer: about a third cheaper than one column per feature.
    Scores come from the compiled forest (``evaluator="compiled"``, see
    :func:`compile_forest`; each task first checks it against LightGBM on
    :data:`AGREEMENT_ROWS` rows) or from LightGBM (``"lightgbm"``), one thread per task (Spark
    already runs one task per core). Every account scoring ``explain_min_score`` or more gets
    its top ``top_n`` reasons from LightGBM's ``pred_contrib``; the others (no action) get
    none, which keeps scoring near plain prediction speed. A features table on disk is
    cheaper to score with :func:`score_parquet`.

    Raises:
        ValueError: the features table lacks a column the model was trained on, or the
            evaluator is unknown.
    """
    needed = _checked(booster, features.columns, evaluator)
    model_text = booster.model_to_string()
    forest = compile_forest(booster) if evaluator == "compiled" else None
    width = len(needed)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = _TaskScorer(model_text, forest, top_n, explain_min_score)
        for batch in batches:
            if batch.num_rows:
                # nulls in the features become NaN, which both evaluators treat as missing
                x = batch.column("_x").flatten().to_numpy(zero_copy_only=False)
                yield score([batch.column(i) for i in range(3)], x.reshape(-1, width))

    packed = features.select(
        "account_id",
        F.col("farm_id").cast("string").alias("farm_id"),
        F.col("component_id").cast("string").alias("component_id"),
        F.array(*[F.col(c).cast("double") for c in needed]).alias("_x"),
    )
    scored = packed.mapInArrow(score_batches, _BATCH_SCHEMA)
    return scored.withColumn("model_version", F.lit(model_version))


def score_parquet(
    spark: SparkSession,
    path: str,
    booster: lgb.Booster,
    model_version: str,
    top_n: int = 3,
    explain_min_score: float = 0.0,
    evaluator: Evaluator = "compiled",
    max_rows_per_task: int | None = None,
) -> tuple[DataFrame, str]:
    """Score a features table stored as Parquet; the executors read the files themselves.

    :func:`score_accounts` moves every feature value from the JVM to Python, which on 1M rows
    costs more than the scoring (``benchmarks/bench_scoring.py``). Here Spark only hands each
    task a list of Parquet row-group slices; the task reads them with pyarrow, straight into
    the matrix the model takes, and returns the same rows and columns as
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
    needed = _checked(booster, table.columns, evaluator)
    local = [_local_path(f) for f in sorted(table.inputFiles())]
    units = (
        [] if None in local else _slices(local, max_rows_per_task or _rows_per_task(spark, local))
    )
    if not units:  # not local to the executors, or empty: nothing to hand out
        scored = score_accounts(table, booster, model_version, top_n, explain_min_score, evaluator)
        return scored, "dataframe"
    columns = ["account_id", "farm_id", "component_id", *needed]
    model_text = booster.model_to_string()
    forest = compile_forest(booster) if evaluator == "compiled" else None

    def score_units(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = _TaskScorer(model_text, forest, top_n, explain_min_score)
        for batch in batches:
            for unit in batch.to_pylist():
                for part in _read_slice(unit, columns):
                    ids = [_as_string(part.column(c)) for c in columns[:3]]
                    yield score(ids, _matrix(part, needed))

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
