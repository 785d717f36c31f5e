"""Drift and adversary watch: has the world shifted under the model since the last runs?

In: a run's ``features`` and ``scores`` tables (Spark), the quantile profiles of the trailing
published runs (``profile.json`` beside each ban list), the list in force before this run and
this run's list (pandas), and :class:`jobs.core.sections.ReportSettings`. Out:

- :func:`quantile_profile`: per model feature and for the score, the values at 101 evenly spaced
  quantiles (0%, 1%, ..., 100%), computed in one Spark pass. A run publishes it as
  ``profile.json``: aggregates only, no account, no entity.
- :func:`psi`: the population stability index of one distribution against a reference, both
  given as quantile profiles (the reference pooled over the trailing runs); bins are the
  reference's deciles, so a feature that is mostly zeros gets one bin for its zeros.
- :func:`farm_loss`: for each farm banned in the list in force, how many of its banned accounts
  are still banned tonight (judged by account, so a farm whose id changed is not lost); the
  share that vanished (none left) or shrank sharply (below ``farm_shrink_ratio``).
- :func:`farm_age_days`: the age of each farm, the one definition the report uses (days since the
  earliest signup among its members), and :func:`bans_by_farm_age`.
- :func:`judge_drift`: all of the above against the configured thresholds, with the alerts.

Called by the publish stage (:mod:`jobs.banlists.stage`), which hands the result to the run
report (:mod:`jobs.report.html`), and the tests. An operator that adapts so its accounts stop
being flagged shows up here as a farm that vanished, before the ban list quietly shrinks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.banlists.runs import list_runs
from jobs.core.sections import ReportSettings
from jobs.core.store import ObjectStore
from jobs.core.validation import require_columns

PROFILE_FILE = "profile.json"
PROFILE_PROBABILITIES: tuple[float, ...] = tuple(i / 100 for i in range(101))
SCORE_KEY = "score"
MAX_ACCURACY = 2**31 - 1  # percentile_approx's largest accuracy (relative error 0)
PSI_FLOOR = 1e-4  # share given to an empty bin, so one empty bin does not make PSI infinite
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("< 7 days", 0, 7),
    ("7-29 days", 7, 30),
    ("30-89 days", 30, 90),
    (">= 90 days", 90, math.inf),
)


def quantile_profile(
    frame: DataFrame, columns: Sequence[str], relative_error: float
) -> dict[str, list[float]]:
    """The values of ``columns`` at :data:`PROFILE_PROBABILITIES`, in one Spark pass.

    One ``percentile_approx`` aggregate per column (accuracy ``1 / relative_error``): the same
    summaries as ``DataFrame.approxQuantile`` at that rank error, and the same values for the
    same input partitions (as fast at 1M accounts; faster on small tables).

    Args:
        frame: one row per account.
        columns: numeric columns to profile (nulls and NaN are left out, as ``approxQuantile``
            leaves them out).
        relative_error: the rank error (0 is exact and costly).

    Returns:
        Column name -> 101 values, lowest first (empty when the column has no value).
    """
    require_columns(frame, "profiled table", tuple(columns))
    accuracy = MAX_ACCURACY if relative_error == 0 else min(MAX_ACCURACY, round(1 / relative_error))
    probabilities = F.array(*[F.lit(p) for p in PROFILE_PROBABILITIES])
    aggregates = []
    for name in columns:
        value = F.col(name).cast("double")
        value = F.when(~F.isnan(value), value)  # NaN -> null, left out
        aggregates.append(F.percentile_approx(value, probabilities, accuracy).alias(name))
    (row,) = frame.agg(*aggregates).collect()
    return {c: [float(v) for v in (row[c] or [])] for c in columns}


def psi(current: Sequence[float], reference: Sequence[Sequence[float]]) -> float:
    """Population stability index of ``current`` against the pooled ``reference`` profiles.

    Each profile is a quantile profile (101 values); a profile stands for its distribution as
    101 equally weighted points. Bins are bounded by the pooled reference's deciles (repeated
    values merged), so the reference puts about a tenth in each bin unless it has ties.

    Returns:
        ``sum((a - e) * ln(a / e))`` over bins (shares floored at :data:`PSI_FLOOR`); 0 when
        either side is empty. Below 0.1 is usually read as stable, above 0.25 as a shift.
    """
    pooled = np.concatenate([np.asarray(r, dtype=float) for r in reference if len(r)] or [[]])
    now = np.asarray(current, dtype=float)
    if pooled.size == 0 or now.size == 0:
        return 0.0
    edges = np.unique(np.quantile(pooled, np.linspace(0.1, 0.9, 9)))
    expected = _bin_shares(pooled, edges)
    actual = _bin_shares(now, edges)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return np.maximum(counts / values.size, PSI_FLOOR)


def farm_loss(
    previous: pd.DataFrame | None, current: pd.DataFrame, shrink_ratio: float
) -> pd.DataFrame:
    """Per farm banned in ``previous``: its banned accounts then, how many are still banned.

    Args:
        previous: the list in force before this run (``account_id, farm_id, action``), or None.
        current: this run's list (``account_id, action``).
        shrink_ratio: a farm *shrank sharply* when fewer than this share of its banned accounts
            are still banned; it *vanished* when none is.

    Returns:
        ``farm_id, banned_before, still_banned, status`` (``kept``, ``shrank``, ``vanished``),
        largest farm first.
    """
    columns = ["farm_id", "banned_before", "still_banned", "status"]
    if previous is None or previous.empty:
        return pd.DataFrame(columns=columns)
    before = previous[(previous["action"] == "ban") & previous["farm_id"].notna()]
    banned_now = set(current.loc[current["action"] == "ban", "account_id"])
    grouped = before.assign(still=before["account_id"].isin(banned_now)).groupby("farm_id")
    loss = grouped.agg(banned_before=("account_id", "size"), still_banned=("still", "sum"))
    loss = loss.reset_index().astype({"banned_before": "int64", "still_banned": "int64"})
    status = np.where(
        loss["still_banned"] == 0,
        "vanished",
        np.where(loss["still_banned"] < shrink_ratio * loss["banned_before"], "shrank", "kept"),
    )
    loss["status"] = status
    return loss.sort_values(
        ["banned_before", "farm_id"], ascending=[False, True], ignore_index=True
    )[columns]


def farm_age_days(signups: DataFrame, communities: DataFrame, run_date: date) -> DataFrame:
    """Age of each farm candidate: whole days from its members' earliest signup to the run date.

    The one definition of farm age (a farm registry with first-seen dates can replace it here).

    Args:
        signups: accepted ``account_id, signup_ts``.
        communities: ``account_id, farm_id``.
        run_date: the run's date.

    Returns:
        ``farm_id, farm_age_days`` (one row per farm candidate with a known signup).
    """
    require_columns(signups, "signups", ("account_id", "signup_ts"))
    require_columns(communities, "communities", ("account_id", "farm_id"))
    members = communities.where(F.col("farm_id").isNotNull()).select("account_id", "farm_id")
    first = members.join(signups.select("account_id", "signup_ts"), "account_id").groupBy("farm_id")
    return first.agg(
        F.datediff(F.lit(run_date.isoformat()).cast("date"), F.to_date(F.min("signup_ts"))).alias(
            "farm_age_days"
        )
    )


def bans_by_farm_age(banlist: pd.DataFrame, ages: pd.DataFrame) -> pd.DataFrame:
    """Banned accounts and farms per farm-age band (:data:`AGE_BANDS`); bands without bans kept.

    Args:
        banlist: ``account_id, farm_id, action``.
        ages: ``farm_id, farm_age_days``.
    """
    bans = banlist[(banlist["action"] == "ban") & banlist["farm_id"].notna()]
    bans = bans.merge(ages, on="farm_id", how="left")
    rows = []
    for label, low, high in AGE_BANDS:
        band = bans[(bans["farm_age_days"] >= low) & (bans["farm_age_days"] < high)]
        rows.append({"band": label, "farms": band["farm_id"].nunique(), "banned": len(band)})
    unknown = bans[bans["farm_age_days"].isna()]
    if len(unknown):
        rows.append(
            {"band": "unknown", "farms": unknown["farm_id"].nunique(), "banned": len(unknown)}
        )
    return pd.DataFrame(rows, columns=["band", "farms", "banned"])


def trailing_profiles(
    store: ObjectStore, prefix: str, run_date: str, run_id: str, runs: int
) -> list[dict[str, Any]]:
    """The profiles of the newest ``runs`` published runs dated up to ``run_date`` (oldest first).

    Runs published before profiles existed, and held or revoked runs, are skipped.
    """
    published = [
        r
        for r in list_runs(store, prefix)
        if r["status"] == "published" and r["run_date"] <= run_date and r["run_id"] != run_id
    ]
    profiles = []
    for run in reversed(published):
        key = f"{run['prefix']}/{PROFILE_FILE}"
        if store.exists(key):
            profiles.append({"run_id": run["run_id"], **json.loads(store.get(key))})
        if len(profiles) == runs:
            break
    return list(reversed(profiles))


def judge_drift(
    profile: dict[str, Any],
    trailing: list[dict[str, Any]],
    loss: pd.DataFrame,
    settings: ReportSettings,
) -> dict[str, Any]:
    """Feature and score drift against the trailing runs, farms lost since last night, alerts.

    Args:
        profile: this run's profile (``features``: name -> quantiles, ``score``: quantiles).
        trailing: earlier runs' profiles, oldest first (may be empty: nothing to compare).
        loss: :func:`farm_loss` of this run.
        settings: the thresholds.

    Returns:
        ``compared_runs``, ``features`` (name -> PSI, highest first), ``score_psi``,
        ``farms`` (banned before, vanished, shrank, share lost) and ``alerts`` (sentences; empty
        when nothing crossed a threshold).
    """
    features: dict[str, float] = {}
    score_psi = 0.0
    if trailing:
        for name, quantiles in profile["features"].items():
            reference = [t["features"][name] for t in trailing if name in t.get("features", {})]
            if reference:
                features[name] = round(psi(quantiles, reference), 4)
        score_psi = round(psi(profile[SCORE_KEY], [t[SCORE_KEY] for t in trailing]), 4)
    features = dict(sorted(features.items(), key=lambda kv: (-kv[1], kv[0])))
    counts = loss["status"].value_counts().to_dict() if len(loss) else {}
    before = len(loss)
    lost = int(counts.get("vanished", 0)) + int(counts.get("shrank", 0))
    farms = {
        "banned_before": before,
        "vanished": int(counts.get("vanished", 0)),
        "shrank": int(counts.get("shrank", 0)),
        "share_lost": round(lost / before, 4) if before else 0.0,
    }
    alerts = []
    drifted = {k: v for k, v in features.items() if v > settings.feature_psi_alert}
    if drifted:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in list(drifted.items())[:5])
        alerts.append(
            f"{len(drifted)} model feature(s) drifted above PSI {settings.feature_psi_alert} "
            f"against the last {len(trailing)} published run(s): {shown}"
        )
    if score_psi > settings.score_psi_alert:
        alerts.append(
            f"the score distribution drifted: PSI {score_psi:.2f} > {settings.score_psi_alert} "
            f"against the last {len(trailing)} published run(s)"
        )
    if before and farms["share_lost"] > settings.farm_loss_alert:
        alerts.append(
            f"{lost} of the {before} farms banned last night vanished ({farms['vanished']}) or "
            f"shrank below {settings.farm_shrink_ratio:.0%} of their bans ({farms['shrank']}): "
            f"{farms['share_lost']:.0%} > {settings.farm_loss_alert:.0%}; an operator may have "
            "changed tactics"
        )
    return {
        "compared_runs": [t["run_id"] for t in trailing],
        "features": features,
        "score_psi": score_psi,
        "farms": farms,
        "alerts": alerts,
    }
