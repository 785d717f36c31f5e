"""Decisions become labels: the precedence rule, the fingerprint counts, and a retrained model.

The retraining test plants an office: 40 legitimate accounts that share a company card and
look like a farm as a group (the pattern every labelled farm has), but none of them uses a
hosting or VPN address. Unlabelled, the model scores them as a farm. Reviewers look at 30 of
them and record ``not-fraud``; the model retrained on labels with those decisions scores the
reviewed accounts, and the 10 nobody reviewed, low.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from jobs.banlists.decisions import decision_labels
from jobs.core.config import BanSettings
from models.farm_model import build_training_set, train
from models.labels import with_decisions
from tests.model_tables import SETTINGS, spark_frames, world

BANS = BanSettings()


def decided(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["account_id", "decision", "decided_at"])
    return decision_labels(frame)


def test_the_latest_label_wins_and_a_decision_wins_a_tie(spark):
    labels = spark.createDataFrame(
        [
            ("a1", 1, datetime(2026, 5, 1), "chargeback"),  # cleared by a reviewer later
            ("a2", 0, datetime(2026, 5, 3), "verified_customer"),  # verified after the review
            ("a3", 1, datetime(2026, 5, 2), "abuse_report"),  # same instant as the appeal
            ("a4", 0, datetime(2026, 5, 2), "trust_review"),  # no decision
        ],
        "account_id string, label int, labelled_at timestamp, source string",
    )
    decisions = decided(
        [
            ("a1", "not-fraud", "2026-05-02T00:00:00+00:00"),
            ("a2", "confirmed-fraud", "2026-05-02T00:00:00+00:00"),
            ("a3", "appeal-upheld", "2026-05-02T00:00:00+00:00"),
            ("a5", "appeal-denied", "2026-05-04T00:00:00+00:00"),  # only a decision
        ]
    )
    merged, fingerprint = with_decisions(labels, decisions)
    got = {r["account_id"]: (r["label"], r["source"]) for r in merged.collect()}
    assert got == {
        "a1": (0, "reviewer"),
        "a2": (0, "verified_customer"),
        "a3": (0, "appeal"),
        "a4": (0, "trust_review"),
        "a5": (1, "appeal"),
    }
    assert fingerprint == {
        "decision_rows": 4,
        "accounts_labelled_by_decision": 3,
        "accounts_relabelled_by_decision": 2,
        "by_source": {"reviewer": 2, "appeal": 2},
    }
    with pytest.raises(ValueError, match="labelled_at"):
        with_decisions(labels.drop("labelled_at"), decisions)


def office_world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    feats, labels = world(600, seed=1)
    office = feats.sample(40, random_state=3).copy()
    office["account_id"] = [f"o{i:03d}" for i in range(40)]
    office["farm_id"] = "o000"
    office["max_share_instrument"] = np.log1p(20)  # one company card, like a farm's
    office["group_anomalous_families"] = 5.0  # the group is as unlike random groups as a farm
    office["hosting_vpn_share"] = 0.0  # but every login comes from the office line
    return pd.concat([feats, office], ignore_index=True), labels, office


def test_a_model_retrained_after_reviewers_cleared_a_false_positive_scores_it_low(spark):
    feats, labels, office = office_world()
    features, table = spark_frames(spark, feats, labels)
    before = train(build_training_set(features, table, 0.3), SETTINGS)
    _, scores_before = before.predict(office)
    assert scores_before.min() >= BANS.ban_threshold  # the office would be banned

    reviewed = [(a, "not-fraud", "2026-04-30T12:00:00+00:00") for a in office["account_id"][:30]]
    labels_after, fingerprint = with_decisions(table, decided(reviewed))
    training = build_training_set(features, labels_after, 0.3)
    assert fingerprint["accounts_labelled_by_decision"] == 30
    assert set(office["account_id"][:30]) <= set(training.train["account_id"])
    after = train(training, SETTINGS)
    _, scores_after = after.predict(office)
    assert scores_after[:30].max() < BANS.watch_threshold  # the reviewed accounts
    assert scores_after[30:].max() < BANS.watch_threshold  # and the ones nobody reviewed
