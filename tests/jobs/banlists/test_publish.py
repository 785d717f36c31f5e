from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.banlists.actions import (
    apply_allowlist,
    assign_actions,
    attach_evidence,
    hold_small_farms,
    load_allowlist,
)
from jobs.banlists.publish import RunContext, diff_lists, publish
from jobs.banlists.runs import list_runs, read_latest
from jobs.core.config import BanSettings
from jobs.core.store import LocalStore
from jobs.graph.links import farm_shared_entities
from jobs.report.summary import truth_metrics

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
            ("a", "farm_1", 0.95, True, ["r"]),
            ("b", None, 0.95, True, ["r"]),
            ("c", "farm_1", 0.7, True, ["r"]),
            ("d", None, 0.4, False, ["r"]),
            ("e", "farm_1", 0.1, False, []),
            ("f", "farm_1", 0.95, False, ["r"]),  # no evidence of its own: a person decides
        ],
        "account_id string, farm_id string, score double, own_evidence boolean, "
        "reasons array<string>",
    )
    got = assign_actions(scores, BanSettings()).orderBy("account_id")
    assert [(r["account_id"], r["action"]) for r in got.collect()] == [
        ("a", "ban"),
        ("b", "review"),
        ("c", "review"),
        ("d", "watch"),
        ("f", "review"),
    ]
    lenient = assign_actions(scores, BanSettings(ban_needs_own_evidence=False))
    assert {r["account_id"] for r in lenient.where("action = 'ban'").collect()} == {"a", "f"}
    with pytest.raises(ValueError, match="own_evidence"):
        assign_actions(scores.drop("own_evidence"), BanSettings())
    with pytest.raises(ValueError, match="watch <= review <= ban"):
        assign_actions(scores, BanSettings(ban_threshold=0.5, review_threshold=0.6))
    with pytest.raises(ValueError, match="farm_id"):
        assign_actions(scores.drop("farm_id"), BanSettings())


def test_a_farm_is_banned_as_a_group_or_its_few_sure_members_go_to_review(spark):
    rows = [(f"f{i}", "farm_big", 0.97, True, ["own"]) for i in range(5)]
    rows += [(f"h{i}", "farm_home", 0.99, True, ["shares a card"]) for i in range(3)]
    rows += [("h3", "farm_home", 0.99, False, ["no own"]), ("h4", "farm_home", 0.5, True, [])]
    scores = spark.createDataFrame(
        rows,
        "account_id string, farm_id string, score double, own_evidence boolean, "
        "reasons array<string>",
    )

    def actions(bans: BanSettings, allowlisted: tuple[str, ...] = ()) -> dict[str, Any]:
        listed = assign_actions(scores, bans)
        signups = listed.select(
            "account_id", F.concat("account_id", F.lit("@x.org")).alias("email")
        )
        rules = spark.createDataFrame(
            [("account", a, "") for a in allowlisted] or [("account", "none", "")],
            "kind string, value string, note string",
        )
        kept, _ = apply_allowlist(listed, signups, rules)
        held = hold_small_farms(kept, bans)
        assert held.columns == kept.columns
        return {r["account_id"]: r for r in held.collect()}

    got = actions(BanSettings())
    assert {a for a, r in got.items() if r["action"] == "ban"} == {f"f{i}" for i in range(5)}
    assert {a: got[a]["action"] for a in ("h0", "h1", "h2", "h3")} == dict.fromkeys(
        ("h0", "h1", "h2", "h3"), "review"
    )
    assert got["h0"]["reasons"] == [
        "only 3 of its farm candidate's accounts qualify for a ban (ban band, own evidence, not "
        "allowlisted); a farm ban needs 5",
        "shares a card",
    ]
    assert got["h3"]["reasons"] == ["no own"]  # held back by the own-evidence rule already
    assert got["f0"]["reasons"] == ["own"]
    assert not [a for a, r in actions(BanSettings(min_farm_bans=6)).items() if r["action"] == "ban"]
    off = actions(BanSettings(min_farm_bans=1))
    assert {a for a, r in off.items() if r["action"] == "ban"} == {
        *(f"f{i}" for i in range(5)),
        *(f"h{i}" for i in range(3)),
    }
    # an allowlisted member does not count towards its farm's bans: the other four go to review
    kept = actions(BanSettings(), allowlisted=("f0",))
    assert "f0" not in kept
    assert {kept[f"f{i}"]["action"] for i in range(1, 5)} == {"review"}
    assert kept["f1"]["reasons"][0].startswith("only 4 of its farm candidate's accounts")


