"""The ``farmwatch`` command line.

In: a sub-command and its flags (plus ``FARMWATCH_*`` environment variables or ``--config``).
Out: generated worlds, trained models, published ban lists and short summaries on stdout; exit
status 0 on success, 1 with a one-line reason on failure. Entry point of the console script.

Sub-commands: ``generate``, ``train``, ``nightly``, ``demo`` (generate + train + nightly on a
small world), ``serve`` (the scheduler), ``backfill``, ``model rollback``, ``evaluate-graph``
(cross-validate the model with and without graph features on a labelled graph), ``banlist
latest|runs|show|diff|revoke|release``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# the world `make demo` builds; the end-to-end test runs the same one (README sample output)
DEMO_ACCOUNTS = 20_000
DEMO_SEED = 7


def _settings(args: argparse.Namespace) -> Any:
    from flows.runtime import configure_prefect_env, settings_for

    settings = settings_for(args.config)
    configure_prefect_env(settings)
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a synthetic world into the lake."""
    from flows.runtime import spark_for
    from jobs.generate import generate
    from jobs.lake import lake_location
    from jobs.world import build_spec, load_overrides

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
    from jobs.report import render_text

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


def cmd_evaluate_graph(args: argparse.Namespace) -> int:
    """Cross-validate LightGBM on a labelled graph, without and with graph features."""
    from flows.runtime import settings_for, spark_for
    from models.evaluate_graph import evaluate_labelled_graph, render_table

    settings = settings_for(args.config)
    result = evaluate_labelled_graph(
        spark_for(settings),
        Path(args.nodes),
        Path(args.edges),
        settings.model,
        folds=args.folds,
        seed=settings.model.seed if args.seed is None else args.seed,
        max_degree=args.max_degree,
    )
    print(render_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"result: {args.json}")
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


def _banlist_store(args: argparse.Namespace) -> tuple[Any, str]:
    from jobs.store import store_for

    settings = _settings(args)
    return store_for(settings.publish.target_for(settings.home), settings.publish), (
        settings.publish.prefix
    )


def _run_prefix(store: Any, prefix: str, run_id: str | None) -> str:
    from jobs.publish import find_run, latest_pointer

    if run_id is None:
        latest = latest_pointer(store, prefix)
        if latest is None:
            raise FileNotFoundError(f"no ban list in force under {store.describe()}/{prefix}")
        return latest["prefix"]
    return find_run(store, prefix, run_id)["prefix"]


def cmd_banlist_latest(args: argparse.Namespace) -> int:
    """Show the ban list in force."""
    from jobs.publish import read_latest

    store, prefix = _banlist_store(args)
    manifest, banlist = read_latest(store, prefix)
    keys = ("run_date", "run_id", "counts", "model", "diff")
    print(json.dumps({k: manifest[k] for k in keys}, indent=2))
    print(banlist.head(args.rows).to_string(index=False))
    return 0


def cmd_banlist_runs(args: argparse.Namespace) -> int:
    """List published, held and revoked runs."""
    from jobs.publish import list_runs

    store, prefix = _banlist_store(args)
    for run in list_runs(store, prefix):
        c = run["counts"]
        print(
            f"{run['run_date']}  {run['run_id']}  {run['status']:<9}  ban {c['ban']:>7,}  "
            f"review {c['review']:>6,}  watch {c['watch']:>6,}"
        )
    return 0


def cmd_banlist_show(args: argparse.Namespace) -> int:
    """One run (default: the list in force), optionally one account's reasons or one farm."""
    from jobs.publish import read_run, read_status

    store, prefix = _banlist_store(args)
    run_prefix = _run_prefix(store, prefix, args.run)
    manifest, banlist = read_run(store, run_prefix)
    status = read_status(store, run_prefix)
    print(f"{run_prefix}  status {status['status']}  model {manifest['model']}")
    print(f"breaker: {manifest['breaker']['reason']}")
    if args.account:
        rows = banlist[banlist["account_id"] == args.account]
        if rows.empty:
            print(f"{args.account} is not on this list")
            return 0
        row = rows.iloc[0]
        print(
            f"{row['account_id']}  farm {row['farm_id']}  score {row['score']:.4f}  {row['action']}"
        )
        for reason in row["reasons"]:
            print(f"  - {reason}")
        return 0
    _, farms = read_run(store, run_prefix, "farms.parquet")
    if args.farm:
        farms = farms[farms["farm_id"] == args.farm]
        print(farms.to_string(index=False))
        print(banlist[banlist["farm_id"] == args.farm].head(args.rows).to_string(index=False))
        return 0
    print(farms.head(args.rows).to_string(index=False))
    return 0


