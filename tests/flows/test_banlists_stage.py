"""The publish stage reads its tunables from the settings (``graph.binding_entities``).

Re-runs the publish stage of the shared small world's run to a fresh target with one binding
entity per farm: the farms file must list at most one (the stage used to pass no count, so
the farms file always listed up to three whatever the setting said). The second publish goes
to the same target as the first, so it is a second list of an unchanged world: its drift watch
compares with the first and must stay quiet. A third list with a ban band nobody reaches (as
if the model stopped catching every farm overnight) must raise the alert in its report. A run
whose communities stage predates the ``farm_entities`` table gets the same table computed.
"""

from __future__ import annotations

import shutil
from datetime import date

import pandas as pd
import pytest

from flows.runtime import layout_for
from jobs.banlists import stage as banlists
from jobs.communities.stage import load_farm_entities
from jobs.core.config import load_settings
from jobs.core.layout import RunLayout
from jobs.core.stage import StageContext

pytestmark = pytest.mark.e2e


def _publish(
    spark, small_world, tmp_path, binding: int, bans: dict | None = None
) -> tuple[dict, pd.DataFrame]:
    """Publish the small world's scored run again with ``binding`` entities per farm."""
    settings = load_settings(
        lake={"home": str(small_world.home)},
        graph={"binding_entities": binding},
        bans=bans or {},
        publish={"target": str(tmp_path / "bucket")},
    )
    run_date = date.fromisoformat(small_world.summary["run_date"])
    ctx = StageContext(spark, settings, layout_for(settings, run_date), run_date)
    summary = banlists.run(ctx)
    return summary, pd.read_parquet(tmp_path / "bucket" / summary["prefix"] / "farms.parquet")


def test_binding_entities_setting_reaches_the_farms_file(spark, small_world, tmp_path):
    first, default = _publish(spark, small_world, tmp_path, 3)
    assert first["status"] == "published"
    assert default["binding_entities"].map(len).max() > 1  # the world has farms to shorten
    assert first["drift"]["compared_runs"] == []
    second, one = _publish(spark, small_world, tmp_path, 1)
    assert second["status"] == "published"
    assert one["binding_entities"].map(len).max() == 1
    assert set(one["farm_id"]) == set(default["farm_id"])
    # the same world published twice: the drift watch compares and finds nothing
    drift = second["drift"]
    assert drift["compared_runs"] == [first["run_id"]]
    assert drift["alerts"] == []
    assert drift["score_psi"] == 0.0 and max(drift["features"].values()) == 0.0
    banned_farms = int((default["accounts_banned"] > 0).sum())
    assert drift["farms"] == {
        "banned_before": banned_farms,
        "vanished": 0,
        "shrank": 0,
        "share_lost": 0.0,
    }
    page = (tmp_path / "bucket" / second["report"]).read_text()
    assert "No drift alert (compared with 1 published run(s))" in page

    # every farm loses its bans overnight: the breaker holds the list and the watch says why
    third, _ = _publish(spark, small_world, tmp_path, 1, bans={"ban_threshold": 1.0})
    assert third["status"] == "held" and third["ban"] == 0
    assert third["drift"]["farms"]["vanished"] == banned_farms
    (alert,) = third["drift"]["alerts"]
    assert f"{banned_farms} of the {banned_farms} farms banned last night vanished" in alert
    page = (tmp_path / "bucket" / third["report"]).read_text()
    assert "Drift alert" in page and "an operator may have changed tactics" in page


def test_a_run_without_the_farm_entities_table_computes_the_same_one(spark, small_world, tmp_path):
    """A run whose communities stage predates ``farm_entities`` (resumed after an upgrade)."""
    settings = load_settings(lake={"home": str(small_world.home)})
    layout = layout_for(settings, date.fromisoformat(small_world.summary["run_date"]))
    assert layout.farm_entities.exists()
    written = load_farm_entities(spark, layout)
    older = RunLayout.at(tmp_path / "run")
    for table in ("communities", "account_entities"):
        shutil.copytree(getattr(layout, table), getattr(older, table))
    computed = load_farm_entities(spark, older)
    assert not older.farm_entities.exists()
    rows = sorted(tuple(r) for r in written.collect())
    assert len(rows) > 0
    assert sorted(tuple(r) for r in computed.select(*written.columns).collect()) == rows
