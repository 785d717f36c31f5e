"""End to end: the demo's world -> training flow -> nightly flow -> ban list on disk.

Runs the real Prefect flows (under ``prefect_test_harness``), real Spark jobs, real LightGBM
models registered in a real (SQLite) MLflow registry, and the real publisher on the world
``make demo`` builds (its size and seed): the campaign must be found with no false ban, and the
summary must print the lines the README quotes as the demo's output, and the list's hashes are
made with the key the home generated. Then the same date is published to an S3-protocol server
(moto, a separate process) through the same code: refused without a configured key, then, with
the home's key configured, it must hold the same list; then an input table is broken and the
failed run must leave the previous ban list in force.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import boto3
import pandas as pd
import pytest

from flows.cli import DEMO_ACCOUNTS, DEMO_SEED
from flows.nightly import nightly_flow
from flows.training import training_flow
from jobs.banlists.reader import load_latest
from jobs.core.config import PublishSettings
from jobs.core.hash_key import KEY_FILE_NAME, EntityHashKeyError, key_id
from jobs.core.store import S3Store
from jobs.ingest.validate import InputTableError
from jobs.report.summary import render_text
from jobs.world.generate import generate
from jobs.world.spec import build_spec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}")
IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


def readme_demo_lines() -> list[str]:
    """The summary lines of the README's sample ``make demo`` output (scores, bans, truth)."""
    readme = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    block = re.findall(r"```\n(.*?)```", readme, re.S)[1]
    keep = ("accounts scored", "farm candidates", "accounts banned", "vs ground truth")
    lines = [line for line in block.splitlines() if line.startswith(keep)]
    assert len(lines) == len(keep), block
    return lines


def test_nightly_run_finds_the_campaign_and_publishes(
    spark, farmwatch_home: Path, prefect_harness, s3_server, monkeypatch
):
    spec = build_spec("distillation-campaign", DEMO_ACCOUNTS, seed=DEMO_SEED)
    generate(spark, spec, farmwatch_home / "lake")

    trained = training_flow()
    assert trained["version"] == "1"
    assert trained["promoted"] is True
    assert trained["metrics"]["auroc"] > 0.95
    assert trained["training"]["combined"]["grouping"] == "farm"

    summary = nightly_flow()
    assert summary["run_date"] == spec.end_date
    assert summary["accounts_scored"] == DEMO_ACCOUNTS
    for table, counts in summary["ingest"].items():
        assert counts["read"] == counts["accepted"] + counts["quarantined"], table
    truth = summary["ground_truth"]
    assert truth["campaign_recall"] >= 0.9, truth
    assert truth["false_bans"] == 0, truth
    assert truth["precision"] >= 0.995, truth
    # the README's sample output is what this run prints
    printed = render_text(summary).splitlines()
    for line in readme_demo_lines():
        assert line in printed, (line, printed)

    bucket = farmwatch_home / "bucket" / "banlists"
    latest = json.loads((bucket / "latest.json").read_text())
    run_folder = farmwatch_home / "bucket" / latest["prefix"]
    assert run_folder.parent.name == f"dt={spec.end_date}"
    assert {p.name for p in run_folder.iterdir()} == {
        "banlist.parquet",
        "banlist.csv",
        "farms.parquet",
        "diff.parquet",
        "allowlisted.parquet",
        "report.html",
        "profile.json",
        "farm_registry.parquet",
        "farm_members.parquet",
        "farm_history.parquet",
        "manifest.json",
        "status.json",
    }
    assert summary["published"]["status"] == "published"
    banlist = pd.read_parquet(run_folder / "banlist.parquet")
    assert list(banlist.columns) == [
        "account_id",
        "farm_id",
        "score",
        "action",
        "reasons",
        "model_version",
        "stable_farm_id",
    ]
    banned = banlist[banlist["action"] == "ban"]
    assert len(banned) == summary["banned"] > 0
    assert banned["farm_id"].notna().all()
    assert all(len(r) > 0 for r in banned["reasons"])
    text = (run_folder / "banlist.csv").read_text()
    assert not EMAIL.search(text), "raw email in the published ban list"
    assert not IPV4.search(text), "raw IP in the published ban list"
    farms = pd.read_parquet(run_folder / "farms.parquet")
    top = farms.iloc[0]
    assert top["accounts_banned"] > 0 and len(top["binding_entities"]) > 0
    assert any("of its farm" in r for r in banned["reasons"].iloc[0])
    # The hashes were made with the key this home generated, not one written in the code.
    home_key = (farmwatch_home / KEY_FILE_NAME).read_text().strip()
    manifest = json.loads((run_folder / "manifest.json").read_text())
    assert manifest["entity_hash_key_id"] == key_id(home_key)

    # The same date published to S3 through the same code, with an allowlist: the same list
    # minus the allowlisted accounts, which are reported separately.
    signups = pd.read_parquet(farmwatch_home / "lake" / "signups", columns=["account_id", "email"])
    emails = dict(zip(signups["account_id"], signups["email"], strict=True))
    first, second = banned["account_id"].iloc[0], banned["account_id"].iloc[-1]
    domain = emails[second].split("@")[1].upper()
    allowlist = farmwatch_home / "allowlist.csv"
    allowlist.write_text(f"kind,value,note\naccount,{first},appeal\nemail_domain,{domain},org\n")
    expected = {first} | {
        a for a in banlist["account_id"] if emails[a].split("@")[1] == domain.lower()
    }
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket="trust-banlists")
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", "s3://trust-banlists")
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("FARMWATCH_BANS__ALLOWLIST", str(allowlist))
    # A bucket needs a key its readers can have: without one the run stops before any stage.
    with pytest.raises(EntityHashKeyError, match="FARMWATCH_PUBLISH__ENTITY_HASH_KEY"):
        nightly_flow()
    # Configured explicitly (here: the home's key, so the reasons' hashes match the folder's).
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY", home_key)
    on_s3 = nightly_flow()
    assert on_s3["published"]["store"] == "s3://trust-banlists"
    # another target and an allowlist change what is published, not the stages before it
    assert on_s3["resumed_stages"] == ["ingest", "graph", "communities", "features", "score"]
    manifest, from_s3 = load_latest("s3://trust-banlists/banlists", endpoint_url=s3_server.url)
    assert manifest["allowlisted"]["accounts"] == len(expected)
    assert manifest["entity_hash_key_id"] == key_id(home_key)
    pd.testing.assert_frame_equal(
        from_s3, banlist[~banlist["account_id"].isin(expected)].reset_index(drop=True)
    )
    store = S3Store("trust-banlists", "", PublishSettings(endpoint_url=s3_server.url))
    reported = pd.read_parquet(
        io.BytesIO(store.get(f"{on_s3['published']['prefix']}/allowlisted.parquet"))
    )
    assert set(reported["account_id"]) == expected
    monkeypatch.delenv("FARMWATCH_BANS__ALLOWLIST")
    monkeypatch.delenv("FARMWATCH_PUBLISH__TARGET")
    monkeypatch.delenv("FARMWATCH_PUBLISH__ENDPOINT_URL")
    monkeypatch.delenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY")

    # A broken input makes the next run fail with a clear error and leaves latest.json alone.
    shutil.rmtree(farmwatch_home / "lake" / "payments")
    before = (bucket / "latest.json").read_bytes()
    with pytest.raises(InputTableError, match="payments"):
        nightly_flow(run_date="2026-06-06")
    assert (bucket / "latest.json").read_bytes() == before