def cmd_banlist_diff(args: argparse.Namespace) -> int:
    """What changed against the list that was in force before this run."""
    from jobs.publish import read_run

    store, prefix = _banlist_store(args)
    run_prefix = _run_prefix(store, prefix, args.run)
    manifest, diff = read_run(store, run_prefix, "diff.parquet")
    print(json.dumps(manifest["diff"], indent=2))
    changed = diff[diff["change"] != "unchanged"]
    print(changed.head(args.rows).to_string(index=False))
    return 0


def cmd_banlist_revoke(args: argparse.Namespace) -> int:
    """Revoke a run; ``latest.json`` moves back to the newest good run."""
    from jobs.publish import revoke

    store, prefix = _banlist_store(args)
    latest = revoke(store, prefix, args.run, args.reason)
    where = f"{latest['run_date']} run {latest['run_id']}" if latest else "none"
    print(f"revoked {args.run}; list in force: {where}")
    return 0


def cmd_banlist_release(args: argparse.Namespace) -> int:
    """Publish a run the circuit breaker held, after review."""
    from jobs.publish import release

    store, prefix = _banlist_store(args)
    result = release(store, prefix, args.run, args.reason)
    print(f"{result.run_prefix}: {result.message} (in force: {result.in_force})")
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

    evg = sub.add_parser(
        "evaluate-graph",
        help="cross-validate the model with and without graph features on a labelled graph",
    )
    evg.add_argument("--nodes", required=True, help="Parquet: id, label (0/1), numeric features")
    evg.add_argument("--edges", required=True, help="Parquet: src, dst, optional type")
    evg.add_argument("--folds", type=int, default=5, help="stratified folds (default 5)")
    evg.add_argument("--seed", type=int, help="fold and LightGBM seed (default: model.seed)")
    evg.add_argument(
        "--max-degree",
        type=int,
        default=200,
        help="nodes of higher degree are not expanded through for 2-hop features",
    )
    evg.add_argument("--json", help="also write the result to this JSON file")
    evg.set_defaults(func=cmd_evaluate_graph)

    ban = sub.add_parser("banlist", help="trust-team view of published ban lists")
    ban_sub = ban.add_subparsers(dest="banlist_command", required=True)
    latest = ban_sub.add_parser("latest", help="show the ban list in force")
    latest.add_argument("--rows", type=int, default=10)
    latest.set_defaults(func=cmd_banlist_latest)
    runs = ban_sub.add_parser("runs", help="list runs with their status")
    runs.set_defaults(func=cmd_banlist_runs)
    show = ban_sub.add_parser("show", help="one run's farms, or one account's reasons")
    show.add_argument("--run", help="run id (default: the list in force)")
    show.add_argument("--account", help="explain one account")
    show.add_argument("--farm", help="show one farm and its members")
    show.add_argument("--rows", type=int, default=10)
    show.set_defaults(func=cmd_banlist_show)
    diff = ban_sub.add_parser("diff", help="changes against the previous list in force")
    diff.add_argument("--run", help="run id (default: the list in force)")
    diff.add_argument("--rows", type=int, default=20)
    diff.set_defaults(func=cmd_banlist_diff)
    rev = ban_sub.add_parser("revoke", help="revoke a run and move latest.json back")
    rev.add_argument("run", help="run id")
    rev.add_argument("--reason", required=True)
    rev.set_defaults(func=cmd_banlist_revoke)
    rel = ban_sub.add_parser("release", help="publish a run the circuit breaker held")
    rel.add_argument("run", help="run id")
    rel.add_argument("--reason", required=True, help="who reviewed it and why it is fine")
    rel.set_defaults(func=cmd_banlist_release)
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
