"""Small labelled feature tables for model and scoring tests (no Spark session of their own)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from jobs.core.config import ModelSettings
from jobs.features.table import FEATURE_COLUMNS

FEATURE_SCHEMA = T.StructType(
    [
        T.StructField("account_id", T.StringType()),
        T.StructField("farm_id", T.StringType()),
        T.StructField("component_id", T.StringType()),
    ]
    + [T.StructField(c, T.DoubleType()) for c in FEATURE_COLUMNS]
)


SETTINGS = ModelSettings(
    num_boost_round=60,
    early_stopping_rounds=10,
    cv_folds=3,
    candidates=[{}],
    params={
        "objective": "binary",
        "learning_rate": 0.2,
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbose": -1,
    },
)


def world(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Farms share cards with many accounts; everything else is noise."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.2).astype(int)
    feats = pd.DataFrame(rng.random((n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    feats["max_share_instrument"] = np.log1p(np.where(label == 1, rng.integers(5, 30, n), 1))
    feats["group_anomalous_families"] = np.where(label == 1, 5.0, 0.0)
    feats.insert(0, "component_id", [f"c{i % 50}" for i in range(n)])
    feats.insert(0, "farm_id", [f"farm_{i % 7}" if y else None for i, y in enumerate(label)])
    feats.insert(0, "account_id", [f"a{i:04d}" for i in range(n)])
    start = datetime(2026, 5, 1)
    labels = pd.DataFrame(
        {
            "account_id": feats["account_id"],
            "label": label,
            "labelled_at": [start + timedelta(hours=i) for i in range(n)],
            "source": "trust_review",
        }
    )
    return feats, labels


def spark_frames(spark, feats, labels):
    return (
        spark.createDataFrame(feats, FEATURE_SCHEMA),
        spark.createDataFrame(
            labels, "account_id string, label int, labelled_at timestamp, source string"
        ),
    )
