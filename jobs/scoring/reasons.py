"""Reasons a trust analyst reads: each names a behaviour and its size against normal.

In: a model feature, its value, the account's other feature values, the group's sentences from
:mod:`jobs.features.anomaly` (farm candidates, strongest first) and the run's
:func:`feature_reference` (what ordinary accounts show: the 1st, 50th and 99th percentiles of every
account feature over a seeded sample of the run's accounts). Out: sentences such as "17% of its
payment attempts were declined (99% of accounts: at most 4%)" or "96% of its 500 accounts keep one
identical 10-hour daily schedule (random groups of 256 accounts: at most 5%)". Called by
:mod:`jobs.scoring.score` (reasons of scored accounts), the features stage (the reference) and the
tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.features.group_signals import FAMILIES

Reference = Mapping[str, tuple[float, float, float]]  # feature -> (p01, p50, p99)
REFERENCE_SAMPLE = 50_000  # accounts in the reference sample (all of them in smaller runs)


def _others(v: float) -> float:
    """How many *other* accounts share an identifier, from ``log1p(accounts sharing it)``."""
    return max(round(math.expm1(v)) - 1, 0)


def _same(v: float) -> float:
    return v


@dataclass(frozen=True)
class OwnReason:
    """How to say one account feature.

    ``sentence`` holds ``{v}``, formatted with ``value_format`` after ``transform``;
    ``compare`` names what ordinary accounts are compared on (``p99``: few exceed it, ``p01``:
    few go below it, ``p50``: the median account).
    """

    sentence: str
    value_format: str
    compare: str
    transform: Callable[[float], float] = _same


def _shared(what: str) -> OwnReason:
    return OwnReason(f"shares {what} with {{v}} other accounts", "{:,.0f}", "p99", _others)


OWN_REASONS: dict[str, OwnReason] = {
    "account_age_days": OwnReason("its account is {v} old", "{:,.0f} days", "p50"),
    "first_use_delay_days": OwnReason("first used the API {v} after signup", "{:.1f} days", "p50"),
    "active_days": OwnReason("active on {v} of the window", "{:.0f} days", "p50"),
    "requests_total": OwnReason("made {v} requests in the window", "{:,.0f}", "p50"),
    "requests_per_active_day": OwnReason("makes {v} requests per active day", "{:,.0f}", "p50"),
    "requests_cv": OwnReason("its daily request volume varies by only {v}", "{:.0%}", "p01"),
    "tokens_per_request": OwnReason("uses {v} tokens per request", "{:,.0f}", "p50"),
    "prompt_diversity": OwnReason(
        "uses {v} distinct prompt templates per active day", "{:.2f}", "p50"
    ),
    "active_hours_per_day": OwnReason("active in {v} distinct hours a day", "{:.1f}", "p50"),
    "hours_profile_changes": OwnReason(
        "{v} distinct hourly schedules per active day", "{:.2f}", "p50"
    ),
    "n_payments": OwnReason("made {v} payment attempts", "{:.0f}", "p99"),
    "decline_rate": OwnReason("{v} of its payment attempts were declined", "{:.0%}", "p99"),
    "chargebacks": OwnReason("has {v} chargebacks", "{:.0f}", "p99"),
    "n_instruments": OwnReason("used {v} payment instruments", "{:.0f}", "p99"),
    "virtual_card_share": OwnReason(
        "{v} of its payments used virtual or prepaid cards", "{:.0%}", "p99"
    ),
    "n_ips": OwnReason("used {v} distinct IP addresses", "{:,.0f}", "p99"),
    "n_asns": OwnReason("used {v} distinct networks (ASNs)", "{:.0f}", "p99"),
    "hosting_vpn_share": OwnReason(
        "{v} of its sessions came from hosting or VPN networks", "{:.0%}", "p99"
    ),
    "mobile_share": OwnReason("{v} of its sessions came from mobile networks", "{:.0%}", "p50"),
    "ips_per_active_day": OwnReason(
        "rotates through {v} IP addresses per active day", "{:.1f}", "p99"
    ),
    "hub_entities": OwnReason("shares {v} very common identifiers (hubs)", "{:.0f}", "p99"),
    "max_share_instrument": _shared("a payment card"),
    "max_share_device": _shared("a device fingerprint"),
    "max_share_ip": _shared("an IP address"),
    "max_share_email": _shared("an email address"),
    "max_share_bin_postcode": _shared("a card BIN and billing postcode"),
    "max_share_ip24_asn_day": _shared("a network (IPv4 /24, IPv6 /64 or /48) on one day"),
    "max_share_email_shape": _shared("an email name pattern and domain"),
    "max_share_signup_minute_asn": OwnReason(
        "signed up in the same minute and network as {v} other accounts", "{:,.0f}", "p99", _others
    ),
    "max_share_prompt": _shared("a prompt template"),
    "max_share_client": _shared("a client fingerprint"),
    "max_share_behaviour": _shared("an activity pattern (same hours, networks and prompts)"),
}
_COMPARE_WORDS = {"p99": "99% of accounts: at most", "p01": "99% of accounts: at least"}
_PERCENTILES = {"p01": 0, "p50": 1, "p99": 2}

_NEIGHBOUR_LABELS = {
    "account_age_days": "account age",
    "first_use_delay_days": "delay from signup to first use",
    "requests_per_active_day": "requests per active day",
    "active_hours_per_day": "active hours per day",
    "decline_rate": "payment decline rate",
    "virtual_card_share": "virtual/prepaid card share",
    "hosting_vpn_share": "hosting/VPN traffic share",
    "max_share_instrument": "accounts sharing its card",
}
_STATISTIC_WORDS = {"mean": "average", "max": "highest", "std": "spread of"}


def own_reason(feature: str, value: float, reference: Reference | None = None) -> str | None:
    """The sentence for an account feature, with what ordinary accounts show when known."""
    spec = OWN_REASONS.get(feature)
    if spec is None:
        return None
    body = spec.sentence.format(v=spec.value_format.format(spec.transform(value)))
    return body + _normal(feature, spec, reference)


def is_unusual(feature: str, value: float, reference: Reference | None) -> bool:
    """True when the value is beyond what 99% of ordinary accounts show (``p99``/``p01``)."""
    spec = OWN_REASONS.get(feature)
    if spec is None or not reference or feature not in reference or spec.compare == "p50":
        return False
    figure = reference[feature][_PERCENTILES[spec.compare]]
    if spec.compare == "p99":
        return value > figure
    return value < figure


def _normal(feature: str, spec: OwnReason, reference: Reference | None) -> str:
    if not reference or feature not in reference:
        return ""
    figure = reference[feature][_PERCENTILES[spec.compare]]
    if figure is None or not np.isfinite(figure):
        return ""
    shown = spec.value_format.format(spec.transform(figure))
    if spec.compare == "p50":
        return f" (median account: {shown})"
    return f" ({_COMPARE_WORDS[spec.compare]} {shown})"


def _neighbour_reason(feature: str, value: float, reference: Reference | None) -> str | None:
    """Sentence for ``nbr<h>_count`` and ``nbr<h>_<stat>_<feature>`` columns."""
    if not feature.startswith("nbr") or "_" not in feature:
        return None
    hop, rest = feature[3], feature.split("_", 1)[1]
    scope = "its directly linked accounts" if hop == "1" else "accounts within two links"
    if rest == "count":
        return f"has {value:,.0f} {scope}"
    statistic, _, source = rest.partition("_")
    if statistic not in _STATISTIC_WORDS or source not in _NEIGHBOUR_LABELS:
        return None
    spec = OWN_REASONS[source]
    shown = spec.value_format.format(spec.transform(value))
    text = f"{_STATISTIC_WORDS[statistic]} {_NEIGHBOUR_LABELS[source]} of {scope}: {shown}"
    return text + (_normal(source, spec, reference) if statistic != "std" else "")


def group_reason(
    feature: str,
    value: float,
    row: Mapping[str, float],
    evidence: Sequence[str] | None = None,
) -> str | None:
    """Sentences for the group features (anomaly, confirmed farm accounts).

    ``evidence`` holds the group's sentences from :mod:`jobs.features.anomaly`, strongest first;
    ``row`` the account's other feature values. A group that is not anomalous gives no group reason
    (an empty sentence): "its group is unlike random groups in 0 ways" helps nobody.
    """
    if feature == "group_anomaly":
        return evidence[0] if evidence else ""
    if feature == "group_anomalous_families":
        n = int(row.get("group_anomalous_families", 0))
        if n == 0:
            return ""
        return (
            f"its group is unlike random groups of its size in {n} of {len(FAMILIES)} kinds "
            "of behaviour"
        )
    if feature == "community_known_bad":
        return f"{value:.0f} other accounts of its group are confirmed farm accounts"
    if feature == "community_known_bad_share":
        return f"{value:.0%} of its group are confirmed farm accounts"
    return None


def reason_text(
    feature: str,
    value: float,
    reference: Reference | None = None,
    row: Mapping[str, float] | None = None,
    evidence: Sequence[str] | None = None,
) -> str:
    """One readable sentence for a feature and its value (a plain ``name = value`` fallback)."""
    if value is None or not np.isfinite(value):
        return f"{feature} = {value}"
    text = (
        own_reason(feature, value, reference)
        or _neighbour_reason(feature, value, reference)
        or group_reason(feature, value, row or {}, evidence)
    )
    return text if text is not None else f"{feature} = {value:.3g}"


def feature_reference(accounts: DataFrame, features: tuple[str, ...], seed: int) -> dict:
    """What ordinary accounts show: 1st, 50th and 99th percentile of each account feature.

    Computed on the driver over a sample of about :data:`REFERENCE_SAMPLE` accounts chosen by
    a seeded hash of their ids, so the figures (and the sentences quoting them) are the same
    on any Spark layout. Farms are a few percent of accounts; the percentiles describe the
    ordinary ones.

    Returns:
        ``{feature: [p01, p50, p99]}`` (JSON-ready).
    """
    n = accounts.count()
    keep = min(1.0, REFERENCE_SAMPLE / max(n, 1))
    u = F.xxhash64(F.lit(seed), F.col("account_id")).bitwiseAND((1 << 52) - 1).cast(
        "double"
    ) / float(1 << 52)
    sample = accounts.where(u < keep).select(*features).toPandas()
    out = {}
    for feature in features:
        values = sample[feature].astype("float64").to_numpy()
        values = values[np.isfinite(values)]
        if values.size:
            out[feature] = [float(q) for q in np.quantile(values, [0.01, 0.5, 0.99])]
    return out
