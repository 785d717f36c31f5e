from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from jobs.config import BanSettings
from jobs.publish import LocalStore, assign_actions, publish, read_latest
from jobs.report import truth_metrics

MODEL = {"name": "farmwatch-farm-model", "version": "3"}


def banlist(scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": [f"a{i}" for i in range(len(scores))],
            "farm_id": ["farm_x"] * len(scores),
            "score": scores,
            "action": ["ban"] * len(scores),
            "reasons": [["shares a payment instrument with 4 other accounts"]] * len(scores),
            "model_version": ["3"] * len(scores),
        }
    )


def test_score_bands_to_actions(spark):
    scores = spark.createDataFrame(
        [
            ("a", "farm_1", 0.95),
            ("b", None, 0.95),
            ("c", "farm_1", 0.7),
            ("d", None, 0.4),
            ("e", "farm_1", 0.1),
        ],
        "account_id string, farm_id string, score double",
    )
    got = assign_actions(scores, BanSettings()).orderBy("account_id")
    assert [(r["account_id"], r["action"]) for r in got.collect()] == [
        ("a", "ban"),
        ("b", "review"),
        ("c", "review"),
        ("d", "watch"),
    ]
    with pytest.raises(ValueError, match="watch <= review <= ban"):
        assign_actions(scores, BanSettings(ban_threshold=0.5, review_threshold=0.6))
    with pytest.raises(ValueError, match="farm_id"):
        assign_actions(scores.drop("farm_id"), BanSettings())


def test_layout_manifest_and_round_trip(tmp_path):
    store = LocalStore(tmp_path)
    result = publish(
        banlist([0.99, 0.97]), store, "banlists", "2026-06-05", MODEL, "cfg1", {"rows": 10}
    )
    run = tmp_path / result.run_prefix
    assert run.parent.name == "dt=2026-06-05" and run.name.startswith("run=")
    assert {p.name for p in run.iterdir()} == {
        "banlist.parquet",
        "banlist.csv",
        "farms.parquet",
        "manifest.json",
    }
    manifest = json.loads((run / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == meta["sha256"]
    assert manifest["counts"] == {"ban": 2, "review": 0, "watch": 0}
    assert manifest["model"] == MODEL
    read_manifest, frame = read_latest(store)
    assert read_manifest == manifest
    assert frame["account_id"].tolist() == ["a0", "a1"]
    farms = pd.read_parquet(run / "farms.parquet")
    assert farms.to_dict("records")[0]["accounts_banned"] == 2


def test_republishing_is_idempotent(tmp_path):
    store = LocalStore(tmp_path)
    first = publish(banlist([0.99]), store, "banlists", "2026-06-05", MODEL, "cfg1", {"n": 1})
    before = {p: p.read_bytes() for p in (tmp_path / first.run_prefix).iterdir()}
    second = publish(banlist([0.99]), store, "banlists", "2026-06-05", MODEL, "cfg1", {"n": 1})
    assert second.run_prefix == first.run_prefix
    assert {p: p.read_bytes() for p in (tmp_path / second.run_prefix).iterdir()} == before
    assert len(list((tmp_path / "banlists" / "dt=2026-06-05").iterdir())) == 1


def test_failed_publish_leaves_previous_list_in_force(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    publish(banlist([0.99]), store, "banlists", "2026-06-04", MODEL, "cfg1", {"n": 1})
    latest_before = (tmp_path / "banlists" / "latest.json").read_bytes()
    real_put = LocalStore.put

    def failing_put(self, key, data):
        if key.endswith("manifest.json"):
            raise OSError("disk full")
        real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.raises(OSError, match="disk full"):
        publish(banlist([0.99, 0.98]), store, "banlists", "2026-06-05", MODEL, "cfg1", {"n": 2})
    assert (tmp_path / "banlists" / "latest.json").read_bytes() == latest_before
    assert read_latest(store)[0]["run_date"] == "2026-06-04"


def test_truth_metrics(spark):
    truth = spark.createDataFrame(
        [
            ("f1", True, True),
            ("f2", True, True),
            ("f3", True, False),
            ("l1", False, False),
            ("l2", False, False),
        ],
        "account_id string, is_farm boolean, is_campaign boolean",
    )
    banned = spark.createDataFrame([("f1",), ("f3",), ("l1",)], "account_id string")
    got = truth_metrics(banned, truth)
    assert got == {"precision": 2 / 3, "recall": 2 / 3, "campaign_recall": 0.5, "false_bans": 1.0}
    with pytest.raises(ValueError, match="is_campaign"):
        truth_metrics(banned, truth.drop("is_campaign"))
