"""Publishing against a real S3-protocol server (moto's standalone server, a separate process).

Covers: a full publish and read-back (with server-side encryption on every object and the
three-line consumer reader), multipart uploads, the server killed in the middle of a publish,
a bucket without write permission, rejected credentials, a missing bucket, the circuit breaker
(hold, then release), the allowlist report, a revoke, and the trust-team CLI over S3.
"""

from __future__ import annotations

import hashlib
import io
import json

import boto3
import pandas as pd
import pytest

from flows.cli import main as farmwatch
from jobs.banlists.publish import RunContext, publish
from jobs.banlists.reader import load_latest
from jobs.banlists.runs import list_runs, read_latest, revoke
from jobs.core.config import BanSettings, PublishSettings
from jobs.core.store import S3Store, StoreError, StoreUnavailable

BUCKET = "trust-banlists"
MODEL = {"name": "farmwatch-farm-model", "version": "4"}
BANS = BanSettings(breaker_min_history=2, breaker_multiple=2.0, breaker_floor=3)


def banlist(n: int, action: str = "ban", start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": [f"a{i:05d}" for i in range(start, start + n)],
            "farm_id": ["farm_1"] * n,
            "score": [0.99] * n,
            "action": [action] * n,
            "reasons": [["shares instrument 3fa2c91b0d4e5f61 with 40 other accounts"]] * n,
            "model_version": ["4"] * n,
        }
    )


def context(run_date: str, **inputs: int) -> RunContext:
    return RunContext(run_date, MODEL, "cfg", "0.1.0+gtest", inputs or {"rows": 1})


def settings_for(server, **overrides) -> PublishSettings:
    return PublishSettings(
        target=f"s3://{BUCKET}/prod",
        endpoint_url=server.url,
        s3_max_attempts=2,
        s3_connect_timeout_seconds=1,
        s3_read_timeout_seconds=5,
        **overrides,
    )


@pytest.fixture
def bucket(s3_server):
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=BUCKET)
    return S3Store(BUCKET, "prod", settings_for(s3_server))


def test_full_publish_and_read_back(s3_server, bucket):
    result = publish(banlist(3), bucket, "banlists", context("2026-06-05"), BANS)
    assert result.status == "published" and result.in_force
    raw = boto3.client("s3", endpoint_url=s3_server.url)
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=BUCKET)["Contents"]]
    run = result.run_prefix
    (audit,) = [k for k in keys if k.startswith("prod/banlists/audit/")]  # the publish record
    assert sorted(k for k in keys if k != audit) == sorted(
        f"prod/{k}"
        for k in [
            f"{run}/banlist.parquet",
            f"{run}/banlist.csv",
            f"{run}/farms.parquet",
            f"{run}/diff.parquet",
            f"{run}/allowlisted.parquet",
            f"{run}/farm_registry.parquet",
            f"{run}/farm_members.parquet",
            f"{run}/farm_history.parquet",
            f"{run}/manifest.json",
            f"{run}/status.json",
            "banlists/latest.json",
        ]
    )
    for key in keys:  # server-side encryption was requested on every object
        assert raw.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "AES256"
    manifest = json.loads(
        raw.get_object(Bucket=BUCKET, Key=f"prod/{run}/manifest.json")["Body"].read()
    )
    for name, meta in manifest["files"].items():
        body = raw.get_object(Bucket=BUCKET, Key=f"prod/{run}/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    read_manifest, bans = load_latest(f"s3://{BUCKET}/prod/banlists", endpoint_url=s3_server.url)
    assert read_manifest == manifest
    assert bans["account_id"].tolist() == ["a00000", "a00001", "a00002"]


def test_multipart_upload_round_trips(s3_server, bucket):
    store = S3Store(
        BUCKET, "", settings_for(s3_server, multipart_threshold_mib=5, multipart_chunk_mib=5)
    )
    data = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32)
    store.put("big/object.bin", data)
    head = store.head("big/object.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ServerSideEncryption"] == "AES256"
    assert store.get("big/object.bin") == data


def test_server_killed_mid_publish_leaves_previous_list_in_force(s3_server, bucket):
    first = publish(banlist(3), bucket, "banlists", context("2026-06-04"), BANS)
    puts = []
    real_put = bucket.put

    def put_then_crash(key, data):
        real_put(key, data)
        puts.append(key)
        if len(puts) == 2:  # two files of the new run are on the server, then it dies
            s3_server.kill()

    bucket.put = put_then_crash
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        publish(banlist(4), bucket, "banlists", context("2026-06-05"), BANS)
    s3_server.restart()  # same port, objects written before the crash replayed
    bucket.put = real_put
    manifest, listed = read_latest(bucket, "banlists")
    assert manifest["run_id"] == first.manifest["run_id"] and len(listed) == 3
    assert bucket.exists(f"{puts[0]}")  # the partial run is there, but nothing points at it
    again = publish(banlist(4), bucket, "banlists", context("2026-06-05"), BANS)
    assert again.status == "published" and again.in_force
    manifest, listed = read_latest(bucket, "banlists")
    assert manifest["run_date"] == "2026-06-05" and len(listed) == 4


