"""The consumer's side: load the ban list in force from a bucket or folder in one call.

In: a location, ``s3://bucket/<prefix>`` (the folder that holds ``latest.json``) or a local
folder, plus an optional endpoint URL for S3-compatible stores. Out: the run's manifest and its
ban list as a pandas DataFrame, after checking the manifest against ``latest.json`` and the list
against the manifest's sha256. Credentials come from boto3's standard chain. Used by trust
teams' own code::

    from jobs.banlists.reader import load_latest
    manifest, bans = load_latest("s3://trust-banlists/banlists")
    to_ban = bans[bans["action"] == "ban"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from jobs.banlists.runs import read_latest
from jobs.core.config import PublishSettings
from jobs.core.store import LocalStore, S3Store, parse_s3_url


def load_latest(
    location: str, endpoint_url: str | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The manifest and ban list that ``<location>/latest.json`` points at.

    Args:
        location: ``s3://bucket/prefix`` or a folder (the one holding ``latest.json``).
        endpoint_url: S3-compatible endpoint (MinIO, Ceph); default AWS.

    Raises:
        FileNotFoundError: no list is in force at ``location``.
        jobs.core.store.StoreError: the store refused the read or a file does not match.
    """
    if location.startswith(("s3://", "s3a://")):
        bucket, key = parse_s3_url(location)
        base, _, prefix = key.rpartition("/")
        if not prefix:
            raise ValueError(f"{location!r}: give the prefix that holds latest.json")
        store = S3Store(bucket, base, PublishSettings(endpoint_url=endpoint_url))
        return read_latest(store, prefix)
    folder = Path(location)
    return read_latest(LocalStore(folder.parent), folder.name)
