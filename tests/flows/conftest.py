"""One small published world shared by the end-to-end tests that compare ban lists.

``small_world`` generates a 3,000-account ``dual-stack-campaign`` world (IPv4 and IPv6 traffic,
the campaign once over each family) once per test session, as Parquet folders
(``<home>/lake``) and, from the same spec, as Delta tables (``<home>/lake-delta``), trains a
model and runs the nightly flow on the Parquet lake in local mode. Tests that run the same
nightly job elsewhere (Spark Connect on a cluster, an ``s3a://`` lake) compare their ban list
with this one, and the Delta and pandas-written lakes their accepted rows; each writes to its
own runs folder and target. ``prefect_harness`` is the one temporary Prefect server that every
flow run in this process reports to, all session.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness
from pyarrow import fs as pafs

from flows.nightly import nightly_flow
from flows.training import training_flow
from jobs.core.hash_key import KEY_FILE_NAME
from jobs.world.generate import generate
from jobs.world.spec import WorldSpec, build_spec


@dataclass(frozen=True)
class PublishedWorld:
    """The shared world's farmwatch home, its nightly summary and its published list."""

    home: Path
    spec: WorldSpec
    summary: dict
    run_id: str
    banlist: bytes

    def continue_in(self, home: Path, monkeypatch: pytest.MonkeyPatch, stages: bool) -> None:
        """Make ``home`` this world's next chapter: its bucket and key copied (and, with
        ``stages``, its run's finished stages), its champion read in place; the environment
        points farmwatch at ``home``. The lake stays the caller's choice."""
        day = self.summary["run_date"]
        if stages:
            shutil.copytree(self.home / "runs" / f"dt={day}", home / "runs" / f"dt={day}")
        shutil.copytree(self.home / "bucket", home / "bucket")
        shutil.copy(self.home / KEY_FILE_NAME, home / KEY_FILE_NAME)
        monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
        model_db = self.home / "mlflow.db"  # read only
        monkeypatch.setenv("FARMWATCH_MODEL__TRACKING_URI", f"sqlite:///{model_db}")
        monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)

    def lake_on(self, s3_url: str) -> pafs.S3FileSystem:
        """Copy this world's Parquet lake to ``lake/tables`` in a new bucket ``lake`` of the
        S3-protocol server at ``s3_url``; returns that server's file system."""
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket="lake")
        scheme, _, host = s3_url.partition("://")
        s3 = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, region="us-east-1")
        pafs.copy_files(str(self.home / "lake"), "lake/tables", destination_filesystem=s3)
        return s3

    @staticmethod
    def published(target: Path) -> tuple[str, bytes]:
        """Run id and ``banlist.parquet`` bytes of the one run published under ``target``."""
        (run,) = list(target.glob("banlists/dt=*/run=*"))
        return run.name, (run / "banlist.parquet").read_bytes()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow run in this process, all session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def harness_env(prefect_harness) -> dict[str, str]:
    """Environment for a ``farmwatch`` subprocess to report to this session's Prefect server
    (as runs do where a server is deployed) instead of starting a temporary one of its own."""
    return {"PREFECT_API_URL": str(PREFECT_API_URL.value())}


@pytest.fixture(scope="session")
def small_world(
    spark, prefect_harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublishedWorld]:
    home = tmp_path_factory.mktemp("small-world") / "farmwatch"
    spec = build_spec("dual-stack-campaign", 3_000, seed=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FARMWATCH_LAKE__HOME", str(home))
        patch.delenv("FARMWATCH_CONFIG", raising=False)
        generate(spark, spec, home / "lake")
        generate(spark, spec, home / "lake-delta", "delta")
        training_flow()
        summary = nightly_flow()
    assert summary["banned"] > 0
    yield PublishedWorld(home, spec, summary, *PublishedWorld.published(home / "bucket"))
