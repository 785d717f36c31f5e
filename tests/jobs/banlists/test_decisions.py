"""Per-account decisions and the audit log, on a folder and on a real S3-protocol server.

Covers: a decision and a bulk CSV recorded as append-only objects (a bad CSV writes nothing),
concurrent ``decide`` calls losing nothing (threads against the folder and moto's server), an
upheld appeal keeping an account off the next lists (reported in ``allowlisted.parquet`` with
the decision's reference, shown by the diff) until a later ``confirmed-fraud``, every action on
a list or an account in the audit log, and the ``decide``, ``audit`` and ``farm --history``
commands.
"""

from __future__ import annotations

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from flows.cli import main as farmwatch
from jobs.banlists.audit import read_audit
from jobs.banlists.decisions import (
    decision_labels,
    kept_off,
    read_decisions,
    record_decision,
    record_decisions_csv,
)
from jobs.banlists.publish import RunContext, publish
from jobs.banlists.runs import read_run, release, revoke
from jobs.core.config import BanSettings, PublishSettings
from jobs.core.store import LocalStore, S3Store

MODEL = {"name": "farmwatch-farm-model", "version": "5"}
BANS = BanSettings(breaker_min_history=2, breaker_multiple=2.0, breaker_floor=3)
BUCKET = "trust-banlists"


def banlist(accounts: list[str], farm: str = "a00000") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": accounts,
            "farm_id": [farm] * len(accounts),
            "score": [0.99] * len(accounts),
            "action": ["ban"] * len(accounts),
            "reasons": [["shares instrument 3fa2c91b0d4e5f61 with 4 other accounts"]]
            * len(accounts),
            "model_version": ["5"] * len(accounts),
        }
    )


def context(run_date: str) -> RunContext:
    return RunContext(run_date, MODEL, "cfg", "0.1.0+gtest", {"rows": 1})


ACCOUNTS = [f"a{i:05d}" for i in range(6)]


@pytest.fixture
def s3_store(s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=BUCKET)
    return S3Store(BUCKET, "prod", PublishSettings(endpoint_url=s3_server.url))


def appeal_round_trip(store) -> None:
    """Appeal one account between nights; it stays off until a reviewer confirms fraud."""
    first = publish(banlist(ACCOUNTS), store, "banlists", context("2026-06-04"), BANS)
    assert first.status == "published"
    upheld = record_decision(
        store, "banlists", "a00002", "appeal-upheld", "verified customer, shared office IP", "ana"
    )
    second = publish(banlist(ACCOUNTS), store, "banlists", context("2026-06-05"), BANS)
    _, listed = read_run(store, second.run_prefix)
    assert "a00002" not in set(listed["account_id"]) and len(listed) == 5
    _, allowlisted = read_run(store, second.run_prefix, "allowlisted.parquet")
    assert allowlisted[["account_id", "action", "allowlist_rule"]].values.tolist() == [
        ["a00002", "ban", f"decision:{upheld['record_id']}"]
    ]
    _, diff = read_run(store, second.run_prefix, "diff.parquet")
    assert diff.loc[diff["change"] != "unchanged", ["account_id", "change"]].values.tolist() == [
        ["a00002", "dropped"]
    ]
    third = publish(banlist(ACCOUNTS), store, "banlists", context("2026-06-06"), BANS)
    _, listed = read_run(store, third.run_prefix)
    assert "a00002" not in set(listed["account_id"])  # every later list, not just the next
    record_decision(store, "banlists", "a00002", "appeal-denied", "second appeal", "bo")
    record_decision(store, "banlists", "a00002", "confirmed-fraud", "card testing seen", "cy")
    fourth = publish(banlist(ACCOUNTS), store, "banlists", context("2026-06-07"), BANS)
    _, listed = read_run(store, fourth.run_prefix)
    assert "a00002" in set(listed["account_id"])
    revoke(store, "banlists", fourth.manifest["run_id"], "wrong model", by="dee")
    log = read_audit(store, "banlists")
    assert log[["action", "by"]].values.tolist() == [
        ["publish", "nightly"],
        ["decide", "ana"],
        ["publish", "nightly"],
        ["publish", "nightly"],
        ["decide", "bo"],
        ["decide", "cy"],
        ["publish", "nightly"],
        ["revoke", "dee"],
    ]
    assert log["record_id"].is_monotonic_increasing


def test_an_upheld_appeal_stays_off_every_later_list_on_a_folder(tmp_path):
    appeal_round_trip(LocalStore(tmp_path))


def test_an_upheld_appeal_stays_off_every_later_list_on_s3(s3_store):
    appeal_round_trip(s3_store)


