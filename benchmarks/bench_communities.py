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
from pathlib import Path
from typing import Any

import igraph
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from benchkit import bench_home, stage_context, timed, write_result


def parse_args() -> argparse.Namespace:
    """The command line: world size and seed (or a lake to reuse), repeats, where to write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lake", help="reuse a generated world instead of generating one")
    parser.add_argument("--skip-spark-backend", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/communities.json")
    return parser.parse_args()


def prepare_run(
    spark: Any, settings: Any, args: argparse.Namespace, home: Path, result: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Generate the world unless reused, then run ingest and the graph stage once, timed."""
    from jobs.graph import stage as graph
    from jobs.ingest import stage as ingest
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    lake = settings.lake.lake_path
    if not args.lake:
        start = time.perf_counter()
        generate(spark, build_spec("distillation-campaign", args.accounts, args.seed), lake)
        result["generate_seconds"] = round(time.perf_counter() - start, 1)
    end_date = date.fromisoformat(json.loads((lake / "_world.json").read_text())["end_date"])
    ctx = stage_context(spark, settings, end_date)
    start = time.perf_counter()
    ingest.run(ctx)
    result["ingest_seconds"] = round(time.perf_counter() - start, 1)
    tables = ingest.load_accepted(spark, ctx.layout)
    start = time.perf_counter()
    result["graph"] = graph.run(ctx)
    result["graph_seconds"] = round(time.perf_counter() - start, 1)
    return ctx, tables


def igraph_components(layout: Any) -> int:
    """Connected components of the account links with igraph on the driver (the C reference)."""
    links = pq.read_table(layout.account_links, columns=["src", "dst"]).to_pandas()
    ids = pd.read_parquet(layout.accepted("signups"), columns=["account_id"])
    codes, _ = pd.factorize(
        pd.concat([ids["account_id"], links["src"], links["dst"]], ignore_index=True)
    )
    n, m = len(ids), len(links)
    edges = np.column_stack([codes[n : n + m], codes[n + m :]])
    graph = igraph.Graph(n=int(codes.max()) + 1, edges=edges)
    return len(graph.connected_components())


def igraph_leiden(settings: Any, layout: Any) -> int:
    """One igraph Leiden (modularity) over the refinement graph read from Parquet."""
    from jobs.graph.entities import EVIDENCE_KIND, LINK_ENTITY_TYPES

    stats = pq.read_table(layout.entity_stats).to_pandas()
    usable = stats[(~stats["is_hub"]) & (stats["degree"] >= 2)]
    soft = ~usable["entity_type"].isin(LINK_ENTITY_TYPES)
    family = usable["entity_type"].map(EVIDENCE_KIND).fillna("other")
    weight = (
        usable["weight"].clip(lower=1e-3)
        * np.where(soft, settings.graph.soft_key_weight, 1.0)
        * family.map(settings.graph.refine_kind_weights).fillna(1.0).to_numpy()
    )
    usable = usable.assign(weight=weight)
    members = pq.read_table(layout.account_entities).to_pandas()
    edges = members.merge(usable, on=["entity_type", "entity_id"])
    entity = edges["entity_type"] + ":" + edges["entity_id"]
    codes, names = pd.factorize(pd.concat([edges["account_id"], "~" + entity], ignore_index=True))
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


def time_all(
    spark: Any, settings: Any, args: argparse.Namespace, home: Path, ctx: Any, accounts: Any
) -> dict[str, Any]:
    """Time igraph, our components backends, the communities stage and igraph Leiden."""
    from jobs.communities import stage as communities
    from jobs.communities.components import connected_components

    layout = ctx.layout

    def ours(backend: str) -> Any:
        def run() -> str:
            graph = settings.graph.model_copy(update={"components_backend": backend})
            links = spark.read.parquet(str(layout.account_links))
            labels, _ = connected_components(spark, accounts, links, graph)
            labels.write.mode("overwrite").parquet(str(home / f"components_{backend}"))
            return backend

        return run

    def written_components(backend: str) -> int:
        """Component count of what a backend wrote (checked after, not inside, the timing)."""
        written = spark.read.parquet(str(home / f"components_{backend}"))
        return written.select("component_id").distinct().count()

    def stage() -> dict[str, Any]:
        return communities.run(ctx)

    timings: dict[str, Any] = {}
    for name, fn in (
        ("igraph_components", lambda: igraph_components(layout)),
        ("auto_components", ours("auto")),
        *([] if args.skip_spark_backend else [("spark_components", ours("spark"))]),
        ("communities_stage", stage),
        ("igraph_leiden", lambda: igraph_leiden(settings, layout)),
    ):
        median, runs, value = timed(fn, args.repeats)
        if name in ("auto_components", "spark_components"):
            value = written_components(value)
        timings[name] = {"median_seconds": median, "runs": runs, "result": value}
        print(f"{name}: median {median:.1f}s runs {runs} -> {value}", flush=True)
    return timings


def add_ratios(result: dict[str, Any], timings: dict[str, Any]) -> None:
    """Check the component counts agree, then record them, the timings and the ratios."""
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


def quality(spark: Any, lake: Path, layout: Any) -> dict[str, Any]:
    """Community quality on ground truth, for components and for refined communities."""
    from pyspark.sql import functions as F

    from jobs.report.summary import community_quality

    truth = spark.read.parquet(str(lake / "ground_truth"))
    table = spark.read.parquet(str(layout.communities))
    return {
        "components": community_quality(table, truth, "component_id"),
        "communities": community_quality(table, truth, "community_id"),
        "largest_component": table.groupBy("component_id").count().agg(F.max("count")).first()[0],
        "largest_community": table.groupBy("community_id").count().agg(F.max("count")).first()[0],
    }


def main() -> None:
    """Run the stages once, time every components and communities way, and write the JSON."""
    args = parse_args()
    home = bench_home("communities", args.lake)
    from flows.runtime import settings_for, spark_for

    settings = settings_for(None)
    spark = spark_for(settings)
    result: dict[str, Any] = {"benchmark": "communities", "accounts": args.accounts}
    ctx, tables = prepare_run(spark, settings, args, home, result)
    accounts = tables["signups"].select("account_id")
    n_accounts = result["graph"]["accounts"]
    timings = time_all(spark, settings, args, home, ctx, accounts)
    add_ratios(result, timings)
    result["quality"] = quality(spark, settings.lake.lake_path, ctx.layout)
    result["machine"] = {"nproc": os.cpu_count(), "spark_master": settings.spark.master}
    result["accounts"] = n_accounts
    write_result(result, args.out)


if __name__ == "__main__":
    main()
