"""Group anomaly: how unlike random groups of its size each farm candidate behaves (no labels).

In: the ``communities`` table (farm candidates carry a ``farm_id``), the account features of
:func:`jobs.features.account_features`, the accepted ``api_usage`` and ``signups``, and the
graph's ``account_entities`` and ``entity_stats``. Out:

- ``group_anomaly``: one row per farm candidate with every signal of :data:`SIGNALS`, what random
  groups of its size show (their median and 99th percentile), the signal's robust z-score, the
  score of each evidence family, how many families are anomalous, and sentences a trust analyst
  can read ("97% of its 500 accounts keep one identical 10-hour schedule (random groups of 512
  accounts: at most 4%)");
- per account, :data:`GROUP_ANOMALY_FEATURES` (zero outside farm candidates), which the farm
  model reads.

Called by the features stage (:func:`jobs.features.run`) and the tests.

Why random groups and not the other communities: on a small world there are a handful of farm
candidates, most of them farms, so "unlike the other communities" would call a farm normal.
Instead the same signals are computed for groups of accounts drawn at random from the whole
population (hash-seeded, so the same lake gives the same groups anywhere), in size bins of
powers of two: what a group of that size looks like when its members have nothing in common.
Legitimate linked groups (an office, a university, CGNAT neighbours) share a network or an
email domain but not schedules, prompt templates, signup weeks or payment habits, so none of
those signals is used; a farm is unlike random groups on most of them at once. The reference is
fitted from the data (median and 1st/99th percentiles of the random groups per size bin); the
only fixed number is a floor on the spread (``anomaly.min_spread``), so a signal that random
groups never show does not turn a one-point difference into an infinite score.

What it cannot see: a farm whose accounts behave like independent ordinary users on every
signal (schedules, volumes, prompts, payments and lifecycle all blended) is not anomalous; such
an operator pays for it with slower extraction, and the model and the hard-key graph still see
what it shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.config import AnomalySettings
from jobs.core.validation import require_columns
from jobs.features.group_signals import (
    FAMILIES,
    GROUP,
    RANDOM_CONTEXT,
    RANDOM_PREFIX,
    SIGNAL_NAMES,
    SIGNALS,
    Signal,
    group_signals,
    random_groups,
    size_bin,
)

# what the farm model reads: how many families are anomalous and how strongly, never which
# ones (a model that learnt "farms reuse devices" would miss the operator that stopped)
GROUP_ANOMALY_FEATURES = ("group_anomalous_families", "group_anomaly")


_SHARE_FORMAT = {
    "median_ips_per_day": "{:.1f}",
}


def fit_reference(random_signals: pd.DataFrame) -> pd.DataFrame:
    """What random groups show, per size bin and signal: 1st, 50th and 99th percentiles.

    Args:
        random_signals: :func:`group_signals` of the random groups, with ``size_bin``.

    Returns:
        Index ``(size_bin, signal)``, columns ``p01, p50, p99``.
    """
    frames = []
    for k, part in random_signals.groupby("size_bin"):
        values = part[list(SIGNAL_NAMES)].astype("float64").to_numpy()
        quantiles = np.nanquantile(values, [0.01, 0.5, 0.99], axis=0)
        frames.append(
            pd.DataFrame(
                {
                    "size_bin": int(k),
                    "signal": SIGNAL_NAMES,
                    "p01": quantiles[0],
                    "p50": quantiles[1],
                    "p99": quantiles[2],
                }
            )
        )
    return pd.concat(frames).set_index(["size_bin", "signal"]).sort_index()


def score_groups(
    signals: pd.DataFrame, reference: pd.DataFrame, settings: AnomalySettings
) -> pd.DataFrame:
    """Robust z-scores of each group against random groups of its size bin, and sentences.

    ``z = direction * (value - p50) / max(spread, min_spread)`` where the spread is
    ``p99 - p50`` (``p50 - p01`` for signals where low values are farm-like), clipped to
    ``[0, z_cap]``: only farm-like deviations count. A family's score is its largest signal z;
    a family is anomalous at ``z_anomalous`` or more. ``group_anomaly`` is the mean of the three
    largest family scores.

    Args:
        signals: :func:`group_signals` of the farm candidates (``group_id, size, ...``).
        reference: :func:`fit_reference` output.
        settings: the anomaly settings.

    Returns:
        ``group_id, size, size_bin``, every signal, ``z_<signal>``, :data:`GROUP_ANOMALY_FEATURES`
        ``evidence`` (sentences of the anomalous signals, strongest first) and
        ``family_evidence`` (each anomalous family's strongest sentence).
    """
    out = signals.copy()
    available = sorted({k for k, _ in reference.index})
    if out.empty or not available:
        for column in (*(f"group_z_{f}" for f in FAMILIES), *GROUP_ANOMALY_FEATURES):
            out[column] = pd.Series(dtype="float64")
        out["size_bin"] = pd.Series(dtype="int64")
        out["evidence"] = pd.Series(dtype="object")
        out["family_evidence"] = pd.Series(dtype="object")
        return out
    bins = np.floor(np.log2(out["size"].clip(lower=1).astype("float64"))).astype(int)
    out["size_bin"] = np.clip(bins, available[0], available[-1])
    family_z = {family: np.zeros(len(out)) for family in FAMILIES}
    for signal in SIGNALS:
        ref = reference.xs(signal.name, level="signal").reindex(out["size_bin"])
        value = out[signal.name].astype("float64").to_numpy()
        center = ref["p50"].to_numpy()
        if signal.direction > 0:
            spread = ref["p99"].to_numpy() - center
        else:
            spread = center - ref["p01"].to_numpy()
        z = signal.direction * (value - center) / np.maximum(spread, settings.min_spread)
        z = np.clip(np.nan_to_num(z, nan=0.0), 0.0, settings.z_cap)
        out[f"z_{signal.name}"] = z
        out[f"ref_{signal.name}"] = (ref["p99"] if signal.direction > 0 else ref["p01"]).to_numpy()
        family_z[signal.family] = np.maximum(family_z[signal.family], z)
    for family in FAMILIES:
        out[f"group_z_{family}"] = family_z[family]
    stacked = np.column_stack([family_z[f] for f in FAMILIES])
    out["group_anomalous_families"] = (stacked >= settings.z_anomalous).sum(axis=1).astype(float)
    out["group_anomaly"] = np.sort(stacked, axis=1)[:, -3:].mean(axis=1)
    sentences = [_sentences(row, settings) for row in out.to_dict("records")]
    out["evidence"] = [[text for _, text in pairs] for pairs in sentences]
    out["family_evidence"] = [_by_family(pairs) for pairs in sentences]
    return out


def _by_family(pairs: list[tuple[Signal, str]]) -> dict[str, str]:
    """Each anomalous family's strongest sentence (``pairs`` come strongest first)."""
    out: dict[str, str] = {}
    for signal, text in pairs:
        out.setdefault(signal.family, text)
    return out


def _sentences(row: dict, settings: AnomalySettings) -> list[tuple[Signal, str]]:
    """The group's anomalous signals and their sentences, strongest first (ties: signal order)."""
    ranked = sorted(
        (s for s in SIGNALS if row[f"z_{s.name}"] >= settings.z_anomalous),
        key=lambda s: -row[f"z_{s.name}"],
    )
    texts = []
    for signal in ranked:
        value_format = _SHARE_FORMAT.get(signal.name, "{:.0%}")
        context = RANDOM_CONTEXT.format(
            ref_size=2 ** int(row["size_bin"]),
            bound="at most" if signal.direction > 0 else "at least",
            reference=value_format.format(row[f"ref_{signal.name}"]),
        )
        body = signal.sentence.format(
            value=row[signal.name], size=int(row["size"]), hours=int(row["schedule_hours"])
        )
        texts.append((signal, f"{body} ({context})"))
    return texts


ANOMALY_SCHEMA = T.StructType(
    [
        T.StructField("community_id", T.StringType(), False),
        T.StructField("farm_id", T.StringType(), True),
        T.StructField("size", T.LongType(), False),
        T.StructField("size_bin", T.IntegerType(), False),
        *[T.StructField(s, T.DoubleType(), True) for s in SIGNAL_NAMES],
        *[T.StructField(f"z_{s}", T.DoubleType(), False) for s in SIGNAL_NAMES],
        *[T.StructField(f"group_z_{f}", T.DoubleType(), False) for f in FAMILIES],
        *[T.StructField(c, T.DoubleType(), False) for c in GROUP_ANOMALY_FEATURES],
        T.StructField("evidence", T.ArrayType(T.StringType()), False),
        T.StructField("family_evidence", T.MapType(T.StringType(), T.StringType()), False),
    ]
)


def group_anomaly(
    spark: SparkSession,
    communities: DataFrame,
    profile: DataFrame,
    entities: DataFrame,
    stats: DataFrame,
    settings: AnomalySettings,
    min_concentration: float,
    population: DataFrame | None = None,
) -> DataFrame:
    """The ``group_anomaly`` table: every farm candidate scored against random groups.

    Real communities and random groups go through one :func:`group_signals` pass; the random
    groups' figures (a few hundred rows) and the candidates' (one row per farm candidate) come
    to the driver, where the reference is fitted and the z-scores computed.

    Args:
        spark: the session (to return the table as a DataFrame).
        communities: ``account_id, community_id, farm_id`` (every account).
        profile: :func:`account_profile` output (every account).
        entities: ``account_id, entity_type, entity_id``.
        stats: ``entity_type, entity_id, degree, is_hub``.
        settings: the anomaly settings.
        min_concentration: see :func:`group_signals`.
        population: the accounts ``profile`` has one row each for (``account_id``), the random
            groups are drawn from; the profile itself when None. The features stage passes its
            written account table, so the profile's joins and its schedule aggregation over
            ``api_usage`` run once (in the signals) instead of three times.

    Returns:
        One row per farm candidate, columns of :data:`ANOMALY_SCHEMA`.
    """
    require_columns(communities, "communities", ("account_id", "community_id", "farm_id"))
    candidates = communities.where(F.col("farm_id").isNotNull())
    sizes = candidates.groupBy("community_id").count().collect()
    if not sizes:
        return spark.createDataFrame([], ANOMALY_SCHEMA)
    bins = sorted({size_bin(int(r["count"])) for r in sizes})
    population = profile if population is None else population
    n_accounts = population.count()
    drawn = random_groups(population, bins, n_accounts, settings)
    members = candidates.select("account_id", F.col("community_id").alias(GROUP)).unionByName(
        drawn.select("account_id", GROUP)
    )
    figures = group_signals(members, profile, entities, stats, min_concentration).toPandas()
    is_random = figures[GROUP].str.startswith(RANDOM_PREFIX)
    random_part = figures[is_random].copy()
    random_part["size_bin"] = random_part[GROUP].str.split("_").str[1].astype(int)
    reference = fit_reference(random_part)
    scored = score_groups(figures[~is_random].sort_values(GROUP), reference, settings)
    farm_ids = candidates.select("community_id", "farm_id").distinct().toPandas()
    scored = scored.rename(columns={GROUP: "community_id"}).merge(farm_ids, on="community_id")
    columns = [f.name for f in ANOMALY_SCHEMA.fields]
    scored["size"] = scored["size"].astype("int64")
    scored["size_bin"] = scored["size_bin"].astype("int32")
    return spark.createDataFrame(scored[columns], ANOMALY_SCHEMA)


def member_features(communities: DataFrame, anomaly: DataFrame) -> DataFrame:
    """:data:`GROUP_ANOMALY_FEATURES` for every account (zero outside farm candidates)."""
    require_columns(communities, "communities", ("account_id", "community_id"))
    require_columns(anomaly, "group_anomaly", ("community_id", *GROUP_ANOMALY_FEATURES))
    joined = communities.select("account_id", "community_id").join(
        anomaly.select("community_id", *GROUP_ANOMALY_FEATURES), "community_id", "left"
    )
    return joined.select(
        "account_id",
        *[F.coalesce(F.col(c), F.lit(0.0)).alias(c) for c in GROUP_ANOMALY_FEATURES],
    )
