"""Not a speed figure: where the campaign went in a run's cut (``graph.refine_max_task_accounts``).

Reads a run's ``graph/refine_cut/parts-<k>`` tables (one per round of cutting, kept by the
communities stage) and the world's ``ground_truth``, and prints, for each round asked for, the
campaign's largest parts and who shares the largest one: farm operators by name, legitimate
accounts by segment. It shows whether a cut separated the campaign from its neighbours or
shaved it together with them. Writes JSON (default ``benchmarks/results/cut-campaign.json``).

    .venv/bin/python benchmarks/inspect_cut.py --run <home>/runs/dt=<date> \
        --truth <lake>/ground_truth --rounds 1,4,8,11
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchkit import write_result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with graph/refine_cut")
    parser.add_argument("--truth", required=True, help="the world's ground_truth table")
    parser.add_argument("--rounds", default="1,4,8,11", help="rounds to read, comma separated")
    parser.add_argument("--top", type=int, default=8, help="members of the largest part shown")
    parser.add_argument("--out", default="benchmarks/results/cut-campaign.json")
    return parser.parse_args()


def inspect(spark: Any, run: Path, truth_path: str, rounds: list[int], top: int) -> list[dict]:
    """Per round: the campaign's three largest parts and the make-up of the largest."""
    from pyspark.sql import functions as F

    truth = (
        spark.read.parquet(truth_path)
        .select(
            F.col("account_id").alias("src"),
            F.coalesce("operator", F.concat(F.lit("legitimate "), "segment")).alias("who"),
            "is_campaign",
        )
        .cache()
    )
    found = []
    for k in rounds:
        parts = spark.read.parquet(str(run / "graph" / "refine_cut" / f"parts-{k}")).join(
            truth, "src"
        )
        largest = (
            parts.where("is_campaign")
            .groupBy("part")
            .agg(F.count("*").alias("campaign"))
            .orderBy(F.desc("campaign"), "part")
            .limit(3)
            .collect()
        )
        if not largest:
            found.append({"round": k, "campaign_parts": []})
            continue
        part = parts.where(F.col("part") == largest[0]["part"])
        members = part.groupBy("who").count().orderBy(F.desc("count"), "who").limit(top).collect()
        row = {
            "round": k,
            "campaign_parts": [r["campaign"] for r in largest],
            "largest_part_accounts": part.count(),
            "largest_part_members": {r["who"]: r["count"] for r in members},
        }
        found.append(row)
        print(
            f"round {k}: campaign in its largest parts {row['campaign_parts']}; that part has "
            f"{row['largest_part_accounts']:,} accounts: "
            + ", ".join(f"{who} {n:,}" for who, n in row["largest_part_members"].items()),
            flush=True,
        )
    return found


def main() -> None:
    args = parse_args()
    from jobs.core.config import SparkSettings
    from jobs.core.session import build_session

    spark = build_session(SparkSettings(master="local[*]", driver_memory="6g"))
    rounds = [int(r) for r in args.rounds.split(",") if r]
    run = Path(args.run)
    result = {
        "benchmark": "cut-campaign",
        "run": str(run),
        "truth": args.truth,
        "rounds": inspect(spark, run, args.truth, rounds, args.top),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
