"""The circuit breaker: growing lists, falling lists, vanishing farms and starved inputs.

The publish-level cases run the real publisher on a local folder store: a held run is written
but ``latest.json`` does not move until a person releases it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.banlists.breaker import breaker_decision, judge, starved_inputs, vanished_farms
from jobs.banlists.publish import RunContext, publish
from jobs.banlists.runs import latest_pointer, list_runs, read_latest, release
from jobs.core.config import BanSettings
from jobs.core.store import LocalStore

MODEL = {"name": "farmwatch-farm-model", "version": "3"}
BANS = BanSettings()
TABLES = {"signups": 3000, "payments": 9000, "ip_events": 40000, "api_usage": 60000, "labels": 120}
FOUR_FARMS = {"f1": 10, "f2": 10, "f3": 10, "f4": 10}


def inputs(lookback_days: int = 44, **accepted: int) -> dict:
    rows = {**TABLES, **accepted}
    return {
        "lookback_days": lookback_days,
        "tables": {
            name: {"table": name, "read": n, "accepted": n, "quarantined": 0, "out_of_window": 0}
            for name, n in rows.items()
        },
    }


def context(day: str, lookback_days: int = 44, **accepted: int) -> RunContext:
    return RunContext(
        day, MODEL, "cfg", "0.1.0+gtest", inputs(lookback_days, **accepted), entity_hash_key_id="k"
    )


def banned(farms: dict[str, int], action: str = "ban") -> pd.DataFrame:
    """``n`` banned accounts per farm, ids ``<farm>_<i>`` (stable from night to night)."""
    ids = [(farm, f"{farm}_{i}") for farm, n in farms.items() for i in range(n)]
    return pd.DataFrame(
        {
            "account_id": [a for _, a in ids],
            "farm_id": [f for f, _ in ids],
            "score": [0.99] * len(ids),
            "action": [action] * len(ids),
            "reasons": [["shares instrument 3fa2c91b0d4e5f61 with 9 other accounts"]] * len(ids),
            "model_version": ["3"] * len(ids),
        },
        columns=["account_id", "farm_id", "score", "action", "reasons", "model_version"],
    )


def test_breaker_decision():
    bans = BanSettings(breaker_multiple=3, breaker_min_history=3, breaker_floor=10)
    assert breaker_decision(500, [100, 120], bans)[0] is False  # too little history to go up
    held, reason = breaker_decision(500, [100, 120, 110, 90], bans)
    assert held and "3x the median of the last 4 published runs (105)" in reason
    assert breaker_decision(300, [100, 120, 110, 90], bans)[0] is False
    assert breaker_decision(9, [0, 0, 0], bans)[0] is False  # under the floor
    assert breaker_decision(11, [0, 0, 0], bans)[0] is True
    held, reason = breaker_decision(200_000, [], bans)
    assert held and "ceiling of 100000" in reason
    # Only the last breaker_window_runs count.
    window = BanSettings(breaker_window_runs=3, breaker_min_history=3, breaker_floor=0)
    assert breaker_decision(100, [1000, 1000, 1000, 10, 10, 10], window)[0] is True
    # Falling bans hold from one earlier run on, unless the drop is within the floor.
    held, reason = breaker_decision(0, [238], bans)
    assert (
        held
        and reason == "0 bans fall below 50% of the median of the last 1 published run(s) (238)"
    )
    assert breaker_decision(119, [238], bans)[0] is False  # exactly half passes
    assert breaker_decision(0, [10], bans)[0] is False  # lifts 10 bans: the floor
    assert breaker_decision(0, [11], bans)[0] is True
    assert breaker_decision(0, [238], BanSettings(breaker_min_share_of_median=0))[0] is False


def test_vanished_farms_are_judged_by_their_accounts():
    previous = banned(FOUR_FARMS)
    assert vanished_farms(None, previous) == {"before": 0, "vanished": 0, "bans_lifted": 0}
    # f1's community got a new id (its smallest account left): same accounts, not vanished.
    relabelled = previous.assign(farm_id=previous["farm_id"].replace("f1", "f9"))
    assert vanished_farms(previous, relabelled)["vanished"] == 0
    # f2 loses all but one ban: still there. f3 goes to review and f4 is gone: both vanished.
    now = previous[~previous["farm_id"].isin(["f4"])].copy()
    now.loc[now["farm_id"] == "f3", "action"] = "review"
    now = now[(now["farm_id"] != "f2") | (now["account_id"] == "f2_0")]
    assert vanished_farms(previous, now) == {"before": 4, "vanished": 2, "bans_lifted": 20}


def test_starved_inputs_compare_each_table_with_its_median():
    trailing = [{"signups": 3000, "api_usage": 60000}, {"signups": 3100, "api_usage": 58000}]
    reasons, figures = starved_inputs(
        {"signups": 0, "api_usage": 30000, "labels": 5}, trailing, 0.8
    )
    assert reasons == [
        "input table 'api_usage' has 30,000 accepted rows, below 80% of its median over the "
        "last 2 published run(s) (59,000)",
        "input table 'signups' has 0 accepted rows, below 80% of its median over the last 2 "
        "published run(s) (3,050)",
    ]
    assert figures["signups"] == {"accepted": 0, "trailing_median": 3050}
    assert "labels" not in figures  # never seen before: nothing to compare with
    assert starved_inputs({"signups": 2900}, trailing, 0.8)[0] == []
    assert starved_inputs({"signups": 0}, [{"signups": 0}], 0.8)[0] == []  # always empty
    assert starved_inputs({"signups": 0}, trailing, 0.0)[0] == []  # turned off


def test_judge_records_why_a_released_run_would_have_been_held():
    earlier = [
        {"run_id": "r1", "status": "published", "counts": {"ban": 40}, "inputs": inputs()},
        {"run_id": "r2", "status": "held", "counts": {"ban": 900}, "inputs": inputs()},
    ]
    block = judge(banned({}), banned(FOUR_FARMS), inputs(signups=0), earlier, BANS, True)
    assert block["held"] is False
    assert block["reason"].startswith("released by operator flag: 0 bans fall below 50%")
    assert "4 of the 4 farms banned in the list in force have no ban left" in block["reason"]
    assert "input table 'signups' has 0 accepted rows" in block["reason"]
    assert block["history_runs"] == ["r1"] and block["history_bans"] == [40]  # held runs skipped
    assert block["farms"] == {"before": 4, "vanished": 4, "bans_lifted": 40}
    assert block["inputs"]["signups"] == {"accepted": 0, "trailing_median": 3000}


def test_an_empty_input_table_holds_the_run_until_a_person_releases_it(tmp_path):
    store = LocalStore(tmp_path)
    first = publish(banned(FOUR_FARMS), store, "banlists", context("2026-06-04"), BANS)
    assert first.in_force  # the only earlier run: the next night is compared with it
    latest = (tmp_path / "banlists" / "latest.json").read_bytes()

    starved = publish(banned({}), store, "banlists", context("2026-06-05", signups=0), BANS)
    assert starved.status == "held" and not starved.in_force
    assert starved.message.startswith("HELD, latest.json untouched: 0 bans fall below 50%")
    assert "input table 'signups' has 0 accepted rows" in starved.message
    assert (tmp_path / "banlists" / "latest.json").read_bytes() == latest
    assert read_latest(store)[1]["account_id"].tolist() == banned(FOUR_FARMS)["account_id"].tolist()

    released = release(store, "banlists", starved.manifest["run_id"], "upstream confirmed: T-9")
    assert released.status == "published" and released.in_force
    assert latest_pointer(store)["run_id"] == starved.manifest["run_id"]


def test_half_of_a_table_missing_holds_even_a_list_that_looks_normal(tmp_path):
    store = LocalStore(tmp_path)
    for day in ("2026-06-01", "2026-06-02", "2026-06-03"):
        assert publish(banned(FOUR_FARMS), store, "banlists", context(day), BANS).in_force
    latest = latest_pointer(store)
    # Half of api_usage is lost; the list only loses one farm of four, which alone would pass.
    three = {"f1": 10, "f2": 10, "f3": 10}
    held = publish(banned(three), store, "banlists", context("2026-06-04", api_usage=30000), BANS)
    assert held.status == "held"
    assert held.manifest["breaker"]["reason"] == (
        "input table 'api_usage' has 30,000 accepted rows, below 80% of its median over the "
        "last 3 published run(s) (60,000)"
    )
    assert latest_pointer(store) == latest
    # The operator flag on a re-run of the date releases it.
    again = publish(
        banned(three),
        store,
        "banlists",
        context("2026-06-04", api_usage=30000),
        BANS,
        release_held=True,
    )
    assert again.status == "published" and again.in_force
    assert again.manifest["run_id"] == held.manifest["run_id"]


def test_re_running_a_date_with_an_empty_table_is_judged_against_the_run_it_replaces(tmp_path):
    store = LocalStore(tmp_path)
    publish(banned(FOUR_FARMS), store, "banlists", context("2026-06-05"), BANS)
    latest = latest_pointer(store)
    rerun = publish(banned({}), store, "banlists", context("2026-06-05", signups=0), BANS)
    assert rerun.status == "held" and latest_pointer(store) == latest
    assert [r["status"] for r in list_runs(store)] == ["published", "held"]


def test_falling_bans_or_vanishing_farms_hold_with_full_inputs(tmp_path):
    store = LocalStore(tmp_path)
    publish(banned(FOUR_FARMS), store, "banlists", context("2026-06-01"), BANS)
    fewer = publish(banned({"f1": 12}), store, "banlists", context("2026-06-02"), BANS)
    assert fewer.status == "held"
    assert fewer.manifest["breaker"]["reason"] == (
        "12 bans fall below 50% of the median of the last 1 published run(s) (40); "
        "3 of the 4 farms banned in the list in force have no ban left (30 bans lifted)"
    )
    # As many bans as before, but three of the four farms gone at once: held as well.
    swapped = banned({"f1": 10, "n1": 10, "n2": 10, "n3": 10})
    held = publish(swapped, store, "banlists", context("2026-06-03"), BANS)
    assert held.status == "held"
    assert held.manifest["breaker"]["reason"].startswith("3 of the 4 farms banned in the list")
    assert latest_pointer(store)["run_date"] == "2026-06-01"


def test_a_backfill_is_not_judged_against_a_newer_list(tmp_path):
    store = LocalStore(tmp_path)
    publish(banned(FOUR_FARMS), store, "banlists", context("2026-06-05"), BANS)
    older = publish(banned({"o1": 12}), store, "banlists", context("2026-06-01"), BANS)
    assert older.status == "published" and not older.in_force  # latest.json never moves back
    assert older.manifest["breaker"]["farms"]["before"] == 0
    assert older.manifest["breaker"]["history_runs"] == []  # only runs up to its own date


@pytest.mark.parametrize(
    "nights",
    [
        # inputs grow and shrink by a few percent, bans move by a tenth, one farm of four goes
        [({}, FOUR_FARMS), ({"api_usage": 61000}, {"f1": 9, "f2": 10, "f3": 11, "f4": 8})]
        + [({"api_usage": 57500, "signups": 2950}, {"f1": 12, "f2": 10, "f3": 14})],
        # a small list may lose everything: the drop is within the floor
        [({}, {"f1": 4, "f2": 3}), ({}, {})],
        # a shorter look-back reads fewer rows: compared only with runs of the same look-back
        [({}, FOUR_FARMS), ({"lookback_days": 7, "api_usage": 9000, "signups": 500}, FOUR_FARMS)],
    ],
    ids=["fluctuation", "small-list", "new-look-back"],
)
def test_normal_fluctuation_passes(tmp_path, nights):
    store = LocalStore(tmp_path)
    for day, (accepted, farms) in enumerate(nights, start=1):
        result = publish(
            banned(farms), store, "banlists", context(f"2026-06-0{day}", **accepted), BANS
        )
        assert result.status == "published" and result.in_force, result.message