def test_first_night_a_strongly_anomalous_group_goes_to_review_never_to_ban(spark):
    scores = spark.createDataFrame(
        [
            ("n1", "farm_new", 0.05, False, []),  # a new operator the model has never seen
            ("n2", "farm_new", 0.45, True, ["own"]),
            ("n3", "farm_new", 0.95, False, ["own"]),  # no own evidence: still review
            ("o1", "farm_office", 0.05, False, []),  # anomalous in one family only
            ("x1", None, 0.05, False, []),
        ],
        "account_id string, farm_id string, score double, own_evidence boolean, "
        "reasons array<string>",
    )
    anomaly = spark.createDataFrame(
        [
            ("farm_new", 6.0, ["97% keep one schedule", "100% use exclusive templates", "x"]),
            ("farm_office", 1.0, ["team cards"]),
        ],
        "farm_id string, group_anomalous_families double, evidence array<string>",
    )
    got = {r["account_id"]: r for r in assign_actions(scores, BanSettings(), anomaly).collect()}
    assert {a: r["action"] for a, r in got.items()} == {
        "n1": "review",
        "n2": "review",
        "n3": "review",
    }
    assert got["n1"]["reasons"] == [
        "first night: its group is unlike random groups of its size in 6 of 7 kinds of "
        "behaviour, and the model is not sure",
        "97% keep one schedule",
        "100% use exclusive templates",
    ]
    assert got["n3"]["reasons"] == ["own"]  # the model already sent it to review
    off = assign_actions(scores, BanSettings(anomaly_review_families=0), anomaly)
    assert off.count() == 2  # n2 (watch) and n3 (review): the path is off


def context(run_date: str = "2026-06-05", **inputs: int) -> RunContext:
    return RunContext(run_date, MODEL, "cfg1", "0.1.0+gtest", inputs or {"rows": 10})


BANS = BanSettings()


def test_layout_manifest_and_round_trip(tmp_path):
    store = LocalStore(tmp_path)
    result = publish(banlist([0.99, 0.97]), store, "banlists", context(), BANS)
    assert result.status == "published" and result.in_force
    run = tmp_path / result.run_prefix
    assert run.parent.name == "dt=2026-06-05" and run.name.startswith("run=")
    assert {p.name for p in run.iterdir()} == {
        "banlist.parquet",
        "banlist.csv",
        "farms.parquet",
        "diff.parquet",
        "allowlisted.parquet",
        "farm_registry.parquet",
        "farm_members.parquet",
        "farm_history.parquet",
        "manifest.json",
        "status.json",
    }
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "banlist.parquet",
        "banlist.csv",
        "farms.parquet",
        "diff.parquet",
        "allowlisted.parquet",
        "farm_registry.parquet",
        "farm_members.parquet",
        "farm_history.parquet",
    }
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == meta["sha256"]
    assert manifest["counts"] == {"ban": 2, "review": 0, "watch": 0}
    assert manifest["model"] == MODEL
    assert manifest["code_version"] == "0.1.0+gtest"
    assert manifest["diff"]["previous_run"] is None
    assert manifest["diff"]["accounts"]["new"] == 2
    read_manifest, frame = read_latest(store)
    assert read_manifest == manifest
    assert frame["account_id"].tolist() == ["a0", "a1"]
    farms = pd.read_parquet(run / "farms.parquet")
    assert farms.to_dict("records")[0]["accounts_banned"] == 2


def test_republishing_is_idempotent(tmp_path):
    store = LocalStore(tmp_path)
    first = publish(banlist([0.99]), store, "banlists", context(n=1), BANS)
    before = {p: p.read_bytes() for p in (tmp_path / first.run_prefix).iterdir()}
    latest = (tmp_path / "banlists" / "latest.json").read_bytes()
    second = publish(banlist([0.99]), store, "banlists", context(n=1), BANS)
    assert second.run_prefix == first.run_prefix
    assert second.message == "identical run already published"
    assert {p: p.read_bytes() for p in (tmp_path / second.run_prefix).iterdir()} == before
    assert (tmp_path / "banlists" / "latest.json").read_bytes() == latest
    assert len(list((tmp_path / "banlists" / "dt=2026-06-05").iterdir())) == 1
    # Different inputs on the same date are a different run, diffed against the first.
    third = publish(banlist([0.99, 0.98]), store, "banlists", context(n=2), BANS)
    assert third.run_prefix != first.run_prefix
    assert third.manifest["diff"]["previous_run"] == first.run_prefix
    assert third.manifest["diff"]["accounts"] == {
        "new": 1,
        "dropped": 0,
        "changed": 0,
        "unchanged": 1,
    }


