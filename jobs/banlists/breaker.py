"""The circuit breaker: a run whose list looks wrong is held until a person releases it.

In: this run's ban list and input counts (``inputs.tables``: rows read and accepted per table,
from the ingest stage), the list in force, the earlier runs (:func:`jobs.banlists.runs.list_runs`
entries, oldest first) and :class:`jobs.core.config.BanSettings`. Out: the manifest's
``breaker`` block: held or not, why, and the figures compared. Called by
:mod:`jobs.banlists.publish`, which writes a held run but leaves ``latest.json`` alone.

Each rule compares with the last ``bans.breaker_window_runs`` published runs dated up to the
run's own date (a re-run of a date is judged against the run it would replace):

- too many bans: above ``breaker_max_bans``, or above ``breaker_multiple`` times the median
  (once ``breaker_min_history`` runs exist, and only above ``breaker_floor`` bans);
- too few bans: below ``breaker_min_share_of_median`` of the median, from one earlier run on;
- vanished farms: more than ``breaker_max_vanished_farms`` of the farms banned in the list in
  force (when it is not newer than the run) have no banned account left, judged by account, so
  a farm whose id changed because its community changed has not vanished;
- starved input: a table's accepted rows below ``breaker_min_input_share`` of its median over
  the runs with the same look-back.

The two falling-bans rules never hold a run that lifts ``breaker_drop_floor`` bans or fewer. A
starved input holds the run whatever its bans: a list built from half a table is wrong in ways
its counts need not show. An upstream export that failed quietly (an empty ``signups``, half of
``api_usage``) is the case these guard against: trust teams that sync ``latest.json`` would
otherwise lift every ban in force because of an outage.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import pandas as pd

from jobs.core.config import BanSettings


def breaker_decision(bans: int, history: list[int], settings: BanSettings) -> tuple[bool, str]:
    """Should a run with ``bans`` bans be held, given recent published runs' ban counts?

    Returns:
        (held, reason). The absolute ceiling always applies; the falling-bans rule from one
        earlier run on; the growing-bans rule once ``breaker_min_history`` runs exist and only
        above ``breaker_floor`` bans.
    """
    if bans > settings.breaker_max_bans:
        return True, f"{bans} bans exceed the ceiling of {settings.breaker_max_bans}"
    recent = history[-settings.breaker_window_runs :]
    if not recent:
        return False, "no earlier published run: only the ceiling applies"
    median = statistics.median(recent)
    share = settings.breaker_min_share_of_median
    if bans < share * median and median - bans > settings.breaker_drop_floor:
        return True, (
            f"{bans} bans fall below {share:.0%} of the median of the last {len(recent)} "
            f"published run(s) ({median:g})"
        )
    if len(recent) < settings.breaker_min_history:
        return False, (
            f"{bans} bans against a median of {median:g}; {len(recent)} earlier run(s): no "
            f"upward rule before {settings.breaker_min_history}"
        )
    limit = max(settings.breaker_multiple * median, settings.breaker_floor)
    if bans > limit:
        return True, (
            f"{bans} bans exceed {settings.breaker_multiple:g}x the median of the last "
            f"{len(recent)} published runs ({median:g})"
        )
    return False, f"{bans} bans within {limit:g} ({settings.breaker_multiple:g}x median {median:g})"


def vanished_farms(previous: pd.DataFrame | None, current: pd.DataFrame) -> dict[str, int]:
    """How many farms banned in ``previous`` have no banned account in ``current``.

    Returns:
        ``before`` (farms with a ban in the previous list), ``vanished`` (of those, farms none
        of whose banned accounts is still banned) and ``bans_lifted`` (their banned accounts).
    """
    if previous is None:
        return {"before": 0, "vanished": 0, "bans_lifted": 0}
    banned = previous[(previous["action"] == "ban") & previous["farm_id"].notna()]
    still_banned = set(current.loc[current["action"] == "ban", "account_id"])
    kept = banned["account_id"].isin(still_banned).groupby(banned["farm_id"]).any()
    gone = set(kept.index[~kept])
    return {
        "before": len(kept),
        "vanished": len(gone),
        "bans_lifted": int(banned["farm_id"].isin(gone).sum()),
    }


def accepted_rows(inputs: Mapping[str, Any]) -> dict[str, int]:
    """Accepted rows per input table from a manifest's ``inputs`` (``{}`` when not recorded)."""
    tables = inputs.get("tables") or {}
    return {
        name: int(counts["accepted"])
        for name, counts in tables.items()
        if isinstance(counts, Mapping) and isinstance(counts.get("accepted"), int)
    }


