"""The ``farmwatch`` command line.

In: a sub-command and its flags (plus ``FARMWATCH_*`` environment variables or ``--config``).
Out: generated worlds, trained models, published ban lists and short summaries on stdout; exit
status 0 on success, 1 with a one-line reason on failure. Entry point of the console script.

Sub-commands: ``generate``, ``train``, ``nightly``, ``demo`` (generate + train + nightly on a
small world), ``banlist latest``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    from flows.runtime import configure_prefect_env, settings_for

    settings = settings_for(args.config)
    configure_prefect_env(settings)
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a synthetic world into the lake."""
    from flows.runtime import spark_for
    from jobs.generate import generate
    from jobs.world import build_spec, load_overrides

    settings = _settings(args)
    overrides = load_overrides(args.spec)
    if args.end_date:
        overrides["end_date"] = args.end_date
    spec = build_spec(args.scenario, args.accounts, args.seed, overrides)
    lake = Path(args.lake).resolve() if args.lake else settings.lake.lake_path
    start = time.perf_counter()
    counts = generate(spark_for(settings), spec, lake)
    print(
        f"generated {args.scenario} world ({args.accounts:,} accounts, seed {args.seed}) "
        f"in {time.perf_counter() - start:.1f}s at {lake}"
    )
    print("operators: " + ", ".join(f"{k}={v:,}" for k, v in spec.operator_sizes().items()))
    print("rows: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Retrain and register a model (promotion gate applied)."""
    _settings(args)  # configures Prefect's home before the flow module imports Prefect
    from flows.training import training_flow

    result = training_flow(run_date=args.date, config_file=args.config)
    metrics = result["metrics"]
    print(f"model version {result['version']} (promoted to champion: {result['promoted']})")
    print("holdout: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    """Run the nightly flow and print its summary."""
    _settings(args)  # configures Prefect's home before the flow module imports Prefect
    from flows.nightly import nightly_flow
    from jobs.report import render_text

    summary = nightly_flow(
        run_date=args.date, lookback_days=args.lookback_days, config_file=args.config
    )
    print(f"nightly run {summary['run_date']} with model version {summary['model_version']}")
    print(render_text(summary))
    print(f"ban list: {summary['published']['store']}/{summary['published']['prefix']}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate a small world, train, run the nightly flow, print the summary."""
    start = time.perf_counter()
    generate_args = argparse.Namespace(
        **{
            **vars(args),
            "scenario": "distillation-campaign",
            "spec": None,
            "end_date": None,
            "lake": None,
        }
    )
    cmd_generate(generate_args)
    cmd_train(argparse.Namespace(**{**vars(args), "date": None}))
    cmd_nightly(argparse.Namespace(**{**vars(args), "date": None, "lookback_days": None}))
    print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return 0


def cmd_banlist(args: argparse.Namespace) -> int:
    """Show the latest published ban list."""
    from jobs.publish import read_latest, store_for

    settings = _settings(args)
    store = store_for(settings.publish.target_for(settings.home))
    manifest, banlist = read_latest(store, settings.publish.prefix)
    print(json.dumps({k: manifest[k] for k in ("run_date", "run_id", "counts", "model")}, indent=2))
    print(banlist.head(args.rows).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    parser = argparse.ArgumentParser(prog="farmwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (sections mirror jobs/config.py)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic world into the lake")
    gen.add_argument("--accounts", type=int, default=20_000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--scenario", default="distillation-campaign")
    gen.add_argument("--spec", help="JSON file of knob overrides")
    gen.add_argument("--end-date", help="last day of the world (YYYY-MM-DD)")
    gen.add_argument("--lake", help="output folder (default: the configured lake)")
    gen.set_defaults(func=cmd_generate)

    trn = sub.add_parser("train", help="train, register and gate a new model version")
    trn.add_argument("--date", help="train on labels known at this date (YYYY-MM-DD)")
    trn.set_defaults(func=cmd_train)

    nig = sub.add_parser("nightly", help="run the nightly flow")
    nig.add_argument("--date", help="run date (YYYY-MM-DD); default: world end or yesterday")
    nig.add_argument("--lookback-days", type=int)
    nig.set_defaults(func=cmd_nightly)

    demo = sub.add_parser("demo", help="generate a small world, train, run nightly")
    demo.add_argument("--accounts", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    ban = sub.add_parser("banlist", help="trust-team view of published ban lists")
    ban_sub = ban.add_subparsers(dest="banlist_command", required=True)
    latest = ban_sub.add_parser("latest", help="show the latest published ban list")
    latest.add_argument("--rows", type=int, default=10)
    latest.set_defaults(func=cmd_banlist)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 (one readable line, the traceback is in the logs)
        print(f"farmwatch {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if "--debug" in (argv or sys.argv):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
