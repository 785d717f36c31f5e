"""Benchmark: does the champion catch a farm operator it never saw in training?

Trains on a ``mixed-operators`` world (operators echo..india, no distillation campaign) and
scores a ``distillation-campaign`` world generated with another seed (operators distill,
alpha..delta: all unseen), through the real training and nightly flows. Reports, against the
test world's ground truth: AUROC and AUPRC (farm vs legitimate), recall of campaign accounts
at the highest-recall threshold where precision over all flagged accounts is at least 99% and
99.5%, the same at the configured ban threshold, and what the published ban list does (its
``ban`` rows, and farm and legitimate accounts sent to ``review``). Writes JSON and the PR curve
(PNG).

    .venv/bin/python benchmarks/bench_unseen_operator.py --accounts 200000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from benchkit import bench_home, write_result


def recall_at_precision(
    y_farm: Any, y_campaign: Any, scores: Any, precision: float
) -> dict[str, float]:
    """Campaign recall at the lowest threshold whose precision (farm vs legit) >= ``precision``."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    farm = np.cumsum(y_farm[order])
    flagged = np.arange(1, len(order) + 1)
    campaign = np.cumsum(y_campaign[order])
    # only cut between distinct scores
    last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]
    ok = (farm / flagged >= precision) & last_of_tie
    if not ok.any():
        return {"threshold": float("nan"), "precision": 0.0, "campaign_recall": 0.0}
    cut = np.flatnonzero(ok)[-1]
    return {
        "threshold": float(scores[order][cut]),
        "precision": float(farm[cut] / flagged[cut]),
        "campaign_recall": float(campaign[cut] / max(y_campaign.sum(), 1)),
        "farm_recall": float(farm[cut] / max(y_farm.sum(), 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--train-seed", type=int, default=21)
    parser.add_argument("--test-seed", type=int, default=22)
    parser.add_argument("--out", default="benchmarks/results/unseen_operator.json")
    parser.add_argument("--plot", default="benchmarks/results/unseen_operator_pr.png")
    args = parser.parse_args()

    home = bench_home("unseen")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    from flows.runtime import configure_prefect_env, settings_for, spark_for
    from jobs.generate import generate
    from jobs.world import build_spec

    configure_prefect_env(settings_for(None))
    from flows.nightly import nightly_flow
    from flows.training import training_flow

    spark = spark_for(settings_for(None))
    worlds = {
        "train": build_spec("mixed-operators", args.accounts, args.train_seed),
        "test": build_spec("distillation-campaign", args.accounts, args.test_seed),
    }
    seconds: dict[str, float] = {}
    for name, spec in worlds.items():
        start = time.perf_counter()
        generate(spark, spec, home / f"lake_{name}")
        seconds[f"generate_{name}"] = round(time.perf_counter() - start, 1)

    def use(name: str) -> None:
        os.environ["FARMWATCH_LAKE__LAKE"] = str(home / f"lake_{name}")
        os.environ["FARMWATCH_LAKE__RUNS"] = str(home / f"runs_{name}")

    use("train")
    start = time.perf_counter()
    trained = training_flow()
    seconds["train_flow"] = round(time.perf_counter() - start, 1)
    use("test")
    start = time.perf_counter()
    summary = nightly_flow(resume=False)
    seconds["nightly_flow"] = round(time.perf_counter() - start, 1)

    run_dir = home / "runs_test" / f"dt={summary['run_date']}"
    scores = pd.read_parquet(run_dir / "scores", columns=["account_id", "score"])
    truth = pd.read_parquet(home / "lake_test" / "ground_truth")
    joined = truth.merge(scores, on="account_id", how="left").fillna({"score": 0.0})
    y_farm = joined["is_farm"].to_numpy(dtype=int)
    y_campaign = joined["is_campaign"].to_numpy(dtype=int)
    score = joined["score"].to_numpy(dtype=float)
    ban_threshold = settings_for(None).bans.ban_threshold
    over = score >= ban_threshold
    # what the published list does (bands, farm membership, own evidence, allowlist)
    listed = pd.read_parquet(run_dir / "banlist.parquet", columns=["account_id", "action"])
    action = joined[["account_id"]].merge(listed, on="account_id", how="left")["action"]
    banned = (action == "ban").to_numpy()
    review = (action == "review").to_numpy()
    result: dict[str, Any] = {
        "benchmark": "unseen_operator",
        "accounts": args.accounts,
        "train_world": {"scenario": "mixed-operators", "seed": args.train_seed},
        "test_world": {"scenario": "distillation-campaign", "seed": args.test_seed},
        "train_holdout": trained["metrics"],
        "auroc": float(roc_auc_score(y_farm, score)),
        "auprc": float(average_precision_score(y_farm, score)),
        "campaign_auroc": float(roc_auc_score(y_campaign, score)),
        "at_precision_0.99": recall_at_precision(y_farm, y_campaign, score, 0.99),
        "at_precision_0.995": recall_at_precision(y_farm, y_campaign, score, 0.995),
        "at_ban_threshold": {
            "threshold": ban_threshold,
            "precision": float(y_farm[over].mean()) if over.any() else 0.0,
            "campaign_recall": float(y_campaign[over].sum() / max(y_campaign.sum(), 1)),
            "farm_recall": float(y_farm[over].sum() / max(y_farm.sum(), 1)),
            "legit_over_threshold": int((over & (y_farm == 0)).sum()),
        },
        "ban_list": {
            "precision": float(y_farm[banned].mean()) if banned.any() else 0.0,
            "campaign_recall": float(y_campaign[banned].sum() / max(y_campaign.sum(), 1)),
            "farm_recall": float(y_farm[banned].sum() / max(y_farm.sum(), 1)),
            "false_bans": int((banned & (y_farm == 0)).sum()),
            "farm_in_review": int((review & (y_farm == 1)).sum()),
            "legit_in_review": int((review & (y_farm == 0)).sum()),
        },
        "per_operator_recall_in_ban_list": {
            op: float(banned[(joined["operator"] == op).to_numpy()].mean())
            for op in sorted(joined.loc[joined["is_farm"], "operator"].dropna().unique())
        },
        "seconds": seconds,
    }
    precision, recall, _ = precision_recall_curve(y_farm, score)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot(recall, precision)
    axis.axhline(0.995, linestyle="--", linewidth=0.8, color="grey")
    axis.set_xlabel("recall (farm accounts)")
    axis.set_ylabel("precision")
    axis.set_title("unseen operators: trained on mixed-operators")
    axis.set_ylim(0.9, 1.001)
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    write_result(result, args.out)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
