"""Benchmark: graph and communities stages against igraph, and community quality on ground truth.

Generates a ``distillation-campaign`` world of ``--accounts`` accounts (or reuses ``--lake``),
runs ingest and the graph stage once, then, ``--repeats`` times each (medians reported):

- ``igraph_components``: account links Parquet -> pyarrow -> igraph graph -> connected components
  on the driver (the C reference);
- ``auto_components`` / ``spark_components``: the same links Parquet -> our backend -> component
  labels written as Parquet (end to end, edge Parquet in, labels out); the written labels are
  counted after the timing, as igraph's count is a by-product of its own run;
- ``communities_stage``: the whole communities stage (components, Leiden refinement per large
  component, density and binding entities, written);
- ``igraph_leiden``: one igraph Leiden (modularity) on the driver over the same refinement graph
  (account-entity edges, IDF weights) read from Parquet.

Component counts must agree between igraph and every backend (the script fails otherwise).
Quality on ground truth (``jobs.report.community_quality``) is reported for components and for
refined communities. Writes JSON (default ``benchmarks/results/communities.json``).

    .venv/bin/python benchmarks/bench_communities.py --accounts 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import date
from typing import Any

from benchkit import bench_home, timed, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lake", help="reuse a generated world instead of generating one")
    parser.add_argument("--skip-spark-backend", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/communities.json")
    args = parser.parse_args()

    home = bench_home("communities", args.lake)
    import igraph
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from flows.runtime import settings_for, spark_for
    from jobs import communities, ingest
    from jobs.components import connected_components
    from jobs.generate import generate
    from jobs.graph import EVIDENCE_KIND, LINK_ENTITY_TYPES
    from jobs.report import community_quality
    from jobs.world import build_spec

    settings = settings_for(None)
    spark = spark_for(settings)
    lake = settings.lake.lake_path
    result: dict[str, Any] = {"benchmark": "communities", "accounts": args.accounts}
    if not args.lake:
        start = time.perf_counter()
        generate(spark, build_spec("distillation-campaign", args.accounts, args.seed), lake)
        result["generate_seconds"] = round(time.perf_counter() - start, 1)
    end_date = date.fromisoformat(json.loads((lake / "_world.json").read_text())["end_date"])
    run_dir = home / "runs" / end_date.isoformat()
    start = time.perf_counter()
    ingest.run(spark, settings, end_date, run_dir)
    result["ingest_seconds"] = round(time.perf_counter() - start, 1)
    tables = ingest.load_accepted(spark, run_dir)
    start = time.perf_counter()
    result["graph"] = communities.build_graph(spark, settings, tables, run_dir)
    result["graph_seconds"] = round(time.perf_counter() - start, 1)
    graph_dir = run_dir / "graph"
    accounts = tables["signups"].select("account_id")
    n_accounts = result["graph"]["accounts"]

    def igraph_components() -> int:
        links = pq.read_table(graph_dir / "account_links", columns=["src", "dst"]).to_pandas()
        ids = pd.read_parquet(run_dir / "accepted" / "signups", columns=["account_id"])
        codes, _ = pd.factorize(
            pd.concat([ids["account_id"], links["src"], links["dst"]], ignore_index=True)
        )
        n, m = len(ids), len(links)
        edges = np.column_stack([codes[n : n + m], codes[n + m :]])
        graph = igraph.Graph(n=int(codes.max()) + 1, edges=edges)
        return len(graph.connected_components())

    def ours(backend: str) -> Any:
        def run() -> str:
            graph = settings.graph.model_copy(update={"components_backend": backend})
            links = spark.read.parquet(str(graph_dir / "account_links"))
            labels, _ = connected_components(spark, accounts, links, graph)
            labels.write.mode("overwrite").parquet(str(home / f"components_{backend}"))
            return backend

        return run

    def written_components(backend: str) -> int:
        """Component count of what a backend wrote (checked after, not inside, the timing)."""
        written = spark.read.parquet(str(home / f"components_{backend}"))
        return written.select("component_id").distinct().count()

    def stage() -> dict[str, Any]:
        return communities.find_communities(spark, settings, accounts, run_dir)

    def igraph_leiden() -> int:
        stats = pq.read_table(graph_dir / "entity_stats").to_pandas()
        usable = stats[(~stats["is_hub"]) & (stats["degree"] >= 2)]
        soft = ~usable["entity_type"].isin(LINK_ENTITY_TYPES)
        family = usable["entity_type"].map(EVIDENCE_KIND).fillna("other")
        weight = (
            usable["weight"].clip(lower=1e-3)
            * np.where(soft, settings.graph.soft_key_weight, 1.0)
            * family.map(settings.graph.refine_kind_weights).fillna(1.0).to_numpy()
        )
        usable = usable.assign(weight=weight)
        members = pq.read_table(graph_dir / "account_entities").to_pandas()
        edges = members.merge(usable, on=["entity_type", "entity_id"])
        entity = edges["entity_type"] + ":" + edges["entity_id"]
        codes, names = pd.factorize(
            pd.concat([edges["account_id"], "~" + entity], ignore_index=True)
        )
        m = len(edges)
        graph = igraph.Graph(n=len(names), edges=np.column_stack([codes[:m], codes[m:]]))
        random.seed(settings.graph.leiden_seed)
        igraph.set_random_number_generator(random)
        partition = graph.community_leiden(
            objective_function="modularity",
            weights=edges["weight"].to_numpy(),
            resolution=settings.graph.leiden_resolution,
            n_iterations=settings.graph.leiden_iterations,
        )
        return len(set(partition.membership))

    timings: dict[str, Any] = {}
    for name, fn in (
        ("igraph_components", igraph_components),
        ("auto_components", ours("auto")),
        *([] if args.skip_spark_backend else [("spark_components", ours("spark"))]),
        ("communities_stage", stage),
        ("igraph_leiden", igraph_leiden),
    ):
        median, runs, value = timed(fn, args.repeats)
        if name in ("auto_components", "spark_components"):
            value = written_components(value)
        timings[name] = {"median_seconds": median, "runs": runs, "result": value}
        print(f"{name}: median {median:.1f}s runs {runs} -> {value}", flush=True)
    counts = {
        k: v["result"] for k, v in timings.items() if k.endswith("components") and k != "stage"
    }
    if len(set(counts.values())) != 1:
        raise SystemExit(f"component counts disagree: {counts}")
    result["components"] = counts["igraph_components"]
    result["timings"] = timings
    base = timings["igraph_components"]["median_seconds"]
    result["auto_components_ratio_vs_igraph"] = round(
        timings["auto_components"]["median_seconds"] / base, 2
    )
    if "spark_components" in timings:
        result["spark_components_ratio_vs_igraph"] = round(
            timings["spark_components"]["median_seconds"] / base, 2
        )
    result["communities_stage_ratio_vs_igraph_leiden"] = round(
        timings["communities_stage"]["median_seconds"] / timings["igraph_leiden"]["median_seconds"],
        2,
    )
    truth = spark.read.parquet(str(lake / "ground_truth"))
    table = spark.read.parquet(str(graph_dir / "communities"))
    result["quality"] = {
        "components": community_quality(table, truth, "component_id"),
        "communities": community_quality(table, truth, "community_id"),
        "largest_component": table.groupBy("component_id").count().agg(F.max("count")).first()[0],
        "largest_community": table.groupBy("community_id").count().agg(F.max("count")).first()[0],
    }
    result["machine"] = {"nproc": os.cpu_count(), "spark_master": settings.spark.master}
    result["accounts"] = n_accounts
    write_result(result, args.out)


if __name__ == "__main__":
    main()
