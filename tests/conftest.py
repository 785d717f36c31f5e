"""Shared fixtures: one local Spark session for the whole test session.

The session is ``local[2]`` with few shuffle partitions and the UI off; its checkpoint folder
lives under pytest's temporary directory. Farmwatch's state (lake, runs, MLflow, bucket) for
tests that need it goes under ``tmp_path`` via the ``farmwatch_home`` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.config import SparkSettings
from jobs.spark import build_session


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    settings = SparkSettings(
        master="local[2]", shuffle_partitions=2, driver_memory="3g", app_name="farmwatch-tests"
    )
    session = build_session(settings, tmp_path_factory.mktemp("checkpoints"))
    yield session
    session.stop()


@pytest.fixture
def farmwatch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every farmwatch path (lake, runs, MLflow, bucket, Prefect) at a temp folder."""
    home = tmp_path / "farmwatch"
    home.mkdir()
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    return home


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
