"""The run report page: self-contained, every section drawn, and no raw PII let through."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from jobs.core.sections import ReportSettings
from jobs.report.html import (
    ReportData,
    ReportPiiError,
    page_data_text,
    pii_found,
    render,
)


def _data(reasons: list[str] | None = None, **changes) -> ReportData:
    banlist = pd.DataFrame(
        {
            "account_id": ["acct-1", "acct-2", "acct-3", "acct-9"],
            "farm_id": ["farm-a", "farm-a", "farm-a", None],
            "score": [0.99, 0.97, 0.7, 0.95],
            "action": ["ban", "ban", "review", "review"],
            "reasons": [
                reasons or ["shares instrument 3fa2c91b0d4e5f61 with 2 other accounts of its farm"],
                ["99% of its 3 accounts keep one identical 10-hour daily schedule"],
                [],
                [],
            ],
        }
    )
    farms = pd.DataFrame(
        {
            "farm_id": ["farm-a"],
            "accounts_listed": [3],
            "accounts_banned": [2],
            "binding_entities": [["instrument:3fa2c91b0d4e5f61 (3 accounts)"]],
            "group_evidence": [["keeps one identical 10-hour daily schedule"]],
        }
    )
    members = pd.DataFrame(
        {
            "farm_id": ["farm-a"] * 4,
            "account_id": ["acct-1", "acct-2", "acct-3", "acct-4"],
            "score": [0.99, 0.97, 0.7, 0.2],
            "farm_size": [40] * 4,
        }
    )
    edges = pd.DataFrame(
        {
            "farm_id": ["farm-a"] * 4,
            "account_id": ["acct-1", "acct-2", "acct-3", "acct-4"],
            "entity_type": ["instrument"] * 3 + ["device"],
            "entity_id": ["3fa2c91b0d4e5f61"] * 3 + ["77aa00bb11cc22dd"],
        }
    )
    quantiles = [i / 100 for i in range(101)]
    values = dict(
        run={
            "run_date": "2026-06-05",
            "run_id": "abc123def456",
            "status": "published",
            "message": "within limits",
            "model_version": "1",
            "accounts_scored": 40,
            "farm_candidates": 1,
        },
        banlist=banlist,
        farms=farms,
        members=members,
        edges=edges,
        diff_summary={"previous_run": None, "accounts": {"new": 4}, "farms_with_bans": {"new": 1}},
        ingest={"signups": {"read": 40, "accepted": 39, "quarantined": 1, "out_of_window": 0}},
        profile={"score": quantiles, "features": {}},
        trailing=[{"run_id": "older", "run_date": "2026-06-04", "score": quantiles}],
        drift={
            "compared_runs": ["older"],
            "features": {"requests_per_day": 0.4, "hour_entropy": 0.01},
            "score_psi": 0.02,
            "farms": {"banned_before": 2, "vanished": 1, "shrank": 0, "share_lost": 0.5},
            "alerts": ["1 of the 2 farms banned last night vanished"],
        },
        farm_loss=pd.DataFrame(
            {
                "farm_id": ["farm-z"],
                "banned_before": [5],
                "still_banned": [0],
                "status": ["vanished"],
            }
        ),
        bans_by_age=pd.DataFrame({"band": ["< 7 days"], "farms": [1], "banned": [2]}),
        settings=ReportSettings(),
    )
    values.update(changes)
    return ReportData(**values)


def test_the_page_is_self_contained_and_shows_every_section():
    page = render(_data()).decode()
    assert page.count(get_plotlyjs()) == 1  # plotly.js inlined once
    # nothing to fetch: no external script or style, no URL outside plotly.js's own source
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://", page_data_text(page))
    for heading in (
        "Summary",
        "Actions by farm",
        "Score distribution against the last runs",
        "Farms",
        "Changes against the list in force",
        "Quarantine per input table",
        "Drift and adversary watch",
    ):
        assert f"<h2>{heading}</h2>" in page
    for div in ("farm-graph-0", "actions-by-farm", "score-distribution", "feature-drift"):
        assert f'id="{div}"' in page
    assert "showing 4 of its 40 members" in page
    assert "instrument:3fa2c91b0d4e5f61" in page
    assert "keeps one identical 10-hour daily schedule" in page
    assert "Drift alert" in page and "1 of the 2 farms banned last night vanished" in page


def test_a_quiet_run_says_no_alert():
    quiet = _data(drift={"compared_runs": [], "features": {}, "score_psi": 0.0, "alerts": []})
    page = render(quiet).decode()
    assert "No drift alert (compared with 0 published run(s))" in page
    assert "Drift alert" not in page


@pytest.mark.parametrize(
    "leak",
    [
        "seen from 203.0.113.7 at signup",
        "mail from jane.doe+x@example.co.uk",
        "seen from 2001:0db8:0000:0000:0000:ff00:0042:8329",
        "seen from 2001:db8::1",
    ],
)
def test_a_reason_with_raw_pii_is_refused(leak):
    assert pii_found(leak)
    with pytest.raises(ReportPiiError, match="raw personal data"):
        render(_data(reasons=[leak]))


def test_hashes_scores_and_dates_are_not_mistaken_for_pii():
    text = (
        "instrument:3fa2c91b0d4e5f61 (211 accounts) score 0.9731 run 2026-06-05 "
        "version 1.2.3 at 10:30 ratio 0.5:1 abc123def456"
    )
    assert pii_found(text) == []
    assert pii_found(page_data_text(render(_data()).decode())) == []
