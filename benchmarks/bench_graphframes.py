"""Benchmark: the graphframes components backend beside local, spark and igraph on one link graph.

Takes the account links and accounts of a run (``--run <home>/runs/dt=<date>``, written by the
graph stage) or generates a ``distillation-campaign`` world of ``--accounts`` accounts and runs
ingest and the graph stage once. Then, ``--repeats`` times each (medians reported), end to end
(edge Parquet in, one label per account written as Parquet out):

- ``igraph``: links Parquet -> pyarrow -> igraph connected components on the driver -> labels
  written with pyarrow (the C reference);
- ``local`` and ``spark``: farmwatch's backends (scipy on the driver; large-star/small-star);
- ``graphframes_<algorithm>``: ``GraphFrame.connectedComponents`` with each algorithm of
  ``graph.graphframes_algorithm`` (``two_phase``, ``graphx``, ``randomized_contraction``), in a
  session started with ``spark.packages = ["graphframes"]``.

Component counts of everything written must agree (the script fails otherwise); each backend's
median over igraph's is reported as ``<backend>_ratio_vs_igraph``. When the GraphFrames package
cannot be had (``python -m jobs.spark fetch graphframes`` says why), the result records that
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

from benchkit import bench_home, timed, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", help="a run folder whose graph stage already ran")
    parser.add_argument("--out", default="benchmarks/results/graphframes.json")
    args = parser.parse_args()

    home = bench_home("graphframes")
    from jobs.spark import fetch

    fetched = fetch(["graphframes"])["graphframes"]
    if not fetched.startswith("unavailable"):
        os.environ["FARMWATCH_SPARK__PACKAGES"] = json.dumps(["graphframes"])

    import igraph
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.runtime import settings_for, spark_for
    from jobs import communities, ingest
    from jobs.components import connected_components
    from jobs.config import GraphSettings
    from jobs.generate import generate
    from jobs.world import build_spec

    settings = settings_for(None)
    spark = spark_for(settings)
    result: dict[str, Any] = {"benchmark": "graphframes"}
    if args.run:
        run_dir = Path(args.run).resolve()
    else:
        lake = settings.lake.lake_path
        start = time.perf_counter()
        generate(spark, build_spec("distillation-campaign", args.accounts, args.seed), lake)
        result["generate_seconds"] = round(time.perf_counter() - start, 1)
        end_date = date.fromisoformat(json.loads((lake / "_world.json").read_text())["end_date"])
        run_dir = home / "runs" / f"dt={end_date.isoformat()}"
        ingest.run(spark, settings, end_date, run_dir)
        tables = ingest.load_accepted(spark, run_dir)
        start = time.perf_counter()
        communities.build_graph(spark, settings, tables, run_dir)
        result["graph_seconds"] = round(time.perf_counter() - start, 1)
    links_path = run_dir / "graph" / "account_links"
    accounts_path = run_dir / "accepted" / "signups"
    accounts = spark.read.parquet(str(accounts_path)).select("account_id")
    result["accounts"] = accounts.count()
    result["links"] = spark.read.parquet(str(links_path)).count()
    out = home / "labels"

    def igraph_components() -> str:
        links = pq.read_table(links_path, columns=["src", "dst"]).to_pandas()
        ids = pd.read_parquet(accounts_path, columns=["account_id"])["account_id"]
        codes, names = pd.factorize(pd.concat([ids, links["src"], links["dst"]], ignore_index=True))
        n, m = len(ids), len(links)
        graph = igraph.Graph(
            n=len(names), edges=np.column_stack([codes[n : n + m], codes[n + m :]])
        )
        membership = np.asarray(graph.connected_components().membership)
        labels = pa.table({"account_id": names.astype(str), "component": membership})
        pq.write_table(labels, out / "igraph.parquet")
        return "igraph"

    def ours(name: str, graph: GraphSettings) -> Any:
        def run() -> str:
            links = spark.read.parquet(str(links_path))
            labels, used = connected_components(spark, accounts, links, graph)
            labels.write.mode("overwrite").parquet(str(out / name))
            assert used == graph.components_backend, (used, graph.components_backend)
            return name

        return run

    def component_count(name: str) -> int:
        """Components in what a backend wrote (counted after, not inside, the timing)."""
        if name == "igraph":
            return pq.read_table(out / "igraph.parquet")["component"].to_pandas().nunique()
        return spark.read.parquet(str(out / name)).select("component_id").distinct().count()

    out.mkdir(parents=True, exist_ok=True)
    base = settings.graph
    candidates: list[tuple[str, Any]] = [
        ("igraph", igraph_components),
        ("local", ours("local", base.model_copy(update={"components_backend": "local"}))),
        ("spark", ours("spark", base.model_copy(update={"components_backend": "spark"}))),
    ]
    algorithms = typing.get_args(GraphSettings.model_fields["graphframes_algorithm"].annotation)
    if fetched.startswith("unavailable"):
        result["graphframes_unavailable"] = fetched
    else:
        for algorithm in algorithms:
            update = {"components_backend": "graphframes", "graphframes_algorithm": algorithm}
            candidates.append(
                (
                    f"graphframes_{algorithm}",
                    ours(f"graphframes_{algorithm}", base.model_copy(update=update)),
                )
            )
    timings: dict[str, Any] = {}
    for name, fn in candidates:
        median, runs, written = timed(fn, args.repeats)
        timings[name] = {
            "median_seconds": median,
            "runs": runs,
            "components": component_count(written),
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
    result["machine"] = {"nproc": os.cpu_count(), "spark_master": settings.spark.master}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