def test_denied_bucket_bad_credentials_and_missing_bucket_are_clear(s3_server, bucket):
    publish(banlist(1), bucket, "banlists", context("2026-06-04"), BANS)
    iam = boto3.client("iam", endpoint_url=s3_server.url)
    iam.create_user(UserName="banlist-reader")
    iam.put_user_policy(
        UserName="banlist-reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:ListBucket"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="banlist-reader")["AccessKey"]
    s3_server.admin("reset-auth", b"0")  # from now on moto authenticates and authorises
    reader = boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    read_only = S3Store(BUCKET, "prod", settings_for(s3_server), client=reader)
    before = read_only.get("banlists/latest.json")
    with pytest.raises(StoreError, match="access denied: write s3://trust-banlists/prod/"):
        publish(banlist(2), read_only, "banlists", context("2026-06-05"), BANS)
    assert read_only.get("banlists/latest.json") == before

    stranger = boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id="AKIAFARMWATCHNOPE",
        aws_secret_access_key="wrong",
    )
    bad = S3Store(BUCKET, "prod", settings_for(s3_server), client=stranger)
    with pytest.raises(StoreError, match="rejected the credentials \\(InvalidAccessKeyId\\)"):
        read_latest(bad, "banlists")

    nowhere = S3Store("no-such-bucket", "", settings_for(s3_server), client=reader)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        nowhere.get("banlists/latest.json")


def test_circuit_breaker_holds_then_release_publishes(s3_server, bucket):
    for day, n in (("2026-06-01", 4), ("2026-06-02", 5), ("2026-06-03", 6)):
        assert publish(banlist(n), bucket, "banlists", context(day), BANS).in_force
    before = bucket.get("banlists/latest.json")
    held = publish(banlist(40), bucket, "banlists", context("2026-06-04"), BANS)
    assert held.status == "held" and not held.in_force
    assert "40 bans exceed 2x the median of the last 3 published runs (5)" in held.message
    assert bucket.get("banlists/latest.json") == before
    assert bucket.exists(f"{held.run_prefix}/banlist.parquet")  # written for review
    # Re-running the same inputs is held again; the operator flag releases it.
    assert publish(banlist(40), bucket, "banlists", context("2026-06-04"), BANS).status == "held"
    released = publish(
        banlist(40), bucket, "banlists", context("2026-06-04"), BANS, release_held=True
    )
    assert released.status == "published" and released.in_force
    assert read_latest(bucket, "banlists")[0]["run_id"] == held.manifest["run_id"]
    # The absolute ceiling applies with no history at all.
    ceiling = BanSettings(breaker_max_bans=10)
    empty = S3Store(BUCKET, "other", settings_for(s3_server))
    assert publish(banlist(11), empty, "banlists", context("2026-06-01"), ceiling).status == "held"
    assert not empty.exists("banlists/latest.json")


def test_allowlisted_accounts_are_reported_separately(s3_server, bucket):
    allowlisted = banlist(2, start=100).assign(allowlist_rule="email_domain:bigcorp.com")
    result = publish(
        banlist(3), bucket, "banlists", context("2026-06-05"), BANS, allowlisted=allowlisted
    )
    assert result.manifest["allowlisted"] == {"accounts": 2, "would_have_been_banned": 2}
    report = pd.read_parquet(io.BytesIO(bucket.get(f"{result.run_prefix}/allowlisted.parquet")))
    assert report["account_id"].tolist() == ["a00100", "a00101"]
    _, listed = read_latest(bucket, "banlists")
    assert not set(listed["account_id"]) & set(report["account_id"])


def test_revoke_moves_latest_back(s3_server, bucket):
    first = publish(banlist(3), bucket, "banlists", context("2026-06-04"), BANS)
    second = publish(banlist(4), bucket, "banlists", context("2026-06-05"), BANS)
    assert second.manifest["diff"]["accounts"]["new"] == 1
    latest = revoke(bucket, "banlists", second.manifest["run_id"], "model bug, ticket T-1")
    assert latest["run_id"] == first.manifest["run_id"]
    assert [r["status"] for r in list_runs(bucket, "banlists")] == ["published", "revoked"]
    # An identical re-run does not resurrect a revoked list.
    again = publish(banlist(4), bucket, "banlists", context("2026-06-05"), BANS)
    assert again.status == "revoked" and not again.in_force
    assert read_latest(bucket, "banlists")[0]["run_id"] == first.manifest["run_id"]
    with pytest.raises(ValueError, match="already revoked"):
        revoke(bucket, "banlists", second.manifest["run_id"], "again")
    revoke(bucket, "banlists", first.manifest["run_id"], "all wrong")
    assert not bucket.exists("banlists/latest.json")


def test_trust_team_cli_over_s3(s3_server, bucket, farmwatch_home, monkeypatch, capsys):
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", f"s3://{BUCKET}/prod")
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENDPOINT_URL", s3_server.url)
    first = publish(banlist(3), bucket, "banlists", context("2026-06-04"), BANS)
    second = publish(banlist(2, start=1), bucket, "banlists", context("2026-06-05"), BANS)
    assert farmwatch(["banlist", "latest"]) == 0
    assert '"run_date": "2026-06-05"' in capsys.readouterr().out
    assert farmwatch(["banlist", "diff"]) == 0
    out = capsys.readouterr().out
    assert "a00000" in out and "dropped" in out
    assert farmwatch(["banlist", "show", "--account", "a00001"]) == 0
    assert "shares instrument 3fa2c91b0d4e5f61" in capsys.readouterr().out
    run_id = second.manifest["run_id"]
    assert farmwatch(["banlist", "revoke", run_id, "--reason", "appeal batch"]) == 0
    assert f"list in force: 2026-06-04 run {first.manifest['run_id']}" in capsys.readouterr().out
    assert farmwatch(["banlist", "runs"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert farmwatch(["banlist", "revoke", run_id, "--reason", "x"]) == 1
    assert "already revoked" in capsys.readouterr().err