def test_failed_publish_leaves_previous_list_in_force(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    publish(banlist([0.99]), store, "banlists", context("2026-06-04"), BANS)
    latest_before = (tmp_path / "banlists" / "latest.json").read_bytes()
    real_put = LocalStore.put

    def failing_put(self, key, data):
        if key.endswith("manifest.json"):
            raise OSError("disk full")
        real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.raises(OSError, match="disk full"):
        publish(banlist([0.99, 0.98]), store, "banlists", context("2026-06-05"), BANS)
    assert (tmp_path / "banlists" / "latest.json").read_bytes() == latest_before
    assert read_latest(store)[0]["run_date"] == "2026-06-04"
    # The half-written run is not listed as a run (no manifest) and a re-run succeeds.
    monkeypatch.setattr(LocalStore, "put", real_put)
    assert [r["run_date"] for r in list_runs(store)] == ["2026-06-04"]
    again = publish(banlist([0.99, 0.98]), store, "banlists", context("2026-06-05"), BANS)
    assert again.in_force and read_latest(store)[0]["run_date"] == "2026-06-05"


def test_backfilling_an_older_date_does_not_move_latest_back(tmp_path):
    store = LocalStore(tmp_path)
    publish(banlist([0.99]), store, "banlists", context("2026-06-05"), BANS)
    older = publish(banlist([0.99, 0.98]), store, "banlists", context("2026-06-01"), BANS)
    assert older.status == "published" and not older.in_force
    assert read_latest(store)[0]["run_date"] == "2026-06-05"


def test_manifest_names_the_key_and_a_key_change_is_marked_in_the_diff(tmp_path):
    store = LocalStore(tmp_path)

    def keyed(run_date: str, key_id: str) -> RunContext:
        return RunContext(run_date, MODEL, "cfg1", "0.1.0+gtest", {"rows": 1}, key_id)

    first = publish(banlist([0.99, 0.98]), store, "banlists", keyed("2026-06-04", "1" * 16), BANS)
    assert first.manifest["entity_hash_key_id"] == "1" * 16
    assert first.manifest["diff"]["entity_hash_key"] == {
        "previous": None,
        "current": "1" * 16,
        "changed": False,
    }
    same = publish(banlist([0.99, 0.98]), store, "banlists", keyed("2026-06-05", "1" * 16), BANS)
    assert same.manifest["diff"]["entity_hash_key"]["changed"] is False
    assert same.message == "published"
    # Another key: the same accounts, so nobody was unbanned, and the diff says the hashes
    # in reasons and binding entities cannot be matched with the previous list's.
    rotated = publish(banlist([0.99, 0.98]), store, "banlists", keyed("2026-06-06", "2" * 16), BANS)
    assert rotated.status == "published" and rotated.in_force
    block = rotated.manifest["diff"]["entity_hash_key"]
    assert (block["previous"], block["current"], block["changed"]) == ("1" * 16, "2" * 16, True)
    assert "cannot be matched with the previous list's" in block["note"]
    assert rotated.message == "published (entity hash key changed since the list in force)"
    assert rotated.manifest["diff"]["accounts"] == {
        "new": 0,
        "dropped": 0,
        "changed": 0,
        "unchanged": 2,
    }
    assert rotated.manifest["run_id"] != keyed("2026-06-06", "1" * 16).run_id


def test_diff_lists():
    previous = pd.DataFrame(
        {"account_id": ["a", "b", "c"], "farm_id": ["f1", "f1", "f2"], "action": ["ban"] * 3}
    )
    current = pd.DataFrame(
        {
            "account_id": ["b", "c", "d"],
            "farm_id": ["f1", "f2", "f3"],
            "action": ["ban", "review", "ban"],
        }
    )
    diff = diff_lists(previous, current)
    assert diff[["account_id", "farm_id", "change"]].values.tolist() == [
        ["a", "f1", "dropped"],
        ["b", "f1", "unchanged"],
        ["c", "f2", "changed"],
        ["d", "f3", "new"],
    ]
    assert diff.loc[2, ["action_before", "action_after"]].tolist() == ["ban", "review"]


def test_allowlist_keeps_accounts_and_domains_off_the_list(spark, tmp_path):
    listed = spark.createDataFrame(
        [
            ("a1", "f1", 0.99, "ban"),
            ("a2", "f1", 0.95, "ban"),
            ("a3", "f1", 0.7, "review"),
            ("a4", "f1", 0.99, "ban"),
        ],
        "account_id string, farm_id string, score double, action string",
    )
    signups = spark.createDataFrame(
        [
            ("a1", "ops@BigCorp.com"),
            ("a2", "x9@farm.xyz"),
            ("a3", "y@bigcorp.com"),
            ("a4", "z@farm.xyz"),
        ],
        "account_id string, email string",
    )
    rules = tmp_path / "allow.csv"
    rules.write_text("kind,value,note\nemail_domain,BIGCORP.com,enterprise\naccount,a4,appeal\n")
    kept, allowlisted = apply_allowlist(listed, signups, load_allowlist(spark, rules))
    assert sorted(r["account_id"] for r in kept.collect()) == ["a2"]
    assertDataFrameEqual(
        allowlisted.select("account_id", "action", "allowlist_rule", "allowlist_note"),
        spark.createDataFrame(
            [
                ("a1", "ban", "email_domain:bigcorp.com", "enterprise"),
                ("a3", "review", "email_domain:bigcorp.com", "enterprise"),
                ("a4", "ban", "account:a4", "appeal"),
            ],
            "account_id string, action string, allowlist_rule string, allowlist_note string",
        ),
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,value\naccount,a1\norg,bigcorp\n")
    with pytest.raises(ValueError, match="row\\(s\\) 3 need kind"):
        load_allowlist(spark, bad)
    with pytest.raises(FileNotFoundError, match="bans.allowlist"):
        load_allowlist(spark, tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="email"):
        apply_allowlist(listed, signups.drop("email"), load_allowlist(spark, rules))


def test_evidence_names_binding_entities_by_hash(spark):
    listed = spark.createDataFrame(
        [("a1", "f1", ["high score"]), ("a2", "f1", ["high score"]), ("s1", None, ["solo"])],
        "account_id string, farm_id string, reasons array<string>",
    )
    communities = spark.createDataFrame(
        [("a1", "f1"), ("a2", "f1"), ("a3", "f1"), ("s1", None)],
        "account_id string, farm_id string",
    )
    entities = spark.createDataFrame(
        [
            ("a1", "instrument", "c0ffee0000000001"),
            ("a2", "instrument", "c0ffee0000000001"),
            ("a3", "instrument", "c0ffee0000000001"),
            ("a1", "device", "d00d000000000002"),
            ("a2", "device", "d00d000000000002"),
            ("a3", "device", "d00d000000000003"),
            ("s1", "device", "d00d000000000002"),
        ],
        "account_id string, entity_type string, entity_id string",
    )
    farm_entities = farm_shared_entities(communities, entities)
    # a3's own device and the solo account's share nothing inside a farm
    assert sorted(tuple(r) for r in farm_entities.collect()) == [
        ("f1", account, entity_type, entity_id, members)
        for account, entity_type, entity_id, members in [
            ("a1", "device", "d00d000000000002", 2),
            ("a1", "instrument", "c0ffee0000000001", 3),
            ("a2", "device", "d00d000000000002", 2),
            ("a2", "instrument", "c0ffee0000000001", 3),
            ("a3", "instrument", "c0ffee0000000001", 3),
        ]
    ]
    with_evidence, farms = attach_evidence(listed, farm_entities)
    reasons = {r["account_id"]: r["reasons"] for r in with_evidence.collect()}
    assert reasons["a1"] == [
        "high score",
        "shares instrument c0ffee0000000001 with 2 other accounts of its farm",
    ]
    assert reasons["s1"] == ["solo"]
    assert farms.collect()[0]["binding_entities"] == [
        "instrument:c0ffee0000000001 (3 accounts)",
        "device:d00d000000000002 (2 accounts)",
    ]
    with pytest.raises(ValueError, match="members"):
        attach_evidence(listed, farm_entities.drop("members"))
    with pytest.raises(ValueError, match="entity_id"):
        farm_shared_entities(communities, entities.drop("entity_id"))


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
