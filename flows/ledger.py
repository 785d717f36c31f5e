"""Run bookkeeping for the flows: one run at a time, and resuming from the last finished stage.

In: the farmwatch home, a run's folder, and the key material of a run (config fingerprint, run
date, look-back, a digest of the input files). Out: an exclusive lock per farmwatch home, and a
ledger of finished stages in ``<stages>/<stage>.json`` (the run layout's ``stages`` folder).
Each stage's key chains the previous stage's key with what the stage depends on, so a stage
is skipped only when it and everything upstream would compute the same thing again; a change
of inputs, config or model re-runs from the first affected stage. Called by the nightly and
training flows.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from jobs.core.lake import ObjectPath, write_text_atomic
from jobs.core.tables import DELTA_LOG
from jobs.core.timing import part_clock


class RunLocked(RuntimeError):
    """Another farmwatch run holds the lock of this home."""


@contextmanager
def run_lock(home: Path, what: str) -> Iterator[None]:
    """Hold ``<home>/run.lock`` for the duration; fail at once if another run holds it.

    Args:
        home: the farmwatch home (runs under one home share intermediates and a bucket).
        what: a description written into the lock for the error message of a second run.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / "run.lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunLocked(
                f"another farmwatch run is in progress under {home} ({holder}); "
                "two runs never overlap, try again when it has finished"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {what}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def input_digest(lake: Path | ObjectPath) -> str:
    """A digest of the input tables: their files' names, sizes and modification times.

    A Delta table (a folder with ``_delta_log``) enters by its version and its log's files
    only: its data files are what the log says they are, so a file left by an aborted writer or
    removed by a vacuum changes nothing, while every new commit (a new version) does.
    """
    files = []
    if lake.is_dir():
        files = [
            (str(path.relative_to(lake)), path)
            for path in lake.rglob("*")
            if path.is_file() and not path.name.startswith((".", "_SUCCESS"))
        ]
    delta_tables = {rel.split("/")[0] for rel, _ in files if f"/{DELTA_LOG}/" in rel}
    versions: dict[str, int] = {}
    entries = []
    for rel, path in sorted(files):
        table, _, inner = rel.partition("/")
        if table in delta_tables:
            if not inner.startswith(f"{DELTA_LOG}/"):
                continue
            commit = PurePosixPath(inner).name.split(".")[0]
            if commit.isdigit():
                versions[table] = max(versions.get(table, 0), int(commit))
        stat = path.stat()
        entries.append(f"{rel}:{stat.st_size}:{stat.st_mtime_ns}")
    entries += [f"{table}: delta version {v}" for table, v in sorted(versions.items())]
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


class StageLedger:
    """Runs stages in order, recording each finished one; skips those already done.

    Args:
        folder: where the ledger lives (the run layout's ``stages``).
        seed: key material of the whole run (fingerprint, date, look-back, input digest).
        resume: skip stages whose recorded key matches (otherwise run everything).
    """

    def __init__(self, folder: Path | ObjectPath, seed: str, resume: bool) -> None:
        self.folder = folder
        self.key = hashlib.sha256(seed.encode()).hexdigest()[:16]
        self.resume = resume
        self.seconds: dict[str, float] = {}
        self.parts: dict[str, dict[str, float]] = {}  # stage -> part -> seconds (ran stages)
        self.spans: dict[str, list[tuple[str, float, float]]] = {}  # stage -> parts' epoch spans
        self.skipped: list[str] = []

    def run(self, name: str, fn: Callable[..., Any], *args: Any, depends_on: str = "") -> Any:
        """Run ``fn(*args)`` as stage ``name`` unless it already finished with the same key.

        Args:
            name: stage name.
            fn: the stage (a Prefect task); its result must be JSON-serialisable.
            *args: arguments of ``fn``.
            depends_on: what else the stage's result depends on (model version, target, ...).

        Returns:
            The stage's result (recorded or fresh).
        """
        self.key = hashlib.sha256(f"{self.key}|{name}|{depends_on}".encode()).hexdigest()[:16]
        marker = self.folder / f"{name}.json"
        if self.resume and marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("key") == self.key:
                self.skipped.append(name)
                self.seconds[name] = 0.0
                return saved["result"]
        start = time.perf_counter()
        with part_clock() as clock:
            result = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        self.parts[name] = clock.finish()
        self.spans[name] = clock.spans
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "key": self.key,
            "result": result,
            "seconds": round(self.seconds[name], 1),
            "part_seconds": self.parts[name],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_text_atomic(marker, json.dumps(record, indent=2, default=str))
        return result
