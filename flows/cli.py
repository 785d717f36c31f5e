"""The ``farmwatch`` command line: the flows' commands, and the others' registration.

In: a sub-command and its flags (plus ``FARMWATCH_*`` environment variables or ``--config``).
Out: generated worlds, trained models, published ban lists and short summaries on stdout; exit
status 0 on success, 1 with a one-line reason on failure (``--debug`` adds the traceback).
Entry point of the console script.

Sub-commands here: ``generate``, ``train``, ``nightly``, ``demo`` (generate + train + nightly
on a small world), ``serve`` (the scheduler), ``backfill``, ``model rollback``. Registered from
their own packages, which need no Prefect: ``banlist latest|runs|show|diff|report|revoke|release``
(:mod:`jobs.banlists.commands`) and ``evaluate-graph`` (:mod:`models.evaluate_graph`).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import models.evaluate_graph as evaluate_graph
from jobs.banlists import commands as banlist_commands

# the world `make demo` builds; the end-to-end test runs the same one (README sample output)
DEMO_ACCOUNTS = 20_000
DEMO_SEED = 7


def _settings(args: argparse.Namespace) -> Any:
    from flows.runtime import configure_prefect_env, settings_for

    settings = settings_for(args.config)
    configure_prefect_env(settings)
    return settings


def _settings_and_spark(args: argparse.Namespace) -> tuple[Any, Any]:
    from flows.runtime import spark_for

    settings = _settings(args)
    return settings, spark_for(settings)


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a synthetic world into the lake."""
    from flows.runtime import spark_for
    from jobs.core.lake import lake_location
    from jobs.world.generate import generate
    from jobs.world.spec import build_spec, load_overrides

    settings = _settings(args)
    overrides = load_overrides(args.spec)
    if args.end_date:
        overrides["end_date"] = args.end_date
    spec = build_spec(args.scenario, args.accounts, args.seed, overrides)
    lake = (
        lake_location(args.lake, settings.lake.endpoint_url, settings.lake.region)
        if args.lake
        else settings.lake.lake_path
    )
    start = time.perf_counter()
    counts = generate(spark_for(settings), spec, lake, settings.lake.format)
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
    print(f"model version {result['version']} (promoted to champion: {result['promoted']})")
    for line in training_lines(result):
        print(line)
    return 0


def training_lines(result: dict) -> list[str]:
    """What a training run measured: holdout, farm-grouped cross-validation, gain shares."""
    m = result["metrics"]
    lines = [
        f"holdout         : auroc {m['auroc']:.4f}, auprc {m['auprc']:.4f}, recall at 99.5% "
        f"precision {m['recall_at_p995']:.4f} ({int(m['test_rows']):,} labelled accounts)"
    ]
    parts = result.get("training", {})
    combined, account = parts.get("combined", {}), parts.get("account", {})
    if combined:
        lines.append(
            f"grouped cv      : {combined['folds']} folds by {combined['grouping']}; auprc "
            f"combined {combined['cv_auprc']:.4f}, account only {account.get('cv_auprc', 0):.4f}"
        )
        shares = [
            f"{name} {part['max_gain_share']['feature']} {part['max_gain_share']['share']:.0%}"
            for name, part in (("combined", combined), ("account", account))
            if part.get("max_gain_share", {}).get("feature")
        ]
        lines.append("largest feature : " + "; ".join(shares) + " of gain")
    return lines


def cmd_nightly(args: argparse.Namespace) -> int:
    """Run the nightly flow and print its summary."""
    _settings(args)  # configures Prefect's home before the flow module imports Prefect
    from flows.nightly import nightly_flow
    from jobs.report.summary import render_text

    summary = nightly_flow(
        run_date=args.date,
        lookback_days=args.lookback_days,
        config_file=args.config,
        release_held=args.release_held,
        resume=False if args.no_resume else None,
    )
    print(f"nightly run {summary['run_date']} with model version {summary['model_version']}")
    print(render_text(summary))
    print(f"ban list: {summary['published']['store']}/{summary['published']['prefix']}/")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the nightly and weekly retraining deployments until interrupted."""
    import signal

    settings = _settings(args)
    from flows.serve import serve_forever

    # A service manager stops us with SIGTERM: exit through the normal path so the local
    # Prefect server started for us is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    serve_forever(settings, args.config, args.port)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """Run the nightly flow over a date range, in order."""
    _settings(args)
    from flows.serve import backfill_flow

    outcome = backfill_flow(
        start=args.start, end=args.end, force=args.force, config_file=args.config
    )
    for day, what in outcome.items():
        print(f"{day}  {what}")
    return 0


def cmd_model_rollback(args: argparse.Namespace) -> int:
    """Point the registry's champion back at an earlier model version."""
    from models.registry import rollback_champion

    settings = _settings(args)
    old, new = rollback_champion(
        settings.model, settings.model.tracking_uri_for(settings.home), args.to
    )
    print(f"champion of {settings.model.registered_model}: version {old} -> {new}")
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
    cmd_nightly(
        argparse.Namespace(
            **{
                **vars(args),
                "date": None,
                "lookback_days": None,
                "release_held": False,
                "no_resume": False,
            }
        )
    )
    print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    parser = argparse.ArgumentParser(prog="farmwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (sections mirror jobs/core/config.py)")
    parser.add_argument(
        "--debug", action="store_true", help="on failure, show the traceback as well"
    )
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
    nig.add_argument(
        "--release-held",
        action="store_true",
        help="publish even if the circuit breaker trips (after a human reviewed the run)",
    )
    nig.add_argument(
        "--no-resume", action="store_true", help="recompute every stage of the run date"
    )

    srv = sub.add_parser("serve", help="run the scheduler: nightly and weekly deployments")
    srv.add_argument("--port", type=int, default=4200, help="port of the local Prefect server")
    srv.set_defaults(func=cmd_serve)

    bfl = sub.add_parser("backfill", help="run the nightly flow over a date range, in order")
    bfl.add_argument("--start", required=True, help="first date (YYYY-MM-DD)")
    bfl.add_argument("--end", required=True, help="last date (YYYY-MM-DD)")
    bfl.add_argument("--force", action="store_true", help="re-run dates already published")
    bfl.set_defaults(func=cmd_backfill)
    nig.set_defaults(func=cmd_nightly)

    demo = sub.add_parser("demo", help="generate a small world, train, run nightly")
    demo.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS)
    demo.add_argument("--seed", type=int, default=DEMO_SEED)
    demo.set_defaults(func=cmd_demo)

    mdl = sub.add_parser("model", help="registry operations")
    mdl_sub = mdl.add_subparsers(dest="model_command", required=True)
    rbk = mdl_sub.add_parser("rollback", help="point @champion back at an earlier version")
    rbk.add_argument("--to", help="version (default: the champion it replaced)")
    rbk.set_defaults(func=cmd_model_rollback)

    banlist_commands.register(sub, _settings)
    evaluate_graph.register(sub, _settings_and_spark)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 (one readable line, the traceback is in the logs)
        print(f"farmwatch {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.debug:
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
