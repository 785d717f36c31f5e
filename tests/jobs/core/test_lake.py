"""The lake on object storage: the path API against a real S3-protocol server (moto).

These tests cover what runs through pyarrow (markers, reports, ``_world.json``, the input
digest), the IAM policy, and that a session started without ``spark.packages = ["s3a"]`` (the
shared test session, like ``make demo``'s) turns Spark's refusal into an error naming the table
and the package. Spark reading and writing ``s3a://`` with hadoop-aws is exercised by a whole
nightly run in ``tests/flows/test_lake_formats.py``. One local test covers a table written in
timed parts (``persist_parts``).
"""

from __future__ import annotations

import boto3
import pytest

from flows.ledger import StageLedger, input_digest
from jobs.core.config import LakeSettings, Settings
from jobs.core.contracts import INPUT_TABLES
from jobs.core.lake import ObjectPath, lake_location, persist_parts
from jobs.core.timing import part_clock
from jobs.ingest.validate import InputTableError, read_table


@pytest.fixture
def lake_bucket(s3_server):
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket="lake")
    return s3_server


def test_local_locations_stay_paths(tmp_path):
    assert lake_location(tmp_path / "lake") == (tmp_path / "lake").resolve()
    settings = LakeSettings(home=tmp_path)
    assert settings.lake_path == (tmp_path / "lake").resolve()
    with pytest.raises(ValueError, match="names no bucket"):
        lake_location("s3://")


def test_settings_give_an_s3a_uri_for_spark(monkeypatch, lake_bucket):
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", "s3://lake/tables")
    monkeypatch.setenv("FARMWATCH_LAKE__RUNS", "s3a://lake/runs")
    monkeypatch.setenv("FARMWATCH_LAKE__ENDPOINT_URL", lake_bucket.url)
    lake = Settings().lake
    assert isinstance(lake.lake_path, ObjectPath)
    assert str(lake.lake_path / "signups") == "s3a://lake/tables/signups"
    assert str(lake.runs_path) == "s3a://lake/runs"


def test_object_paths_round_trip_and_digest(lake_bucket):
    root = lake_location("s3://lake/base", lake_bucket.url)
    world = root / "_world.json"
    assert not world.exists() and not root.is_dir()
    world.write_text('{"end_date": "2026-06-30"}')
    (root / "signups" / "part-0.parquet").write_bytes(b"PAR1")
    assert world.is_file() and root.is_dir() and (root / "signups").is_dir()
    assert world.read_text() == '{"end_date": "2026-06-30"}'
    names = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert names == ["_world.json", "signups/part-0.parquet"]
    before = input_digest(root)
    (root / "signups" / "part-0.parquet").write_bytes(b"PAR1 changed")
    assert input_digest(root) != before
    with pytest.raises(FileNotFoundError):
        (root / "missing.json").read_bytes()


def test_stage_ledger_on_object_storage(lake_bucket):
    run_dir = lake_location("s3://lake/runs/dt=2026-06-30", lake_bucket.url)
    calls = []
    ledger = StageLedger(run_dir, "seed", resume=True)
    ledger.run("ingest", lambda: calls.append(1) or {"rows": 3})
    again = StageLedger(run_dir, "seed", resume=True)
    assert again.run("ingest", lambda: calls.append(2) or {"rows": 4}) == {"rows": 3}
    assert calls == [1] and again.skipped == ["ingest"]


def test_spark_without_hadoop_aws_names_the_table_and_the_package(spark, lake_bucket):
    lake = lake_location("s3://lake/tables", lake_bucket.url)
    (lake / "signups" / "part-0.parquet").write_bytes(b"PAR1")
    contract = next(c for c in INPUT_TABLES if c.name == "signups")
    with pytest.raises(
        InputTableError, match=r"'signups' at s3a://lake/tables/signups.*hadoop-aws.*\[\"s3a\"\]"
    ):
        read_table(spark, lake, contract)
    payments = next(c for c in INPUT_TABLES if c.name == "payments")
    with pytest.raises(InputTableError, match="'payments' not found at s3a://lake/tables"):
        read_table(spark, lake, payments)


def test_lake_iam_policy_reads_tables_writes_runs_and_nothing_else(lake_bucket):
    import json
    from pathlib import Path

    from pyarrow import fs as pafs

    admin = lake_location("s3://lake/prod/tables", lake_bucket.url)
    (admin / "signups" / "part-0.parquet").write_bytes(b"PAR1")
    (lake_location("s3://lake/other", lake_bucket.url) / "secret.txt").write_text("no")
    policy = (Path(__file__).parents[3] / "infra" / "iam-lake-policy.json").read_text()
    policy = policy.replace("LAKE_BUCKET", "lake").replace("LAKE_BASE", "prod")
    iam = boto3.client("iam", endpoint_url=lake_bucket.url)
    iam.create_user(UserName="farmwatch-job")
    iam.put_user_policy(UserName="farmwatch-job", PolicyName="lake", PolicyDocument=policy)
    key = iam.create_access_key(UserName="farmwatch-job")["AccessKey"]
    lake_bucket.admin("reset-auth", b"0")  # from now on moto authenticates and authorises
    scheme, _, host = lake_bucket.url.partition("://")
    job = pafs.S3FileSystem(
        access_key=key["AccessKeyId"],
        secret_key=key["SecretAccessKey"],
        endpoint_override=host,
        scheme=scheme,
        region="us-east-1",
    )
    tables = ObjectPath(job, "lake/prod/tables")
    runs = ObjectPath(job, "lake/prod/runs/dt=2026-06-30")
    assert (tables / "signups" / "part-0.parquet").read_bytes() == b"PAR1"
    (runs / "_stages" / "ingest.json").write_text(json.dumps({"key": "k"}))
    assert (runs / "_stages" / "ingest.json").is_file()
    with pytest.raises(OSError, match="(?i)access.?denied"):
        (tables / "signups" / "part-1.parquet").write_bytes(b"PAR1")
    with pytest.raises(OSError, match="(?i)access.?denied"):
        ObjectPath(job, "lake/other/secret.txt").read_bytes()


def test_a_table_written_in_parts_holds_every_part_and_times_each(spark, tmp_path):
    path = tmp_path / "table"
    spark.range(5).selectExpr("id", "'old' AS kind").write.parquet(str(path))
    parts = {
        "first": spark.range(3).selectExpr("id", "'a' AS kind"),
        "second": spark.range(10, 14).selectExpr("id", "'b' AS kind"),
    }
    with part_clock() as clock:
        table = persist_parts(parts, path)
    rows = sorted((r.id, r.kind) for r in table.collect())
    # what the folder held before is replaced, every part is there once
    assert rows == [(0, "a"), (1, "a"), (2, "a"), (10, "b"), (11, "b"), (12, "b"), (13, "b")]
    assert list(clock.finish()) == ["first", "second", "other"]
