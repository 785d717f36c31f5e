"""Set-up the benchmark scripts share: a throw-away farmwatch home, a median timer, the result.

Imported by the ``bench_*.py`` scripts, which run as ``python benchmarks/bench_<name>.py`` (so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def bench_home(name: str, lake: str | None = None, keep: str | None = None) -> Path:
    """A fresh temporary farmwatch home, or ``keep`` (created if missing, else reused), and
    optionally an existing lake, for this process.

    Must run before the farmwatch settings are first read (they come from the environment).
    """
    if keep:
        home = Path(keep).resolve()
        home.mkdir(parents=True, exist_ok=True)
    else:
        home = Path(tempfile.mkdtemp(prefix=f"farmwatch-bench-{name}-"))
    os.environ["FARMWATCH_LAKE__HOME"] = str(home)
    if lake:
        os.environ["FARMWATCH_LAKE__LAKE"] = str(Path(lake).resolve())
    return home


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median seconds, every run's seconds, and the last run's return value."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(round(time.perf_counter() - start, 2))
    return statistics.median(times), times, result


def write_result(result: dict[str, Any], out: str) -> Path:
    """Print the result and write it as JSON to ``out`` (folders created)."""
    print(json.dumps(result, indent=2))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def stage_context(spark: Any, settings: Any, run_date: Any) -> Any:
    """The :class:`jobs.core.stage.StageContext` of a run dated ``run_date`` in this home."""
    from flows.runtime import layout_for
    from jobs.core.stage import StageContext

    return StageContext(spark, settings, layout_for(settings, run_date), run_date)
