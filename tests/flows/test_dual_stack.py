"""Mixed IPv4 and IPv6 traffic end to end, on the shared small world (``dual-stack-campaign``).

The world sends 45% of sessions over IPv6 (5% of the IPv4 ones logged as IPv4-mapped IPv6) and
runs the campaign twice: ``op_distill`` over residential IPv4 proxies and its twin
``op_distill6``, same knobs, rotating through IPv6 /64s (every session a new address). The
IPv6 operator must be caught as well as its IPv4 twin, and no legitimate account, mobile IPv6
users and CGNAT users among them, may reach the ban list.
"""

from __future__ import annotations

import io
import ipaddress

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def outcome(small_world):
    lake = small_world.home / "lake"
    truth = pd.read_parquet(lake / "ground_truth")
    listed = pd.read_parquet(io.BytesIO(small_world.banlist))
    events = pd.read_parquet(lake / "ip_events")
    truth = truth.merge(listed[["account_id", "action"]], on="account_id", how="left")
    return truth, events


def test_the_world_mixes_both_families_and_the_twin_rotates_through_64s(outcome):
    truth, events = outcome
    events = events.merge(truth[["account_id", "operator"]], on="account_id")
    ipv6 = events["ip"].str.contains(":") & ~events["ip"].str.startswith("::ffff:")
    assert 0.3 < ipv6.mean() < 0.6
    assert events["ip"].str.startswith("::ffff:").any()
    twin = events[events["operator"] == "op_distill6"]["ip"]
    assert twin.str.contains(":").all()
    assert twin.nunique() == len(twin)  # no address twice: rotation
    prefixes = twin.map(lambda ip: ipaddress.IPv6Network(f"{ip}/64", strict=False))
    assert prefixes.nunique() < len(twin) / 3  # yet the /64s repeat


def test_ingest_stores_each_address_in_one_spelling(small_world):
    run_date = small_world.summary["run_date"]
    (accepted,) = small_world.home.glob(f"runs/dt={run_date}/**/accepted/ip_events")
    ips = pd.read_parquet(accepted)["ip"]
    assert not ips.str.startswith("::ffff:").any()
    assert (ips.map(lambda ip: str(ipaddress.ip_address(ip))) == ips).all()


def test_the_ipv6_operator_is_caught_as_well_as_its_ipv4_twin(outcome):
    truth, _ = outcome
    banned = truth["action"] == "ban"
    share = {op: banned[truth["operator"] == op].mean() for op in ("op_distill", "op_distill6")}
    assert share["op_distill"] >= 0.9, share
    assert share["op_distill6"] >= share["op_distill"] - 0.02, share


def test_no_legitimate_account_is_banned_mobile_ipv6_and_cgnat_included(outcome):
    truth, events = outcome
    legit_banned = truth[(truth["action"] == "ban") & ~truth["is_farm"]]
    assert legit_banned.empty, legit_banned[["account_id", "segment"]]
    mobile_v6 = events[(events["asn_type"] == "mobile") & events["ip"].str.contains("::|:.*:")]
    mobile_v6 = mobile_v6[~mobile_v6["ip"].str.startswith("::ffff:")]
    users = truth[truth["account_id"].isin(mobile_v6["account_id"]) & ~truth["is_farm"]]
    assert len(users) > 100 and (users["segment"] == "cgnat").any()
    assert not (users["action"] == "ban").any()
