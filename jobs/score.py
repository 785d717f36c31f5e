"""Scoring inside Spark, with readable reasons.

In: the ``features`` table of a run and a LightGBM booster (the registry's champion). Out:
``account_id, farm_id, component_id, score, reasons, own_evidence, model_version`` for every
account, where ``reasons`` are the top positive contributions (LightGBM ``pred_contrib``) turned
into sentences a trust analyst can check ("shares a payment instrument with 11 accounts") and
``own_evidence`` says whether one of them is about the account itself, not only its group (a
ban needs it, see :func:`jobs.publish.assign_actions`). Scoring runs in
``mapInArrow`` (Arrow batches); the model travels to the executors once per task as a string.
Called by the nightly flow's score task and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
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
    booster: lgb.Booster, x: np.ndarray, top_n: int, min_score: float = 0.0, threads: int = 0
) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """Scores, and the ``top_n`` distinct positive-contribution reasons of rows ``min_score``+.

    ``x`` holds the booster's features in its order. ``pred_contrib`` costs about twenty plain
    predictions, so rows below ``min_score`` (accounts that get no action) are scored but not
    explained: their reasons are empty. ``threads`` 0 lets LightGBM use every core. The third
    result flags rows whose reasons include the account's own evidence (see
    :func:`_top_reasons`); unexplained rows are false.
    """
    names = list(booster.feature_name())
    scores = booster.predict(x, num_threads=threads)
    reasons: list[list[str]] = [[] for _ in range(len(x))]
    own = np.zeros(len(x), dtype=bool)
    explained = np.flatnonzero(scores >= min_score)
    if len(explained):
        contrib = booster.predict(x[explained], pred_contrib=True, num_threads=threads)
        contrib = contrib[:, : len(names)]
        order = np.argsort(-contrib, axis=1)
        is_own = own_features(names)  # once, not per explained row
        for i, row in enumerate(explained):
            reasons[row], own[row] = _top_reasons(
                names, is_own, x[row], contrib[i], order[i], top_n
            )
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


def score_accounts(
    features: DataFrame,
    booster: lgb.Booster,
    model_version: str,
    top_n: int = 3,
    explain_min_score: float = 0.0,
) -> DataFrame:
    """Score every account in Spark (``mapInArrow``) and attach reasons.

    The features travel to Python as one ``array<double>`` column (packed by the JVM), which
    Arrow hands over as a single buffer: about a third cheaper than one column per feature.
    Each task's LightGBM uses one thread (Spark already runs one task per core). Every account
    scoring ``explain_min_score`` or more gets its top ``top_n`` reasons; the others (no
    action) get none, which keeps scoring near plain ``predict`` speed.

    Raises:
        ValueError: the features table lacks a column the model was trained on.
    """
    needed = list(booster.feature_name())
    missing = [c for c in needed if c not in features.columns]
    if missing:
        raise ValueError(f"features are missing columns the model expects: {missing}")
    model_text = booster.model_to_string()
    width = len(needed)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = lgb.Booster(model_str=model_text)
        for batch in batches:
            # nulls in the features become NaN, which LightGBM treats as missing
            x = batch.column("_x").flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            scores, reasons, own = explain(model, x, top_n, explain_min_score, threads=1)
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column("account_id"),
                    batch.column("farm_id"),
                    batch.column("component_id"),
                    pa.array(scores, pa.float64()),
                    pa.array(reasons, pa.list_(pa.string())),
                    pa.array(own, pa.bool_()),
                ],
                schema=_BATCH_ARROW_SCHEMA,
            )

    packed = features.select(
        "account_id",
        F.col("farm_id").cast("string").alias("farm_id"),
        F.col("component_id").cast("string").alias("component_id"),
        F.array(*[F.col(c).cast("double") for c in needed]).alias("_x"),
    )
    scored = packed.mapInArrow(score_batches, _BATCH_SCHEMA)
    return scored.withColumn("model_version", F.lit(model_version))
