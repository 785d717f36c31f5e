from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from jobs.core.contracts import CONTRACTS
from jobs.world.generate import generate
from jobs.world.spec import build_spec

ACCOUNTS = 3_000


def part_hashes(lake: Path) -> dict[str, list[str]]:
    """sha256 of each part file per table, in part-number order (names carry a random UUID)."""
    out = {}
    for table in CONTRACTS:
        parts = sorted(
            (lake / table).glob("part-*.parquet"),
            key=lambda p: int(re.match(r"part-(\d+)", p.name).group(1)),
        )
        out[table] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in parts]
    return out


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("world") / "lake"
    spec = build_spec("distillation-campaign", ACCOUNTS, seed=5)
    counts = generate(spark, spec, lake)
    return spec, lake, counts


def read(lake: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(lake / table)


def test_same_seed_same_bytes_other_seed_other_data(spark, world, tmp_path):
    spec, lake, _ = world
    again = tmp_path / "again"
    generate(spark, spec, again)
    assert part_hashes(again) == part_hashes(lake)
    assert (again / "_world.json").read_text() == (lake / "_world.json").read_text()
    other = tmp_path / "other"
    generate(spark, build_spec("distillation-campaign", ACCOUNTS, seed=6), other)
    assert part_hashes(other)["signups"] != part_hashes(lake)["signups"]


def test_tables_follow_their_contracts(spark, world):
    _, lake, counts = world
    for name, contract in CONTRACTS.items():
        schema = spark.read.parquet(str(lake / name)).schema
        assert [(f.name, f.dataType) for f in schema] == [
            (f.name, f.dataType) for f in contract.schema
        ], name
    assert counts["signups"] == counts["ground_truth"] == ACCOUNTS
    meta = json.loads((lake / "_world.json").read_text())
    assert meta["spec"]["seed"] == 5 and meta["counts"] == counts


def test_population_has_every_confounder_and_operator(world):
    spec, lake, _ = world
    truth = read(lake, "ground_truth")
    assert set(truth["segment"]) == {
        "individual",
        "family",
        "office",
        "university",
        "cgnat",
        "vpn",
        "power_user",
        "spike",
        "farm",
    }
    sizes = truth[truth["is_farm"]].groupby("operator").size().to_dict()
    assert sizes == spec.operator_sizes()
    assert truth.loc[truth["is_campaign"], "operator"].unique().tolist() == ["op_distill"]
    assert 0 < truth.loc[truth["is_farm"], "is_sleeper"].mean() < 0.3


def test_farm_tactics_and_legitimate_confounders(world):
    _, lake, _ = world
    truth = read(lake, "ground_truth").set_index("account_id")
    usage = read(lake, "api_usage").dropna(subset=["account_id"]).join(truth, on="account_id")
    usage = usage[usage["requests"] > 0]
    per_day = usage.groupby("account_id")["requests"].mean()
    campaign = truth.index[truth["is_campaign"]]
    power = truth.index[truth["segment"] == "power_user"]
    assert per_day.reindex(campaign).dropna().mean() < 50  # under per-account thresholds
    assert per_day.reindex(power).dropna().mean() > 300  # legitimate heavy automation
    events = read(lake, "ip_events").dropna(subset=["account_id"]).join(truth, on="account_id")
    cgnat = events[events["asn_type"] == "mobile"].groupby("ip")["account_id"].nunique()
    assert cgnat.max() >= 100  # strangers behind one carrier address
    farm_ips = set(events.loc[events["is_farm"], "ip"])
    legit_ips = set(events.loc[~events["is_farm"] & (events["segment"] == "individual"), "ip"])
    assert farm_ips & legit_ips  # residential proxies are real households' addresses
    pays = read(lake, "payments").dropna(subset=["account_id"]).join(truth, on="account_id")
    per_card = pays.groupby(["is_farm", "instrument_fingerprint"])["account_id"].nunique()
    assert per_card.loc[True].mean() > 3
    assert per_card.loc[False].mean() < 1.2
    templates = usage[usage["is_campaign"]]["prompt_signature"].value_counts(normalize=True)
    assert templates.iloc[:40].sum() > 0.7  # templated prompts
    sleepers = truth.index[truth["is_sleeper"]]
    sleeper_days = pd.to_datetime(usage[usage["account_id"].isin(sleepers)]["usage_date"])
    assert sleeper_days.min() >= pd.Timestamp("2026-06-01")


def test_seeded_malformed_rows_exist(world):
    _, lake, _ = world
    usage = read(lake, "api_usage")
    assert usage["account_id"].isna().any() or (usage["requests"] < 0).any()


def test_spec_validation_and_campaign_scaling():
    with pytest.raises(ValueError, match="unknown scenario"):
        build_spec("nope", 10_000, 1)
    with pytest.raises(ValueError, match="unknown world knob"):
        build_spec("distillation-campaign", 10_000, 1, {"population": {"bogus": 1}})
    with pytest.raises(ValueError, match="at least 1,000"):
        build_spec("distillation-campaign", 500, 1)
    sizes = {
        n: build_spec("distillation-campaign", n, 1).operator_sizes()["op_distill"]
        for n in (20_000, 1_000_000, 2_000_000)
    }
    assert sizes == {20_000: 500, 1_000_000: 25_000, 2_000_000: 25_000}
    assert "op_distill" not in build_spec("mixed-operators", 20_000, 1).operator_sizes()
