"""How much of each part's cores Spark's tasks used: where time is idle, where it is work.

A part's wall seconds say how long it took, not whether both cores worked: a Leiden task on one
core, or numpy on the driver, leaves the other core without a Spark task. This module reads the
run's Spark event log (every task's launch and finish) and the parts' spans on the wall clock
(:mod:`jobs.core.timing`), and gives each part its task seconds (the seconds of Spark tasks
running inside its span, a task waiting on its Python worker included) and its core seconds
without a task (``cores * wall - task seconds``: idle cores, or the driver's own work). Used by
``bench_nightly.py --core-use`` (and its test).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Span = tuple[str, float, float]  # part, start, end (epoch seconds)


def event_log_conf(folder: Path) -> dict[str, str]:
    """Spark settings that write an uncompressed event log under ``folder``."""
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": folder.resolve().as_uri(),
        "spark.eventLog.compress": "false",
    }


def task_spans(folder: Path) -> list[tuple[float, float]]:
    """``(launch, finish)`` in epoch seconds of every finished Spark task logged under ``folder``.

    Reads every event file below it (a rolling log is a folder of ``events_*`` files); a line cut
    short by a process that did not stop its session is skipped.
    """
    tasks = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith((".", "appstatus")):
            continue
        with path.open() as lines:
            for line in lines:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                try:
                    info = json.loads(line)["Task Info"]
                except (json.JSONDecodeError, KeyError):
                    continue
                tasks.append((info["Launch Time"] / 1000, info["Finish Time"] / 1000))
    return tasks


def local_cores(master: str) -> int | None:
    """Cores of a ``local[...]`` master (``local`` is 1, ``local[*]`` all); None for a cluster."""
    if master == "local":
        return 1
    match = re.fullmatch(r"local\[(\*|\d+)(?:,\s*\d+)?\]", master)
    if not match:
        return None
    if match.group(1) == "*":
        return os.cpu_count() or 1
    return int(match.group(1))


def core_use(
    tasks: Iterable[tuple[float, float]], spans: dict[str, list[Span]], cores: int
) -> dict[str, Any]:
    """Task seconds and core seconds without a task, by stage and part, and for the whole run.

    Args:
        tasks: ``(launch, finish)`` of every task (:func:`task_spans`).
        spans: stage -> its parts' ``(part, start, end)`` spans, in order (a part named twice
            adds up, as the part seconds do).
        cores: cores the tasks can use at once.

    Returns:
        ``{"cores", "stages": {stage: {"wall", "task_seconds", "idle_core_seconds", "parts":
        {part: the same three}}}, "total": the same three}``, seconds rounded to 0.1.
    """
    tasks = sorted(tasks)

    def busy(start: float, end: float) -> float:
        return sum(max(0.0, min(end, f) - max(start, s)) for s, f in tasks if s < end)

    def figures(wall: float, task_seconds: float) -> dict[str, float]:
        return {
            "wall": round(wall, 1),
            "task_seconds": round(task_seconds, 1),
            "idle_core_seconds": round(cores * wall - task_seconds, 1),
        }

    stages: dict[str, Any] = {}
    total_wall = total_busy = 0.0
    for stage, parts in spans.items():
        walls: dict[str, float] = {}
        busies: dict[str, float] = {}
        for part, start, end in parts:
            walls[part] = walls.get(part, 0.0) + end - start
            busies[part] = busies.get(part, 0.0) + busy(start, end)
        wall, task_seconds = sum(walls.values()), sum(busies.values())
        stages[stage] = {
            **figures(wall, task_seconds),
            "parts": {part: figures(walls[part], busies[part]) for part in walls},
        }
        total_wall += wall
        total_busy += task_seconds
    return {"cores": cores, "stages": stages, "total": figures(total_wall, total_busy)}


def core_use_table(use: dict[str, Any]) -> str:
    """A markdown table of :func:`core_use`: wall, task seconds, cores busy, idle core seconds."""
    busy_title = f"cores busy (of {use['cores']})"
    lines = [
        f"| stage | part | wall s | task s | {busy_title} | core s without a task |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def row(stage: str, part: str, f: dict[str, float], bold: bool) -> str:
        busy = f["task_seconds"] / f["wall"] if f["wall"] else 0.0
        cells = [f"{f['wall']:.1f}", f"{f['task_seconds']:.1f}", f"{busy:.2f}"]
        cells.append(f"{f['idle_core_seconds']:.1f}")
        if bold:
            cells = [f"**{c}**" for c in cells]
        return "|" + "|".join(f" {c} " if c else " " for c in (stage, part, *cells)) + "|"

    for stage, figures in use["stages"].items():
        lines.append(row(f"**{stage}**", "", figures, True))
        lines.extend(row("", part, f, False) for part, f in figures["parts"].items())
    lines.append(row("**nightly flow**", "", use["total"], True))
    return "\n".join(lines)
