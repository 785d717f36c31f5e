"""Benchmark: the behaviour buckets of a git revision against the working tree's, on one run.

Takes a run folder whose ingest stage ran (its ``accepted`` tables, in a home that holds the
entity hash key) and computes ``behaviour_entities`` (:mod:`jobs.graph.entities`) with the
module as it is at ``--baseline`` (read with ``git show``) and as it is in the working tree,
alternating, ``--repeats`` times each, each run writing its rows as Parquet. The first run of
the process also pays the JVM's warm-up; the JSON keeps every run's seconds with its position.
Then it checks that both wrote the same rows (``exceptAll`` empty both ways) and fails if not.
Reports the medians and their ratio; writes JSON (default ``benchmarks/results/behaviour.json``).

    .venv/bin/python benchmarks/bench_behaviour.py --run <home>/runs/dt=<date> --baseline HEAD~1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import bench_home, write_result


def baseline_module(revision: str, folder: Path) -> Any:
    """``jobs/graph/entities.py`` as it is at ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:jobs/graph/entities.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    path = folder / "baseline_entities.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_entities", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder (runs/dt=<date>)")
    parser.add_argument("--baseline", required=True, help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/behaviour.json")
    args = parser.parse_args()
    run = Path(args.run).resolve()
    bench_home("behaviour", keep=str(run.parent.parent))  # the run's home: its hash key

    from flows.runtime import settings_for, spark_for
    from jobs.core.layout import RunLayout
    from jobs.graph import entities

    settings = settings_for(None)
    spark = spark_for(settings)
    layout = RunLayout.at(run)
    ip_events = spark.read.parquet(str(layout.accepted("ip_events")))
    api_usage = spark.read.parquet(str(layout.accepted("api_usage")))
    key = settings.entity_hash_key().secret
    work = Path(tempfile.mkdtemp(prefix="bench-behaviour-"))
    versions = {"baseline": baseline_module(args.baseline, work), "working_tree": entities}
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        for name, module in versions.items():
            start = time.perf_counter()
            module.behaviour_entities(ip_events, api_usage, settings.graph, key).write.mode(
                "overwrite"
            ).parquet(str(work / name))
            runs.append({"version": name, "seconds": round(time.perf_counter() - start, 1)})
            print(runs[-1], flush=True)
    old, new = (spark.read.parquet(str(work / name)) for name in versions)
    differ = old.exceptAll(new).count() + new.exceptAll(old).count()
    medians = {
        name: statistics.median(r["seconds"] for r in runs if r["version"] == name)
        for name in versions
    }
    result = {
        "benchmark": "behaviour",
        "run": str(run),
        "baseline": args.baseline,
        "rows": old.count(),
        "rows_differing": differ,
        "runs_in_order": runs,
        "median_seconds": medians,
        "working_tree_over_baseline": round(medians["working_tree"] / medians["baseline"], 3),
        "machine": {"spark_master": settings.spark.master},
    }
    write_result(result, args.out)
    if differ:
        raise SystemExit(f"the two versions wrote different rows: {differ}")


if __name__ == "__main__":
    main()
