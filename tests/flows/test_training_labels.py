"""The training stage reads decisions from the ban-list store as labels, as of its run date.

Uses the shared small world's run folder (its accepted ``labels``) and a fresh store holding
two decisions about one account labelled fraud: one made on the run date, one the day after.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from flows.runtime import layout_for
from jobs.banlists.decisions import record_decision
from jobs.core.config import load_settings
from jobs.core.stage import StageContext
from jobs.core.store import LocalStore
from models.stage import training_labels

pytestmark = pytest.mark.e2e


def test_decisions_up_to_the_run_date_become_labels(spark, small_world, tmp_path):
    settings = load_settings(
        lake={"home": str(small_world.home)}, publish={"target": str(tmp_path / "bucket")}
    )
    day = date.fromisoformat(small_world.summary["run_date"])
    ctx = StageContext(spark, settings, layout_for(settings, day), day)
    table = spark.read.parquet(str(ctx.layout.accepted("labels")))
    fraud = sorted(r["account_id"] for r in table.where("label = 1").collect())
    cleared, later = fraud[0], fraud[1]
    store = LocalStore(tmp_path / "bucket")
    record_decision(store, "banlists", cleared, "not-fraud", "office", "rev", f"{day}T23:00:00Z")
    next_day = (day + timedelta(days=1)).isoformat()
    record_decision(store, "banlists", later, "not-fraud", "later", "rev", f"{next_day}T01:00Z")

    labels, fingerprint = training_labels(ctx)
    got = {r["account_id"]: (r["label"], r["source"]) for r in labels.collect()}
    assert got[cleared] == (0, "reviewer")
    assert got[later][0] == 1  # decided after the run date: not known to this training run
    assert labels.count() == table.select("account_id").distinct().count()
    assert fingerprint == {
        "decision_rows": 1,
        "accounts_labelled_by_decision": 1,
        "accounts_relabelled_by_decision": 1,
        "by_source": {"reviewer": 1, "appeal": 0},
    }
