"""Benchmark: how the graph and communities stages scale from a small world to a 10x larger one.

For each world (by default 1,000,000 and 10,000,000 accounts, generated unless ``--lake`` gives
them), a child process with its own Spark session runs ingest, then times the graph stage and the
communities stage once each, while a sampler records the peak resident memory of the whole
process tree (Python driver, Spark JVM, Python workers). The worlds run one after the other in
one invocation, so the ratio compares figures from the same run.

Reported per world: ingest, graph and communities seconds (and the communities stage's parts),
peak RSS (GiB, whole run and per stage, with what the JVM, the Python driver and the Python
workers held at each stage's peak and how many seconds into the stage it came), graph size,
community quality on ground truth. Across worlds:
``time_ratio`` = (graph + communities)(large) / (graph + communities)(small), the issue's bar
being <= 10 and peak memory within the machine's 24 GiB. With ``--max-task-accounts N`` each
world also runs the communities stage again with ``graph.refine_max_task_accounts = N`` and
compares it with the uncut run (quality, farm-candidate accounts, the same farm groups or not,
time and peak memory); with ``--only-cut`` as well, the communities stage runs with the cap only
(the issue's 10M bar: no task above the cap, peak memory, time ratio). Writes JSON (default
``benchmarks/results/scale.json``).

    .venv/bin/python benchmarks/bench_scale.py --lake /path/1M-lake --lake /path/10M-lake
    .venv/bin/python benchmarks/bench_scale.py --accounts 20000 --accounts 200000   # smoke
    .venv/bin/python benchmarks/bench_scale.py --lake /path/1M-lake --max-task-accounts 30000
    .venv/bin/python benchmarks/bench_scale.py --lake /path/1M-lake --lake /path/10M-lake \
        --max-task-accounts 30000 --only-cut --memory-limit-gib 12 --out scale-cut-10m.json

``--home DIR`` keeps the farmwatch home (a fresh temporary one otherwise); with
``--communities-only`` and one ``--lake``, a home that already ran that world's graph stage runs
the communities stage alone (no ingest, graph or time ratio: another cap in 20 minutes instead
of an hour at 10M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchkit import bench_home, stage_context, write_result

GIB = 1024**3


def tree_rss_bytes(root: int) -> dict[str, int]:
    """Resident memory of ``root`` and all its descendants, from /proc (Linux), by role.

    Roles: ``jvm`` (Spark's Java process), ``driver`` (``root``, the Python driver),
    ``python_workers`` (Spark's Python daemon and workers) and ``other``.
    """
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(statm.split()[1]) * page
    roles: dict[str, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        role = "driver" if pid == root else _role(pid)
        roles[role] = roles.get(role, 0) + rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return roles


def _role(pid: int) -> str:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "other"
    if name == "java":
        return "jvm"
    return "python_workers" if name.startswith("python") else "other"


class PeakMemory:
    """Samples the process tree's RSS every ``interval`` seconds; keeps the overall peak and,
    per named phase, its peak, what each role held at that moment and when it came."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self.phases: dict[str, int] = {}
        self.at_peak: dict[str, dict[str, Any]] = {}
        self._phase: str | None = None
        self._phase_start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def phase(self) -> str | None:
        """The phase now sampled (None: none)."""
        return self._phase

    @phase.setter
    def phase(self, name: str | None) -> None:
        self._phase, self._phase_start = name, time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            roles = tree_rss_bytes(os.getpid())
            used = sum(roles.values())
            self.peak = max(self.peak, used)
            phase = self._phase
            if phase and used > self.phases.get(phase, 0):
                self.phases[phase] = used
                self.at_peak[phase] = {
                    "seconds_into_phase": round(time.perf_counter() - self._phase_start, 1),
                    "gib_by_role": {k: round(v / GIB, 2) for k, v in sorted(roles.items())},
                }
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_world(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: ingest, graph and communities on one world; returns figures."""
    home = bench_home("scale", args.lake[0] if args.lake else None, args.home)
    result: dict[str, Any] = {}
    with PeakMemory() as memory:
        try:
            _stages(result, memory, args, home)
        except Exception as exc:  # a failed world is a result too (e.g. a worker killed for memory)
            result["failed_in"] = memory.phase
            result["error"] = " ".join(str(exc).split())[:600]
    if "failed_in" not in result and "graph_seconds" in result:
        result["graph_plus_communities_seconds"] = round(
            result["graph_seconds"] + result["communities_seconds"], 1
        )
    result["peak_rss_gib"] = round(memory.peak / GIB, 2)
    result["peak_rss_gib_by_stage"] = {k: round(v / GIB, 2) for k, v in memory.phases.items()}
    result["at_peak_by_stage"] = memory.at_peak
    return result


def _stages(
    result: dict[str, Any], memory: PeakMemory, args: argparse.Namespace, home: Path
) -> None:
    """Ingest, graph, communities and the quality report, filling ``result`` as they finish."""
    from datetime import date

    from pyspark.sql import functions as F

    from flows.runtime import settings_for, spark_for
    from jobs.communities import stage as communities
    from jobs.core.timing import part_clock
    from jobs.graph import stage as graph
    from jobs.ingest import stage as ingest
    from jobs.report.summary import community_quality
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    settings = settings_for(None)
    if args.only_cut:  # the cap from the first communities run on, no uncut run to compare
        graph_settings = settings.graph.model_copy(
            update={"refine_max_task_accounts": args.max_task_accounts}
        )
        settings = settings.model_copy(update={"graph": graph_settings})
    spark = spark_for(settings)
    lake = settings.lake.lake_path
    if not args.lake:
        memory.phase = "generate"
        start = time.perf_counter()
        generate(spark, build_spec("distillation-campaign", args.accounts[0], args.seed), lake)
        result["generate_seconds"] = round(time.perf_counter() - start, 1)
    world = json.loads((lake / "_world.json").read_text())
    result["accounts"] = world["counts"]["signups"]
    end_date = date.fromisoformat(world["end_date"])
    ctx = stage_context(spark, settings, end_date)
    if args.communities_only:  # the home's run of this world already has its graph tables
        if not ctx.layout.account_links.exists():
            raise SystemExit(f"--communities-only: no graph tables under {ctx.layout.root}")
        result["graph_reused_from"] = str(ctx.layout.root)
    else:
        memory.phase = "ingest"
        start = time.perf_counter()
        ingest.run(ctx)
        result["ingest_seconds"] = round(time.perf_counter() - start, 1)
        memory.phase = "graph"
        start = time.perf_counter()
        result["graph"] = graph.run(ctx)
        result["graph_seconds"] = round(time.perf_counter() - start, 1)
    memory.phase = "communities"
    start = time.perf_counter()
    with part_clock() as clock:
        result["communities"] = communities.run(ctx)
    result["communities_seconds"] = round(time.perf_counter() - start, 1)
    result["communities_part_seconds"] = clock.finish()
    memory.phase = "report"
    truth = spark.read.parquet(str(lake / "ground_truth"))
    table = spark.read.parquet(str(ctx.layout.communities))
    result["quality"] = community_quality(table, truth, "community_id")
    result["largest_component"] = (
        table.groupBy("component_id").count().agg(F.max("count")).first()[0]
    )
    result["largest_community"] = (
        table.groupBy("community_id").count().agg(F.max("count")).first()[0]
    )
    if args.max_task_accounts and not args.only_cut:
        _cut(result, memory, spark, ctx, truth, home, args.max_task_accounts)
    result["refine_max_task_accounts"] = settings.graph.refine_max_task_accounts
    result["spark"] = {
        "master": settings.spark.master,
        "driver_memory": settings.spark.driver_memory,
        "shuffle_partitions": settings.spark.shuffle_partitions,
    }
    spark.stop()


def _cut(
    result: dict[str, Any],
    memory: PeakMemory,
    spark: Any,
    ctx: Any,
    truth: Any,
    home: Path,
    cap: int,
) -> None:
    """The communities stage again with ``graph.refine_max_task_accounts = cap``, compared.

    The uncut farm candidates are kept aside first (the cut run writes the same table); the
    comparison counts the accounts in farm candidates in one run and not the other, and
    whether the farm candidates are the same groups of accounts.
    """
    from pyspark.sql import functions as F

    from jobs.communities import stage as communities
    from jobs.core.stage import StageContext
    from jobs.report.summary import community_quality

    def farms(table: Any) -> Any:
        members = table.where(F.col("farm_id").isNotNull())
        return members.groupBy("farm_id").agg(F.sort_array(F.collect_list("account_id")).alias("m"))

    uncut_path = home / "uncut_communities"
    spark.read.parquet(str(ctx.layout.communities)).select("account_id", "farm_id").write.mode(
        "overwrite"
    ).parquet(str(uncut_path))
    uncut = spark.read.parquet(str(uncut_path))
    graph = ctx.settings.graph.model_copy(update={"refine_max_task_accounts": cap})
    settings = ctx.settings.model_copy(update={"graph": graph})
    cut_ctx = StageContext(spark, settings, ctx.layout, ctx.run_date)
    memory.phase = "communities_cut"
    start = time.perf_counter()
    summary = communities.run(cut_ctx)
    seconds = round(time.perf_counter() - start, 1)
    memory.phase = "report"
    table = spark.read.parquet(str(ctx.layout.communities))
    in_farm = F.col("farm_id").isNotNull()
    both = uncut.select("account_id", in_farm.alias("a")).join(
        table.select("account_id", in_farm.alias("b")), "account_id"
    )
    result["cut"] = {
        "refine_max_task_accounts": cap,
        "communities": summary,
        "communities_seconds": seconds,
        "quality": community_quality(table, truth, "community_id"),
        "largest_community": table.groupBy("community_id").count().agg(F.max("count")).first()[0],
        "farm_accounts_only_uncut": both.where("a and not b").count(),
        "farm_accounts_only_cut": both.where("b and not a").count(),
        "same_farm_groups": farms(uncut).select("m").exceptAll(farms(table).select("m")).isEmpty()
        and farms(table).select("m").exceptAll(farms(uncut).select("m")).isEmpty(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", action="append", help="an existing world, smallest first")
    parser.add_argument("--accounts", type=int, action="append", help="worlds to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--memory-limit-gib", type=float, default=24.0)
    parser.add_argument(
        "--max-task-accounts",
        type=int,
        help="also run the communities stage with this graph.refine_max_task_accounts, compared",
    )
    parser.add_argument(
        "--only-cut",
        action="store_true",
        help="with --max-task-accounts: run the communities stage with the cap only (no uncut run)",
    )
    parser.add_argument("--home", help="a farmwatch home to keep (created if missing, reused)")
    parser.add_argument(
        "--communities-only",
        action="store_true",
        help="with --home and one --lake: reuse the home's graph tables, time communities only",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args()

    if args.child:
        print("RESULT " + json.dumps(one_world(args)), flush=True)
        return
    if args.communities_only and not (args.home and len(args.lake or []) == 1):
        parser.error("--communities-only needs --home and exactly one --lake")
    worlds = [["--lake", lake] for lake in args.lake or []] or [
        ["--accounts", str(n)] for n in (args.accounts or [1_000_000, 10_000_000])
    ]
    runs = []
    for world in worlds:
        print(f"world {world[1]} ...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--seed", str(args.seed), *world]
            + (
                ["--max-task-accounts", str(args.max_task_accounts)]
                if args.max_task_accounts
                else []
            )
            + (["--only-cut"] if args.only_cut else [])
            + (["--home", args.home] if args.home else [])
            + (["--communities-only"] if args.communities_only else []),
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        line = next(x for x in child.stdout.splitlines() if x.startswith("RESULT "))
        runs.append(json.loads(line.removeprefix("RESULT ")))
        print(json.dumps(runs[-1]), flush=True)
    small, large = runs[0], runs[-1]
    failed = [r for r in runs if "failed_in" in r]
    result: dict[str, Any] = {
        "benchmark": "scale",
        "worlds": runs,
        "account_ratio": round(large["accounts"] / small["accounts"], 2),
        "time_ratio": None
        if failed or "graph_plus_communities_seconds" not in large
        else round(
            large["graph_plus_communities_seconds"] / small["graph_plus_communities_seconds"], 2
        ),
        "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
        "memory_limit_gib": args.memory_limit_gib,
        "machine": {"nproc": os.cpu_count()},
        "completed": not failed,
    }
    result["within_memory"] = not failed and result["peak_rss_gib"] <= args.memory_limit_gib
    result["time_ratio_within_account_ratio"] = (
        None if result["time_ratio"] is None else result["time_ratio"] <= result["account_ratio"]
    )
    write_result(result, args.out)


if __name__ == "__main__":
    main()
