"""Benchmark: the quality matrix. Is the campaign caught, over seeds, sizes and unseen operators?

Two kinds of cell, each through the real training and nightly flows:

- ``same``: train on a world and run the nightly flow on the same world (the demo's shape: the
  campaign has only its 2% of labels, all of them after the training cut-off);
- ``unseen``: train on a ``mixed-operators`` world of the same seed (operators echo..india) and
  run the nightly flow on the campaign world, none of whose operators the model has seen.

Campaign worlds: ``distillation-campaign`` (ordinary cells), ``evasive-campaign`` (the campaign
keeps no shared hard key: one card, device, client and email domain per account),
``blended-campaign`` (evasive, and its schedule, volumes and prompts blended towards ordinary
users) and ``dual-stack-campaign`` (45% of sessions over IPv6, and the campaign run twice: over
IPv4 proxies, and rotating through IPv6 /64s; its bar compares the twins). Per cell, against
ground truth: the campaign's accounts banned and banned-or-in-review, the ban list's precision,
false bans (and which legitimate segments they came from), legitimate accounts sent to review,
every operator's banned share, the training's cross-validation figures and the largest single
feature's share of gain. Bars (issue 16) are checked per cell; the summary says which cells
fail. Writes one JSON per cell under ``--out``, and ``quality-<size>.json`` with
``quality-<size>.png`` (recall and false bans per cell), rebuilt from every cell of that size
under ``--out`` (so several invocations add up). ``--remeasure`` reads the lists already
published in ``--work`` again and rewrites their cells' measurements (nothing is run), for a
measurement added after the cells ran. ``--set bans.own_evidence_min_score=0.4`` (repeatable)
runs every flow of the invocation with that setting changed, for trying a setting over the
matrix; give such a run its own ``--out`` and ``--work``.

    .venv/bin/python benchmarks/bench_quality.py --size 20000 --seeds 1-8
    .venv/bin/python benchmarks/bench_quality.py --size 200000 --seeds 1-3

Worlds are generated once under ``--work`` and reused by later invocations.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

CONFOUNDERS = ("family", "office", "university", "cgnat", "vpn", "power_user", "spike")
ORDINARY_BARS = {"campaign_banned": 0.90, "campaign_banned_or_review": 0.98, "precision": 0.995}
BARS = {
    "distillation-campaign": ORDINARY_BARS,
    # the campaign twice, once over IPv4 proxies and once rotating through IPv6 /64s: the
    # ordinary bars, and the IPv6 twin caught as well as the IPv4 one (within 2 points)
    "dual-stack-campaign": {**ORDINARY_BARS, "ipv6_twin_vs_ipv4": -0.02},
    "evasive-campaign": {"campaign_banned_or_review": 0.80},
    "blended-campaign": {},
}


def seeds_of(text: str) -> list[int]:
    """``"1-8"`` or ``"1,3,7"`` -> seeds."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def world_home(work: Path, scenario: str, size: int, seed: int) -> Path:
    return work / f"{scenario}-{size}-s{seed}"


def ensure_world(spark: Any, home: Path, scenario: str, size: int, seed: int) -> float:
    """Generate the world's lake unless an identical one is there; returns seconds spent."""
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    spec = build_spec(scenario, size, seed)
    meta = home / "lake" / "_world.json"
    if meta.is_file() and json.loads(meta.read_text())["spec"] == json.loads(spec.to_json()):
        return 0.0
    start = time.perf_counter()
    shutil.rmtree(home, ignore_errors=True)  # runs, registry and lists of an older world
    generate(spark, spec, home / "lake")
    return time.perf_counter() - start


OVERRIDES: dict[str, str] = {}  # --set section.key=value, as section__key


def use(home: Path, **settings: str) -> None:
    """Point farmwatch's settings (read from the environment by every flow) at one cell."""
    for key in [k for k in os.environ if k.startswith("FARMWATCH_")]:
        del os.environ[key]
    os.environ["FARMWATCH_LAKE__HOME"] = str(home)
    for key, value in {**OVERRIDES, **settings}.items():
        os.environ[f"FARMWATCH_{key.upper()}"] = value