def starved_inputs(
    accepted: dict[str, int], trailing: list[dict[str, int]], min_share: float
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Tables whose accepted rows fall below ``min_share`` of their trailing median.

    Args:
        accepted: accepted rows per table in this run.
        trailing: the same for each earlier run compared with.
        min_share: the smallest share of the median that passes.

    Returns:
        (reasons, figures): one reason per starved table, and per table compared its accepted
        rows and trailing median.
    """
    reasons: list[str] = []
    figures: dict[str, dict[str, float]] = {}
    for name, rows in sorted(accepted.items()):
        past = [run[name] for run in trailing if name in run]
        if not past:
            continue
        median = statistics.median(past)
        figures[name] = {"accepted": rows, "trailing_median": median}
        if median > 0 and rows < min_share * median:
            reasons.append(
                f"input table {name!r} has {rows:,} accepted rows, below {min_share:.0%} of its "
                f"median over the last {len(past)} published run(s) ({median:,.0f})"
            )
    return reasons, figures


def judge(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    inputs: Mapping[str, Any],
    earlier: list[dict[str, Any]],
    settings: BanSettings,
    release_held: bool = False,
) -> dict[str, Any]:
    """The manifest's ``breaker`` block for one run.

    Args:
        current: this run's ban list (``account_id, farm_id, action``).
        previous: the list in force (``None`` when there is none, or it is newer than the run).
        inputs: this run's manifest ``inputs`` (``lookback_days`` and ``tables``).
        earlier: :func:`jobs.banlists.runs.list_runs` entries of the earlier runs, oldest first.
        settings: the ``bans`` settings.
        release_held: an operator released the run: record why it would be held, hold nothing.

    Returns:
        ``held``, ``reason`` (every rule that tripped, or why the run passed),
        ``history_runs`` and ``history_bans`` of the published runs compared, ``farms``
        (:func:`vanished_farms`) and ``inputs`` (accepted rows against trailing medians).
    """
    published = [r for r in earlier if r["status"] == "published"]
    published = published[-settings.breaker_window_runs :]
    bans = int((current["action"] == "ban").sum())
    history = [r["counts"]["ban"] for r in published]
    bans_held, bans_reason = breaker_decision(bans, history, settings)
    reasons = [bans_reason] if bans_held else []
    farms = vanished_farms(previous, current)
    if (
        farms["before"]
        and farms["vanished"] / farms["before"] > settings.breaker_max_vanished_farms
        and farms["bans_lifted"] > settings.breaker_drop_floor
    ):
        reasons.append(
            f"{farms['vanished']} of the {farms['before']} farms banned in the list in force "
            f"have no ban left ({farms['bans_lifted']} bans lifted)"
        )
    lookback = inputs.get("lookback_days")
    same_window = [r for r in published if r.get("inputs", {}).get("lookback_days") == lookback]
    starved, volumes = starved_inputs(
        accepted_rows(inputs),
        [accepted_rows(r.get("inputs", {})) for r in same_window],
        settings.breaker_min_input_share,
    )
    reasons += starved
    held = bool(reasons)
    reason = "; ".join(reasons) if held else bans_reason
    if held and release_held:
        held, reason = False, f"released by operator flag: {reason}"
    return {
        "held": held,
        "reason": reason,
        "history_runs": [r["run_id"] for r in published],
        "history_bans": history,
        "farms": farms,
        "inputs": volumes,
    }
