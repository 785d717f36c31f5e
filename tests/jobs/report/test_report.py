from __future__ import annotations

import pytest

from jobs.report.summary import community_quality, missing_columns, render_markdown, render_text


def test_community_quality_counts_campaign_legit_and_lonely_accounts(spark):
    # c1: 3 campaign + 1 legit (campaign-pure); c2: 1 campaign + 2 legit; c3: a campaign loner
    rows = [
        ("a1", "c1", True, True, "op"),
        ("a2", "c1", True, True, "op"),
        ("a3", "c1", True, True, "op"),
        ("a4", "c1", False, False, None),
        ("a5", "c2", True, True, "op"),
        ("a6", "c2", False, False, None),
        ("a7", "c2", False, False, None),
        ("a8", "a8", True, True, "op"),
        ("a9", "a9", False, False, None),
    ]
    communities = spark.createDataFrame(
        [(a, c) for a, c, *_ in rows], "account_id string, community_id string"
    )
    truth = spark.createDataFrame(
        [(a, farm, camp, op) for a, _, farm, camp, op in rows],
        "account_id string, is_farm boolean, is_campaign boolean, operator string",
    )
    quality = community_quality(communities, truth)
    assert quality["campaign_in_campaign_communities"] == pytest.approx(4 / 5)
    assert quality["campaign_standing_alone"] == pytest.approx(1 / 5)
    assert quality["legit_in_campaign_communities"] == pytest.approx(1 / 4)
    assert quality["groups"] == 4
    with pytest.raises(ValueError, match="is_campaign"):
        community_quality(communities, truth.drop("is_campaign"))


def test_printed_summary_names_the_optional_columns_a_table_lacked():
    ingest = {
        "signups": {"read": 10, "missing_columns": ["client_fingerprint", "country"]},
        "payments": {"read": 4, "missing_columns": []},
        "labels": {"read": 2},  # counts a run wrote before the field existed
    }
    missing = missing_columns(ingest)
    assert missing == {"signups": ["client_fingerprint", "country"]}
    summary = {
        "accounts_scored": 10,
        "farm_candidates": 1,
        "farms_with_bans": 1,
        "banned": 3,
        "review": 0,
        "watch": 0,
        "missing_columns": missing,
    }
    assert render_text(summary).splitlines()[-1] == (
        "missing columns : signups.client_fingerprint, signups.country (optional; read as null)"
    )
    assert "| missing_columns.signups | client_fingerprint, country |" in render_markdown(summary)
    summary["missing_columns"] = missing_columns({"labels": {"read": 2}})
    assert not any(line.startswith("missing columns") for line in render_text(summary).splitlines())


def test_drift_alerts_and_the_report_reach_the_text_and_the_artifact():
    drift = {
        "alerts": ["the score distribution drifted: PSI 0.40 > 0.25"],
        "score_psi": 0.4,
        "farms": {"share_lost": 0.0},
        "features": {"n_ips": 0.31, "hour_entropy": 0.02},
    }
    summary = {
        "accounts_scored": 10,
        "farm_candidates": 1,
        "farms_with_bans": 1,
        "banned": 3,
        "review": 0,
        "watch": 0,
        "published": {
            "message": "published",
            "store": "/bucket",
            "report": "banlists/dt=2026-06-06/run=r1/report.html",
            "drift": drift,
        },
    }
    text = render_text(summary)
    assert "run report      : /bucket/banlists/dt=2026-06-06/run=r1/report.html" in text
    assert "DRIFT ALERT     : the score distribution drifted: PSI 0.40 > 0.25" in text
    markdown = render_markdown(summary)
    assert "| drift.top_feature_psi | n_ips 0.31 |" in markdown
    assert "- **drift alert**: the score distribution drifted: PSI 0.40 > 0.25" in markdown
    quiet = {**summary, "published": {**summary["published"], "drift": {**drift, "alerts": []}}}
    assert "DRIFT" not in render_text(quiet) and "drift alert" not in render_markdown(quiet)