def measure(home: Path, bucket: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What the published list did, against the world's ground truth."""
    import pandas as pd

    latest = json.loads((bucket / "banlists" / "latest.json").read_text())
    listed = pd.read_parquet(bucket / latest["prefix"] / "banlist.parquet")
    truth = pd.read_parquet(home / "lake" / "ground_truth")
    listed["held"] = listed["reasons"].map(_held_by_farm_floor)
    joined = truth.merge(listed[["account_id", "action", "held"]], on="account_id", how="left")
    held = joined["held"].eq(True)  # accounts not listed have no row: not held
    banned = joined["action"] == "ban"
    review = joined["action"] == "review"
    farm, campaign = joined["is_farm"], joined["is_campaign"]
    legit = ~farm
    false = joined[banned & legit]
    operators = sorted(joined.loc[farm, "operator"].dropna().unique())

    def by_operator(mask: Any) -> dict[str, float]:
        return {op: float(mask[joined["operator"] == op].mean()) for op in operators}

    banned_share = by_operator(banned)

    return {
        "campaign_accounts": int(campaign.sum()),
        "campaign_banned": float(banned[campaign].mean()),
        "campaign_banned_or_review": float((banned | review)[campaign].mean()),
        "campaign_review": float(review[campaign].mean()),
        "farm_banned": float(banned[farm].mean()),
        "banned": int(banned.sum()),
        "precision": float(farm[banned].mean()) if banned.any() else 1.0,
        "false_bans": int(len(false)),
        "false_ban_segments": false["segment"].value_counts().to_dict(),
        "confounders_banned": {
            s: int((banned & (joined["segment"] == s)).sum()) for s in CONFOUNDERS
        },
        "legit_in_review": int((review & legit).sum()),
        "legit_review_segments": joined[review & legit]["segment"].value_counts().to_dict(),
        # sent to review by bans.min_farm_bans: too few sure members of their farm candidate
        "held_by_farm_floor": {
            "farm": int((held & farm).sum()),
            "legit": int((held & legit).sum()),
        },
        "operators_banned": banned_share,
        "operators_banned_or_review": by_operator(banned | review),
        "stage_seconds": {k: round(v, 1) for k, v in summary.get("stage_seconds", {}).items()},
        **_twins(banned_share),
    }


def _held_by_farm_floor(reasons: Any) -> bool:
    """Whether a listed row's reasons are led by the farm floor's (``bans.min_farm_bans``)."""
    from jobs.banlists.actions import FARM_FLOOR_REASON

    floor = re.escape(FARM_FLOOR_REASON).replace("%d", r"\d+")
    return reasons is not None and len(reasons) > 0 and re.fullmatch(floor, reasons[0]) is not None


def _twins(banned_share: dict[str, float]) -> dict[str, float]:
    """The IPv6 campaign's banned share minus its IPv4 twin's (dual-stack worlds only)."""
    if not {"op_distill", "op_distill6"} <= set(banned_share):
        return {}
    return {"ipv6_twin_vs_ipv4": banned_share["op_distill6"] - banned_share["op_distill"]}


def check_bars(scenario: str, result: dict[str, Any]) -> list[str]:
    """The bars this cell misses (empty when it meets them all)."""
    missed = [
        f"{name} {result[name]:.4f} < {bar}"
        for name, bar in BARS[scenario].items()
        if result[name] < bar
    ]
    if result["false_bans"]:
        missed.append(f"{result['false_bans']} false bans")
    return missed


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [c["cell"] for c in cells]
    banned = [c["campaign_banned"] for c in cells]
    either = [c["campaign_banned_or_review"] for c in cells]
    figure, axis = plt.subplots(figsize=(max(8, 0.42 * len(cells)), 4.8))
    xs = range(len(cells))
    axis.bar(xs, either, color="#f2c14e", label="campaign banned or in review")
    axis.bar(xs, banned, color="#2a6f97", label="campaign banned")
    for x, cell in zip(xs, cells, strict=True):
        colour = "#c1121f" if cell["false_bans"] else "#2b9348"
        axis.annotate(str(cell["false_bans"]), (x, 1.02), ha="center", fontsize=7, color=colour)
    axis.set_xticks(list(xs), labels, rotation=90, fontsize=7)
    axis.set_ylim(0, 1.1)
    axis.axhline(0.9, linestyle="--", linewidth=0.7, color="grey")
    axis.set_ylabel("share of the campaign's accounts")
    axis.set_title("quality matrix (numbers on top: false bans)")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--seeds", default="1-8")
    parser.add_argument("--kinds", default="same,unseen")
    parser.add_argument(
        "--scenarios", default="distillation-campaign,evasive-campaign,blended-campaign"
    )
    parser.add_argument("--work", default="var/bench-quality")
    parser.add_argument("--out", default="benchmarks/results/quality")
    parser.add_argument("--remeasure", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    changed: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            parser.error(f"--set takes section.key=value, got {item!r}")
        changed[key] = value
    OVERRIDES.update({key.replace(".", "__"): value for key, value in changed.items()})

    work = Path(args.work).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.remeasure:
        remeasure(work, out, args)
        summarise(out, args.size)
        return
    from flows.runtime import configure_prefect_env, settings_for, spark_for

    os.environ["FARMWATCH_LAKE__HOME"] = str(work / "_prefect")
    configure_prefect_env(settings_for(None))  # one Prefect home for every cell
    from flows.nightly import nightly_flow
    from flows.training import training_flow

    spark = spark_for(settings_for(None))
    kinds = args.kinds.split(",")
    for seed in seeds_of(args.seeds):
        mixed = world_home(work, "mixed-operators", args.size, seed)
        mixed_model: dict[str, Any] | None = None
        for scenario in args.scenarios.split(","):
            home = world_home(work, scenario, args.size, seed)
            generated = ensure_world(spark, home, scenario, args.size, seed)
            for kind in kinds:
                name = f"{args.size}-{scenario}-{kind}-s{seed}"
                start = time.perf_counter()
                if kind == "same":
                    use(home)
                    trained = training_flow()
                    use(home, publish__target=str(home / "bucket-same"))
                    bucket = home / "bucket-same"
                else:
                    if mixed_model is None:
                        ensure_world(spark, mixed, "mixed-operators", args.size, seed)
                        use(mixed)
                        mixed_model = training_flow()
                    trained = mixed_model
                    registry = f"sqlite:///{mixed / 'mlflow.db'}"
                    bucket = home / "bucket-unseen"
                    use(home, model__tracking_uri=registry, publish__target=str(bucket))
                summary = nightly_flow()
                result = {
                    "cell": name,
                    "size": args.size,
                    "scenario": scenario,
                    "kind": kind,
                    "seed": seed,
                    "trained_on": "mixed-operators" if kind == "unseen" else scenario,
                    "settings_changed": changed,
                    "training": {
                        "metrics": trained["metrics"],
                        "cross_validation": trained.get("training", {}),
                    },
                    **measure(home, bucket, summary),
                    "seconds": round(time.perf_counter() - start, 1),
                    "generate_seconds": round(generated, 1),
                }
                result["bars_missed"] = check_bars(scenario, result)
                (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
                print(
                    f"{name}: campaign banned {result['campaign_banned']:.4f}, banned or "
                    f"review {result['campaign_banned_or_review']:.4f}, precision "
                    f"{result['precision']:.4f}, false bans {result['false_bans']}, legit "
                    f"in review {result['legit_in_review']}"
                    + (f"  MISSED: {result['bars_missed']}" if result["bars_missed"] else ""),
                    flush=True,
                )
    summarise(out, args.size)


def remeasure(work: Path, out: Path, args: argparse.Namespace) -> None:
    """Measure the cells' published lists again; cells whose list or JSON is gone are skipped."""
    for seed in seeds_of(args.seeds):
        for scenario in args.scenarios.split(","):
            home = world_home(work, scenario, args.size, seed)
            for kind in args.kinds.split(","):
                path = out / f"{args.size}-{scenario}-{kind}-s{seed}.json"
                bucket = home / f"bucket-{kind}"
                if not path.is_file() or not (bucket / "banlists" / "latest.json").is_file():
                    print(f"{path.stem}: skipped (no cell JSON or no published list)")
                    continue
                result = json.loads(path.read_text())
                result.update(measure(home, bucket, result))
                result["bars_missed"] = check_bars(scenario, result)
                path.write_text(json.dumps(result, indent=2, default=str))
                print(f"{path.stem}: held by the farm floor {result['held_by_farm_floor']}")


def summarise(out: Path, size: int) -> None:
    """``quality-<size>.json`` and ``.png`` from every cell of that size under ``out``."""
    cells = [json.loads(p.read_text()) for p in sorted(out.glob(f"{size}-*.json"))]
    order = {s: i for i, s in enumerate(BARS)}
    cells.sort(key=lambda c: (order.get(c["scenario"], 9), c["kind"], c["seed"]))
    summary_path = out / f"quality-{size}.json"
    table = {
        "size": size,
        "cells": len(cells),
        "cells_missing_a_bar": [c["cell"] for c in cells if c["bars_missed"]],
        "false_bans_total": sum(c["false_bans"] for c in cells),
        "confounders_banned_total": sum(sum(c["confounders_banned"].values()) for c in cells),
        "rows": [
            {
                k: c[k]
                for k in (
                    "cell",
                    "campaign_banned",
                    "campaign_banned_or_review",
                    "precision",
                    "false_bans",
                    "legit_in_review",
                    "bars_missed",
                )
            }
            for c in cells
        ],
    }
    summary_path.write_text(json.dumps(table, indent=2))
    plot(cells, out / f"quality-{size}.png")
    print(json.dumps({k: v for k, v in table.items() if k != "rows"}, indent=2))
    print(f"wrote {summary_path} and {out / f'quality-{size}.png'}")


if __name__ == "__main__":
    main()
