"""Benchmark: the nightly pipeline stage by stage, and each stage part by part.

Generates a ``distillation-campaign`` world of ``--accounts`` accounts (or reuses ``--lake``),
trains a model, runs the nightly flow with every stage recomputed, and records the seconds of
each stage and of its parts (the flow's own timings: a part ends where Spark computed and wrote
something, see ``jobs/core/timing.py``), the wall time of training and of the whole nightly
run, the ground-truth figures and the SHA-256 of the ban list. ``--expect OLD.json`` compares
that digest with an earlier result's (the same world and code must give the same list, bit for
bit). Prints a stage/part table and writes JSON (default ``benchmarks/results/nightly.json``).

``--home DIR`` keeps the home (lake, key, registry) in DIR instead of a temporary folder; run
again with the same DIR, it neither generates nor trains: the nightly alone is measured, with
the same world, key and model (into a fresh bucket), so ``--expect`` checks the list of a change
to the nightly only. The nightly is then the process's first Spark work, so its first stage
also pays the JVM's warm-up, which a run after training does not.

``--core-use`` also writes Spark's event log for the nightly and records, for every stage and
part, the seconds of Spark tasks inside it and the core seconds without one (idle cores, or
the driver's own work): whether a part is short of work or of parallelism
(``benchmarks/core_use.py``). Local masters only.

    .venv/bin/python benchmarks/bench_nightly.py --accounts 1000000
    .venv/bin/python benchmarks/bench_nightly.py --home /tmp/fw1m --out base.json
    .venv/bin/python benchmarks/bench_nightly.py --home /tmp/fw1m --expect base.json
    .venv/bin/python benchmarks/bench_nightly.py --home /tmp/fw1m --core-use
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from benchkit import bench_home, write_result
from core_use import core_use, core_use_table, event_log_conf, local_cores, task_spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lake", help="reuse a generated world instead of generating one")
    parser.add_argument("--out", default="benchmarks/results/nightly.json")
    parser.add_argument(
        "--expect",
        help="an earlier result JSON, or a published banlist.parquet, whose list must be equal",
    )
    parser.add_argument("--home", help="keep the home here; reuse its world and model if present")
    parser.add_argument(
        "--core-use",
        action="store_true",
        help="log Spark's tasks and record each part's task seconds and idle core seconds",
    )
    args = parser.parse_args()

    home = bench_home("nightly", args.lake, args.home)
    trained_file = home / "bench-trained.json"
    reuse = trained_file.exists()  # this home's world and champion: the nightly alone is measured
    if reuse:
        # a fresh bucket: the same run id is already published in the home's, and publishing
        # it again would skip the list's files and the report this benchmark measures
        bucket = tempfile.mkdtemp(prefix="bucket-", dir=home)
        os.environ["FARMWATCH_PUBLISH__TARGET"] = bucket
    event_log = None
    if args.core_use:  # before the settings are read: the Spark settings come from the env
        event_log = Path(tempfile.mkdtemp(prefix="eventlog-", dir=home))
        conf = json.loads(os.environ.get("FARMWATCH_SPARK__CONF") or "{}")
        os.environ["FARMWATCH_SPARK__CONF"] = json.dumps({**conf, **event_log_conf(event_log)})
    from flows.runtime import configure_prefect_env, settings_for, spark_for

    settings = settings_for(None)
    cores = local_cores(settings.spark.master)
    if args.core_use and (cores is None or settings.spark.remote):
        parser.error(f"--core-use needs a local master, not {settings.spark.master}")
    configure_prefect_env(settings)
    from flows.nightly import nightly_flow
    from flows.training import training_flow
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec

    generate_seconds = train_seconds = None
    if not args.lake and not (settings.lake.lake_path / "signups").exists():
        start = time.perf_counter()
        generate(
            spark_for(settings),
            build_spec("distillation-campaign", args.accounts, args.seed),
            settings.lake.lake_path,
        )
        generate_seconds = time.perf_counter() - start
    if reuse:
        trained = json.loads(trained_file.read_text())
    else:
        start = time.perf_counter()
        trained = training_flow()
        train_seconds = round(time.perf_counter() - start, 1)
        trained_file.write_text(json.dumps(trained, default=str))
    start = time.perf_counter()
    summary = nightly_flow(resume=False)  # measure every stage, not the ones training left
    nightly_seconds = time.perf_counter() - start
    # the published list (rows in a fixed order), not the run's working copy, whose row order
    # follows Spark's partitions
    from jobs.core.store import store_for

    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    published = store.get(f"{summary['published']['prefix']}/banlist.parquet")
    banlist = hashlib.sha256(published)
    result = {
        "benchmark": "nightly",
        "accounts": summary["accounts_scored"],
        "generate_seconds": generate_seconds,
        "train_flow_seconds": train_seconds,
        "home": str(home) if args.home else None,
        "nightly_flow_seconds": round(nightly_seconds, 1),
        "nightly_stage_seconds": {k: round(v, 1) for k, v in summary["stage_seconds"].items()},
        "nightly_part_seconds": summary["part_seconds"],
        "banlist_sha256": banlist.hexdigest(),
        "components_backend": summary["components_backend"],
        "holdout": trained["metrics"],
        "ground_truth": summary.get("ground_truth"),
        "banned": summary["banned"],
        "machine": {"nproc": os.cpu_count(), "spark_master": settings.spark.master},
    }
    if args.expect:
        expect = Path(args.expect)
        if expect.suffix == ".parquet":  # a published ban list
            expected = hashlib.sha256(expect.read_bytes()).hexdigest()
        else:
            expected = json.loads(expect.read_text())["banlist_sha256"]
        result["same_banlist_as_expected"] = expected == result["banlist_sha256"]
    if event_log is not None:
        spark_for(settings).stop()  # the event log is complete once the session stops
        use = core_use(task_spans(event_log), summary["part_spans"], cores)
        result["nightly_core_use"] = use
    write_result(result, args.out)
    print(part_table(result["nightly_stage_seconds"], result["nightly_part_seconds"]))
    if event_log is not None:
        print(core_use_table(result["nightly_core_use"]))


def part_table(stages: dict[str, float], parts: dict[str, dict[str, float]]) -> str:
    """A markdown table: each stage's seconds, then its parts' seconds under it."""
    lines = ["| stage | part | seconds |", "|---|---|---:|"]
    for stage, seconds in stages.items():
        lines.append(f"| **{stage}** | | **{seconds:.1f}** |")
        for part, part_seconds in parts.get(stage, {}).items():
            lines.append(f"| | {part} | {part_seconds:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
