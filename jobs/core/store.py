"""Object stores for published ban lists: an S3 bucket (boto3) or a local folder laid out alike.

In: :class:`jobs.core.config.PublishSettings` (``target`` is ``s3://bucket[/base]`` or a folder).
Out: a store with ``put/get/exists/list/delete`` over ``/``-separated keys. Both stores are used by
the same publishing code (:mod:`jobs.banlists.publish`), so the demo's folder and a real bucket hold
the same keys. Called by the nightly flow's publish task, ``farmwatch banlist`` and
:mod:`jobs.banlists.reader`.

The S3 store uses boto3's standard credential chain (environment, shared config/profile, SSO,
instance or task role), an optional endpoint override for S3-compatible stores (MinIO, Ceph,
moto), adaptive retries, multipart uploads above a size threshold, and requests server-side
encryption on every object. Failures become :class:`StoreError` with a message that says what to
fix; :class:`StoreUnavailable` marks the transient ones (endpoint unreachable, timeouts) that a
caller may retry.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Protocol

from jobs.core.config import PublishSettings


class StoreError(RuntimeError):
    """A store operation failed for a reason a retry will not fix (bucket, permissions, keys)."""


class StoreUnavailable(StoreError):
    """The store could not be reached (connection refused, timeout): a retry may succeed."""


class ObjectStore(Protocol):
    """What publishing needs from a bucket."""

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (whole object, replaces any previous one)."""

    def get(self, key: str) -> bytes:
        """Read the object at ``key``; :class:`FileNotFoundError` if it does not exist."""

    def exists(self, key: str) -> bool:
        """True if an object exists at ``key``."""

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (no error if absent)."""

    def describe(self) -> str:
        """A URL-like name for messages (``s3://bucket/base`` or a folder)."""


class LocalStore:
    """A folder standing in for the bucket: same keys, atomic writes via rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (temporary file, then rename)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        """Read the object at ``key``."""
        path = self.root / key
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, as S3 lists them (temporary files excluded)."""
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        (self.root / key).unlink(missing_ok=True)

    def describe(self) -> str:
        """The folder."""
        return str(self.root)


_DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "TokenRefreshRequired",
}


class S3Store:
    """A bucket (and optional base prefix) reached with boto3.

    Args:
        bucket: bucket name.
        base: key prefix inside the bucket ("" for the bucket root).
        settings: endpoint, region, retries, encryption and multipart settings.
        client: an existing boto3 S3 client (tests and callers with their own session).
    """

    def __init__(
        self, bucket: str, base: str, settings: PublishSettings, client: Any | None = None
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.base = base.strip("/")
        self.settings = settings
        config = Config(
            retries={"mode": "adaptive", "max_attempts": settings.s3_max_attempts},
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
            s3={"addressing_style": settings.s3_addressing_style},
        )
        self.client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=config,
        )
        mib = 1024 * 1024
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_mib * mib,
            multipart_chunksize=settings.multipart_chunk_mib * mib,
            use_threads=False,
        )

    def _key(self, key: str) -> str:
        return f"{self.base}/{key}" if self.base else key

    def _encryption(self) -> dict[str, str]:
        if self.settings.sse == "none":
            return {}
        extra = {"ServerSideEncryption": self.settings.sse}
        if self.settings.sse == "aws:kms" and self.settings.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return extra

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        """Turn a botocore exception into a message that says what to fix."""
        from botocore import exceptions as bx

        where = f"s3://{self.bucket}/{self._key(key)}"
        endpoint = self.settings.endpoint_url or "AWS S3"
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StoreError(
                f"no usable AWS credentials for {action} {where}: set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance/task role applies"
            )
        if isinstance(
            exc,
            bx.EndpointConnectionError
            | bx.ConnectTimeoutError
            | bx.ReadTimeoutError
            | bx.ConnectionClosedError,
        ):
            return StoreUnavailable(f"cannot reach {endpoint} to {action} {where}: {exc}")
        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket",):
                return StoreError(
                    f"bucket {self.bucket!r} does not exist at {endpoint}; create it or fix "
                    "FARMWATCH_PUBLISH__TARGET"
                )
            if code in _BAD_CREDENTIALS:
                return StoreError(
                    f"{endpoint} rejected the credentials ({code}) for {action} {where}; check "
                    "the access key, secret and session token in use"
                )
            if code in _DENIED:
                return StoreError(
                    f"access denied: {action} {where}; the publishing role needs s3:PutObject, "
                    "s3:GetObject, s3:DeleteObject and s3:ListBucket on the ban-list prefix "
                    "(see infra/iam-banlist-policy.json)"
                )
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500:
                return StoreUnavailable(f"{endpoint} failed to {action} {where}: {code} {exc}")
            return StoreError(f"{action} {where} failed: {code}: {exc}")
        return StoreError(f"{action} {where} failed: {exc}")

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` (multipart above the threshold), encrypted server-side."""
        try:
            self.client.upload_fileobj(
                io.BytesIO(data),
                self.bucket,
                self._key(key),
                ExtraArgs=self._encryption(),
                Config=self.transfer,
            )
        except Exception as exc:  # noqa: BLE001 (translated into a StoreError)
            raise self._error(exc, "write", key) from exc

    def get(self, key: str) -> bytes:
        """Download one object."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(
                    f"s3://{self.bucket}/{self._key(key)} does not exist"
                ) from exc
            raise self._error(exc, "read", key) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "read", key) from exc

    def exists(self, key: str) -> bool:
        """True if the object exists (HEAD)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            if code not in ("403", "400"):
                raise self._error(exc, "check", key) from exc
        # HEAD errors carry no body, so a 403 cannot tell denied access from bad credentials;
        # a one-byte GET returns the error code.
        try:
            self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range="bytes=0-0")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise self._error(exc, "check", key) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "check", key) from exc

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (relative to the base), paginated."""
        keys: list[str] = []
        strip = len(self.base) + 1 if self.base else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "list", prefix) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Delete one object."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "delete", key) from exc

    def head(self, key: str) -> dict[str, Any]:
        """The object's metadata (used to check encryption and multipart uploads)."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "check", key) from exc

    def describe(self) -> str:
        """``s3://bucket/base``."""
        return f"s3://{self.bucket}/{self.base}".rstrip("/")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/base`` (or ``s3a://``) -> (bucket, base)."""
    rest = url.split("://", 1)[1]
    bucket, _, base = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, base.strip("/")


def store_for(target: str, settings: PublishSettings | None = None) -> ObjectStore:
    """The store for a target: ``s3://bucket[/base]`` -> :class:`S3Store`, else a folder."""
    if target.startswith(("s3://", "s3a://")):
        bucket, base = parse_s3_url(target)
        return S3Store(bucket, base, settings or PublishSettings())
    return LocalStore(target)
