"""Lake locations: a local folder or an object-storage prefix behind one small path API.

In: a location string (``/data/lake``, ``var/runs``, ``s3://bucket/lake``, ``s3a://bucket/lake``)
and the S3 connection keys of :class:`jobs.core.config.LakeSettings`. Out: a :class:`pathlib.Path`
for a local folder, or an :class:`ObjectPath` for an object-storage prefix. Both offer what
farmwatch does with the lake and run folders: ``/``, ``str()`` (the URI Spark reads and
writes: ``s3a://`` for object storage, which needs the ``hadoop-aws`` package on the cluster),
``name``, ``parent``, ``exists``, ``is_file``, ``is_dir``, ``read_text``/``read_bytes``,
``write_text``/``write_bytes``, ``mkdir``, ``rglob("*")``, ``stat`` and ``relative_to``.
Tables go through Spark; the small files (stage markers, reports, ``_world.json``, the ban-list
copy of a run) go through pyarrow's S3 filesystem. Called by the settings (``lake_path``,
``runs_path``) and everything that reads or writes under them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pyarrow import fs as pafs

from jobs.core.timing import mark

OBJECT_SCHEMES = ("s3://", "s3a://")


def is_object_uri(location: str | Path) -> bool:
    """True for ``s3://`` and ``s3a://`` locations."""
    return str(location).startswith(OBJECT_SCHEMES)


@dataclass(frozen=True)
class ObjectStat:
    """The parts of ``os.stat_result`` the input digest uses."""

    st_size: int
    st_mtime_ns: int


class ObjectPath:
    """A key prefix in an S3-compatible bucket, used like a :class:`pathlib.Path`.

    Args:
        filesystem: pyarrow S3 filesystem (endpoint, region and credentials set).
        key: ``bucket/prefix/...`` without a scheme.
        endpoint_url: the S3-compatible endpoint, for clients other than ``filesystem``.
        region: the bucket's region, likewise.
    """

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        key: str,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.filesystem = filesystem
        self.key = key.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._info: pafs.FileInfo | None = None

    def _at(self, key: str) -> ObjectPath:
        return ObjectPath(self.filesystem, key, self.endpoint_url, self.region)

    def __truediv__(self, name: str) -> ObjectPath:
        return self._at(f"{self.key}/{str(name).strip('/')}")

    def __str__(self) -> str:
        return f"s3a://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.key < other.key

    @property
    def name(self) -> str:
        """Last part of the key."""
        return PurePosixPath(self.key).name

    @property
    def parent(self) -> ObjectPath:
        """The prefix one level up."""
        return self._at(str(PurePosixPath(self.key).parent))

    def _fresh_type(self) -> pafs.FileType:
        return self.filesystem.get_file_info(self.key).type

    def exists(self) -> bool:
        """True when an object or a prefix with objects exists here."""
        return self._fresh_type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        """True when an object exists at exactly this key."""
        return self._fresh_type() == pafs.FileType.File

    def is_dir(self) -> bool:
        """True when objects exist under this prefix."""
        return self._fresh_type() == pafs.FileType.Directory

    def read_bytes(self) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when it does not exist."""
        try:
            with self.filesystem.open_input_stream(self.key) as stream:
                return stream.read()
        except OSError as exc:
            if "not found" in str(exc).lower() or "NoSuchKey" in str(exc):
                raise FileNotFoundError(str(self)) from exc
            raise

    def read_text(self, encoding: str = "utf-8") -> str:
        """The object decoded as text."""
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """Write (replace) the object."""
        with self.filesystem.open_output_stream(self.key) as stream:
            stream.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        """Write (replace) the object as text."""
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object storage has no folders: a prefix exists once something is written under it."""
        del parents, exist_ok

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the object."""
        try:
            self.filesystem.delete_file(self.key)
        except OSError:
            if not missing_ok:
                raise

    def rglob(self, pattern: str) -> list[ObjectPath]:
        """Every object under this prefix (only the ``*`` pattern is supported)."""
        if pattern != "*":
            raise ValueError("ObjectPath.rglob supports only '*'")
        selector = pafs.FileSelector(self.key, recursive=True, allow_not_found=True)
        found = []
        for info in self.filesystem.get_file_info(selector):
            child = self._at(info.path)
            child._info = info
            found.append(child)
        return found

    def stat(self) -> ObjectStat:
        """Size and modification time."""
        info = self._info or self.filesystem.get_file_info(self.key)
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        return ObjectStat(st_size=info.size or 0, st_mtime_ns=mtime)

    def relative_to(self, other: ObjectPath) -> str:
        """This key relative to ``other`` (a prefix of it)."""
        return str(PurePosixPath(self.key).relative_to(other.key))


def object_filesystem(endpoint_url: str | None, region: str | None) -> pafs.FileSystem:
    """A pyarrow S3 filesystem; credentials come from the environment or the AWS config."""
    options: dict[str, Any] = {}
    if region:
        options["region"] = region
    if endpoint_url:
        scheme, _, host = endpoint_url.partition("://")
        options["endpoint_override"] = host or endpoint_url
        options["scheme"] = scheme if host else "https"
    return pafs.S3FileSystem(**options)


def lake_location(
    location: str | Path, endpoint_url: str | None = None, region: str | None = None
) -> Path | ObjectPath:
    """A local folder (resolved) or an object-storage prefix for ``location``."""
    text = str(location)
    if is_object_uri(text):
        key = text.split("://", 1)[1]
        if not key.strip("/"):
            raise ValueError(f"object-storage location {text!r} names no bucket")
        return ObjectPath(object_filesystem(endpoint_url, region), key, endpoint_url, region)
    return Path(text).resolve()


def write_text_atomic(path: Path | ObjectPath, text: str) -> None:
    """Replace a small file so readers see the old or the new text, never half of it.

    A local file is written beside and renamed over; an object PUT is already atomic.
    """
    if isinstance(path, ObjectPath):
        path.write_text(text)
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_tree(path: Path | ObjectPath) -> None:
    """Delete a folder and everything under it (an object prefix: every object under it)."""
    if isinstance(path, ObjectPath):
        path.filesystem.delete_dir_contents(path.key, missing_dir_ok=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def persist(df: Any, path: Any) -> Any:
    """Write ``df`` as Parquet at ``path`` and read it back: later readers do not recompute it.

    Args:
        df: a Spark DataFrame.
        path: where it goes (a path or an object-store location; ``str()`` is the URI).

    Returns:
        The DataFrame read from ``path`` (its lineage is the file, not the plan).

    Under a :func:`jobs.core.timing.part_clock`, the seconds since the stage's last mark go to a
    part named after the folder.
    """
    return persist_parts({str(path).rstrip("/").rsplit("/", 1)[-1]: df}, path)


def persist_parts(parts: dict[str, Any], path: Any) -> Any:
    """Write DataFrames of one schema into one Parquet table at ``path``, one job each.

    The first replaces what ``path`` held, the others are appended to it; each write is a part
    of the stage named by its key (:func:`jobs.core.timing.mark`), so the table's pieces are
    timed apart. Readers see one table: the rows of every piece.

    Args:
        parts: part name -> Spark DataFrame, in the order they are written.
        path: where the table goes.

    Returns:
        The table read from ``path``.
    """
    mode = "overwrite"
    for name, df in parts.items():
        df.write.mode(mode).parquet(str(path))
        mark(name)  # the write ran the plan since the last mark
        mode = "append"
    return df.sparkSession.read.parquet(str(path))
