"""Benchmark: the graphframes components backend beside local, spark and igraph on one link graph.

Takes the account links and accounts of a run (``--run <home>/runs/dt=<date>``, written by the
graph stage) or generates a ``distillation-campaign`` world of ``--accounts`` accounts and runs
ingest and the graph stage once. Then, ``--repeats`` times each (medians reported), end to end
(edge Parquet in, one label per account written as Parquet out):

- ``igraph``: links Parquet -> pyarrow -> igraph connected components on the driver -> labels
  written with pyarrow (the C reference);
- ``local`` and ``spark``: farmwatch's backends (scipy on the driver; randomized contraction,
  the residual graph of at most ``graph.spark_finish_edges`` links finished on the driver);
- ``graphframes_<algorithm>``: ``GraphFrame.connectedComponents`` with each algorithm of
  ``graph.graphframes_algorithm`` (``two_phase``, ``graphx``, ``randomized_contraction``), in a
  session started with ``spark.packages = ["graphframes"]``.

Component counts of everything written must agree (the script fails otherwise); each backend's
median over igraph's is reported as ``<backend>_ratio_vs_igraph``. When the GraphFrames package
cannot be had (``python -m jobs.core.session fetch graphframes`` says why), the result records that
reason under ``graphframes_unavailable`` and times the others. Writes JSON (default
``benchmarks/results/graphframes.json``).

    .venv/bin/python benchmarks/bench_graphframes.py --accounts 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
import typing
from datetime import date
from pathlib import Path
from typing import Any

import igraph
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from benchkit import bench_home, stage_context, timed, write_result


def parse_args() -> argparse.Namespace:
    """The command line: world size and seed (or a run to reuse), repeats, where to write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", help="a run folder whose graph stage already ran")
    parser.add_argument("--out", default="benchmarks/results/graphframes.json")
    return parser.parse_args()


def prepare_run(
    spark: Any, settings: Any, args: argparse.Namespace, home: Path, result: dict[str, Any]
) -> Any:
    """The ``--run`` folder's layout, or a generated world's after ingest and the graph stage."""
    from jobs.core.layout import RunLayout
    from jobs.graph import stage as graph
    from jobs.ingest import stage as ingest
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    if args.run:
        return RunLayout.at(Path(args.run).resolve())
    lake = settings.lake.lake_path
    start = time.perf_counter()
    generate(spark, build_spec("distillation-campaign", args.accounts, args.seed), lake)
    result["generate_seconds"] = round(time.perf_counter() - start, 1)
    end_date = date.fromisoformat(json.loads((lake / "_world.json").read_text())["end_date"])
    ctx = stage_context(spark, settings, end_date)
    ingest.run(ctx)
    start = time.perf_counter()
    graph.run(ctx)
    result["graph_seconds"] = round(time.perf_counter() - start, 1)
    return ctx.layout


def igraph_labels(links_path: Path, accounts_path: Path, out: Path) -> str:
    """Components with igraph on the driver, one label per account written with pyarrow."""
    links = pq.read_table(links_path, columns=["src", "dst"]).to_pandas()
    ids = pd.read_parquet(accounts_path, columns=["account_id"])["account_id"]
    codes, names = pd.factorize(pd.concat([ids, links["src"], links["dst"]], ignore_index=True))
    n, m = len(ids), len(links)
    graph = igraph.Graph(n=len(names), edges=np.column_stack([codes[n : n + m], codes[n + m :]]))
    membership = np.asarray(graph.connected_components().membership)
    labels = pa.table({"account_id": names.astype(str), "component": membership})
    pq.write_table(labels, out / "igraph.parquet")
    return "igraph"


def candidates(
    spark: Any,
    settings: Any,
    fetched: str,
    accounts: Any,
    paths: tuple[Path, Path, Path],
    result: dict[str, Any],
) -> list[tuple[str, Any]]:
    """Every backend to time, by name; graphframes' algorithms only when the package was had."""
    from jobs.communities.components import connected_components
    from jobs.core.config import GraphSettings

    links_path, accounts_path, out = paths

    def ours(name: str, graph: GraphSettings) -> Any:
        def run() -> str:
            links = spark.read.parquet(str(links_path))
            labels, used = connected_components(spark, accounts, links, graph)
            labels.write.mode("overwrite").parquet(str(out / name))
            assert used == graph.components_backend, (used, graph.components_backend)
            return name

        return run

    base = settings.graph
    found: list[tuple[str, Any]] = [
        ("igraph", lambda: igraph_labels(links_path, accounts_path, out)),
        ("local", ours("local", base.model_copy(update={"components_backend": "local"}))),
        ("spark", ours("spark", base.model_copy(update={"components_backend": "spark"}))),
    ]
    algorithms = typing.get_args(GraphSettings.model_fields["graphframes_algorithm"].annotation)
    if fetched.startswith("unavailable"):
        result["graphframes_unavailable"] = fetched
    else:
        for algorithm in algorithms:
            update = {"components_backend": "graphframes", "graphframes_algorithm": algorithm}
            found.append(
                (
                    f"graphframes_{algorithm}",
                    ours(f"graphframes_{algorithm}", base.model_copy(update=update)),
                )
            )
    return found


def component_count(spark: Any, out: Path, name: str) -> int:
    """Components in what a backend wrote (counted after, not inside, the timing)."""
    if name == "igraph":
        return pq.read_table(out / "igraph.parquet")["component"].to_pandas().nunique()
    return spark.read.parquet(str(out / name)).select("component_id").distinct().count()


def time_all(
    spark: Any, backends: list[tuple[str, Any]], out: Path, repeats: int, result: dict[str, Any]
) -> None:
    """Time every backend, check their component counts agree, and record the ratios."""
    timings: dict[str, Any] = {}
    for name, fn in backends:
        median, runs, written = timed(fn, repeats)
        timings[name] = {
            "median_seconds": median,
            "runs": runs,
            "components": component_count(spark, out, written),
        }
        print(f"{name}: median {median:.2f}s runs {runs}", flush=True)
    counts = {name: t["components"] for name, t in timings.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"component counts disagree: {counts}")
    result["components"] = counts["igraph"]
    result["timings"] = timings
    reference = timings["igraph"]["median_seconds"]
    for name in timings:
        if name != "igraph":
            result[f"{name}_ratio_vs_igraph"] = round(
                timings[name]["median_seconds"] / reference, 2
            )


def main() -> None:
    """Time every components backend on one link graph and write the JSON."""
    args = parse_args()
    home = bench_home("graphframes")
    from jobs.core.session import fetch

    fetched = fetch(["graphframes"])["graphframes"]
    if not fetched.startswith("unavailable"):
        os.environ["FARMWATCH_SPARK__PACKAGES"] = json.dumps(["graphframes"])

    from flows.runtime import settings_for, spark_for

    settings = settings_for(None)
    spark = spark_for(settings)
    result: dict[str, Any] = {"benchmark": "graphframes"}
    layout = prepare_run(spark, settings, args, home, result)
    links_path = layout.account_links
    accounts_path = layout.accepted("signups")
    accounts = spark.read.parquet(str(accounts_path)).select("account_id")
    result["accounts"] = accounts.count()
    result["links"] = spark.read.parquet(str(links_path)).count()
    out = home / "labels"
    paths = (links_path, accounts_path, out)
    out.mkdir(parents=True, exist_ok=True)
    backends = candidates(spark, settings, fetched, accounts, paths, result)
    time_all(spark, backends, out, args.repeats, result)
    result["machine"] = {"nproc": os.cpu_count(), "spark_master": settings.spark.master}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