def concurrent_decisions(make_store) -> None:
    def decide(worker: int) -> list[str]:
        store = make_store()  # one client per thread, as separate processes would have
        return [
            record_decision(
                store, "banlists", f"a{worker:02d}{i:03d}", "not-fraud", "bulk review", f"r{worker}"
            )["record_id"]
            for i in range(10)
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [i for batch in pool.map(decide, range(8)) for i in batch]
    decisions = read_decisions(make_store(), "banlists")
    assert len(ids) == len(set(ids)) == 80
    assert sorted(decisions["record_id"]) == sorted(ids)
    assert len(kept_off(decisions)) == 80
    assert (read_audit(make_store(), "banlists")["action"] == "decide").sum() == 80


def test_concurrent_decide_calls_lose_nothing_on_a_folder(tmp_path):
    concurrent_decisions(lambda: LocalStore(tmp_path))


def test_concurrent_decide_calls_lose_nothing_on_s3(s3_server, s3_store):
    concurrent_decisions(
        lambda: S3Store(BUCKET, "prod", PublishSettings(endpoint_url=s3_server.url))
    )


def test_bulk_csv_is_all_or_nothing_and_decisions_become_labels(tmp_path):
    store = LocalStore(tmp_path / "bucket")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "account_id,decision,reason\na00001,not-fraud,office\na00002,maybe,unsure\n"
        "a00003,confirmed-fraud,\n"
    )
    with pytest.raises(ValueError, match=r"line 3: unknown decision 'maybe'.*line 4: .*reason"):
        record_decisions_csv(store, "banlists", bad)
    assert read_decisions(store, "banlists").empty
    good = tmp_path / "export.csv"
    good.write_text(
        "account_id,decision,reason,by,decided_at\n"
        "a00001,not-fraud,office NAT,eve,2026-06-03T10:00:00Z\n"
        "a00002,confirmed-fraud,template prompts,,2026-06-03T11:00:00+00:00\n"
        "a00003,appeal-upheld,id verified,eve,\n"
    )
    records = record_decisions_csv(store, "banlists", good, by="queue-7")
    assert [r["by"] for r in records] == ["eve", "queue-7", "eve"]
    assert {r["source"] for r in records} == {"csv:export.csv"}
    labels = decision_labels(read_decisions(store, "banlists"))
    assert labels[["account_id", "label", "source"]].values.tolist() == [
        ["a00001", 0, "reviewer"],
        ["a00002", 1, "reviewer"],
        ["a00003", 0, "appeal"],
    ]
    assert str(labels["labelled_at"].iloc[0]) == "2026-06-03 10:00:00+00:00"
    cut = decision_labels(read_decisions(store, "banlists"), pd.Timestamp("2026-06-03T10:30Z"))
    assert cut["account_id"].tolist() == ["a00001"]
    with pytest.raises(ValueError, match="unknown decision"):
        record_decision(store, "banlists", "a1", "banned", "x")
    with pytest.raises(ValueError, match="time zone"):
        record_decision(store, "banlists", "a1", "not-fraud", "x", decided_at="2026-06-03T10:00")


def test_a_held_run_and_its_release_are_audited(tmp_path):
    store = LocalStore(tmp_path)
    for day, n in (("2026-06-01", 5), ("2026-06-02", 5), ("2026-06-03", 5)):
        publish(banlist([f"a{i:05d}" for i in range(n)]), store, "banlists", context(day), BANS)
    held = publish(
        banlist([f"a{i:05d}" for i in range(40)]), store, "banlists", context("2026-06-04"), BANS
    )
    assert held.status == "held"
    release(store, "banlists", held.manifest["run_id"], "campaign confirmed", by="lead")
    log = read_audit(store, "banlists")
    assert log["action"].tolist()[-2:] == ["hold", "release"]
    assert log.iloc[-1][["by", "run_id", "reason"]].tolist() == [
        "lead",
        held.manifest["run_id"],
        "campaign confirmed",
    ]


def test_trust_commands_decide_audit_and_farm_history(farmwatch_home, monkeypatch, capsys):
    monkeypatch.setenv("FARMWATCH_ACTOR", "analyst-1")
    store = LocalStore(farmwatch_home / "bucket")
    publish(banlist(ACCOUNTS[:4]), store, "banlists", context("2026-06-04"), BANS)
    grown = [*ACCOUNTS[1:], "a00100", "a00101"]  # a00000 left: tomorrow's candidate id differs
    publish(banlist(grown, farm="a00001"), store, "banlists", context("2026-06-05"), BANS)
    capsys.readouterr()
    assert farmwatch(["banlist", "decide", "a00003", "--decision", "not-fraud",
                      "--reason", "family plan"]) == 0  # fmt: skip
    assert "a00003  not-fraud  by analyst-1" in capsys.readouterr().out
    assert farmwatch(["banlist", "decide", "a00003", "--decision", "not-fraud"]) == 1
    assert "needs ACCOUNT, --decision and --reason" in capsys.readouterr().err
    assert farmwatch(["banlist", "audit", "--account", "a00003"]) == 0
    out = capsys.readouterr().out
    assert "decide   account a00003 not-fraud  by analyst-1: family plan" in out
    assert "1 entry" in out
    assert farmwatch(["banlist", "farm", "a00001", "--history"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("F20260604-a00000  active  size 7 (peak 7)  first seen 2026-06-04")
    assert re.search(r"2026-06-04 +F20260604-a00000 +new +- +- +4 +a00000\n", out)
    assert re.search(r"2026-06-05 +F20260604-a00000 +grown +- +4 +7 +a00001\n", out)
    assert farmwatch(["banlist", "show", "--farm", "F20260604-a00000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ *a00101 +a00001 ", out, re.M)  # tonight's members, by stable id
    assert not re.search(r"^ *a00000 ", out, re.M)  # night one's smallest member has left
    manifest = json.loads(
        store.get(
            next(k for k in store.list("banlists/dt=2026-06-05/") if k.endswith("manifest.json"))
        )
    )
    assert {"farm_registry.parquet", "farm_members.parquet", "farm_history.parquet"} <= set(
        manifest["files"]
    )
    farms = pd.read_parquet(
        io.BytesIO(store.get(manifest_prefix(store, "2026-06-05") + "/farms.parquet"))
    )
    assert farms[["farm_id", "stable_farm_id", "first_seen", "last_event"]].values.tolist() == [
        ["a00001", "F20260604-a00000", "2026-06-04", "grown"]
    ]


def manifest_prefix(store, day: str) -> str:
    key = next(k for k in store.list(f"banlists/dt={day}/") if k.endswith("manifest.json"))
    return key.rsplit("/", 1)[0]
