"""The trust team's ``farmwatch banlist`` commands: read, explain, diff, revoke and release lists.

In: parsed command-line arguments and the settings (where lists are published). Out: text on
stdout; revoke and release change a run's status and ``latest.json`` through
:mod:`jobs.banlists.runs`. Nothing here needs Spark or Prefect. Registered on the ``farmwatch``
parser by :func:`register`; called by :mod:`flows.cli`.
"""

from __future__ import annotations

import argparse
import json
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.banlists import trust_commands
from jobs.banlists.runs import (
    find_run,
    latest_pointer,
    list_runs,
    read_latest,
    read_run,
    read_run_file,
    read_status,
    release,
    revoke,
)
from jobs.core.config import Settings
from jobs.core.store import LocalStore, ObjectStore, store_for

SettingsFor = Callable[[argparse.Namespace], Settings]


def _store(settings: Settings) -> tuple[ObjectStore, str]:
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    return store, settings.publish.prefix


def _run_prefix(store: ObjectStore, prefix: str, run_id: str | None) -> str:
    if run_id is None:
        latest = latest_pointer(store, prefix)
        if latest is None:
            raise FileNotFoundError(f"no ban list in force under {store.describe()}/{prefix}")
        return latest["prefix"]
    return find_run(store, prefix, run_id)["prefix"]


def latest(args: argparse.Namespace, settings: Settings) -> int:
    """Show the ban list in force."""
    store, prefix = _store(settings)
    manifest, banlist = read_latest(store, prefix)
    keys = ("run_date", "run_id", "counts", "model", "diff")
    print(json.dumps({k: manifest[k] for k in keys}, indent=2))
    print(banlist.head(args.rows).to_string(index=False))
    return 0


def runs(args: argparse.Namespace, settings: Settings) -> int:
    """List published, held and revoked runs."""
    store, prefix = _store(settings)
    for run in list_runs(store, prefix):
        c = run["counts"]
        print(
            f"{run['run_date']}  {run['run_id']}  {run['status']:<9}  ban {c['ban']:>7,}  "
            f"review {c['review']:>6,}  watch {c['watch']:>6,}"
        )
    return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    """One run (default: the list in force), optionally one account's reasons or one farm."""
    store, prefix = _store(settings)
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
        # tonight's farm_id, or the stable id the farm registry gave it (runs since the registry)
        by = "stable_farm_id" if args.farm in set(farms.get("stable_farm_id", [])) else "farm_id"
        farms = farms[farms[by] == args.farm]
        print(farms.to_string(index=False))
        print(banlist[banlist[by] == args.farm].head(args.rows).to_string(index=False))
        return 0
    print(farms.head(args.rows).to_string(index=False))
    return 0


def diff(args: argparse.Namespace, settings: Settings) -> int:
    """What changed against the list that was in force before this run."""
    store, prefix = _store(settings)
    run_prefix = _run_prefix(store, prefix, args.run)
    manifest, changes = read_run(store, run_prefix, "diff.parquet")
    print(json.dumps(manifest["diff"], indent=2))
    changed = changes[changes["change"] != "unchanged"]
    print(changed.head(args.rows).to_string(index=False))
    return 0


def report(args: argparse.Namespace, settings: Settings) -> int:
    """Print where a run's report is (a copy under the home when the list is on S3); --open it."""
    store, prefix = _store(settings)
    run_prefix = _run_prefix(store, prefix, args.run)
    manifest = json.loads(store.get(f"{run_prefix}/manifest.json"))
    if "report.html" not in manifest["files"]:
        print(f"{run_prefix} has no run report (published before reports existed)")
        return 1
    _, page = read_run_file(store, run_prefix, "report.html")
    if isinstance(store, LocalStore):
        path = store.root / run_prefix / "report.html"
    else:
        path = settings.home / "reports" / f"{manifest['run_id']}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(page)
        print(f"{store.describe()}/{run_prefix}/report.html copied to:")
    print(Path(path).resolve())
    if args.open:
        webbrowser.open(Path(path).resolve().as_uri())
    return 0


def revoke_run(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a run; ``latest.json`` moves back to the newest good run."""
    store, prefix = _store(settings)
    now_in_force = revoke(store, prefix, args.run, args.reason, args.by)
    where = f"{now_in_force['run_date']} run {now_in_force['run_id']}" if now_in_force else "none"
    print(f"revoked {args.run}; list in force: {where}")
    return 0


def release_run(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a run the circuit breaker held, after review."""
    store, prefix = _store(settings)
    result = release(store, prefix, args.run, args.reason, args.by)
    print(f"{result.run_prefix}: {result.message} (in force: {result.in_force})")
    return 0


def register(sub: Any, settings_for: SettingsFor) -> None:
    """Add ``banlist latest|runs|show|diff|report|revoke|release`` (and ``decide|audit|farm``)."""

    def bind(command: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
        return lambda args: command(args, settings_for(args))

    ban = sub.add_parser("banlist", help="trust-team view of published ban lists")
    ban_sub = ban.add_subparsers(dest="banlist_command", required=True)
    p = ban_sub.add_parser("latest", help="show the ban list in force")
    p.add_argument("--rows", type=int, default=10)
    p.set_defaults(func=bind(latest))
    p = ban_sub.add_parser("runs", help="list runs with their status")
    p.set_defaults(func=bind(runs))
    p = ban_sub.add_parser("show", help="one run's farms, or one account's reasons")
    p.add_argument("--run", help="run id (default: the list in force)")
    p.add_argument("--account", help="explain one account")
    p.add_argument("--farm", help="show one farm and its members (farm_id or stable_farm_id)")
    p.add_argument("--rows", type=int, default=10)
    p.set_defaults(func=bind(show))
    p = ban_sub.add_parser("diff", help="changes against the previous list in force")
    p.add_argument("--run", help="run id (default: the list in force)")
    p.add_argument("--rows", type=int, default=20)
    p.set_defaults(func=bind(diff))
    p = ban_sub.add_parser("report", help="where a run's HTML report is (--open opens it)")
    p.add_argument("--run", help="run id (default: the list in force)")
    p.add_argument("--open", action="store_true", help="open it in the default browser")
    p.set_defaults(func=bind(report))
    p = ban_sub.add_parser("revoke", help="revoke a run and move latest.json back")
    p.add_argument("run", help="run id")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", help="who (default: FARMWATCH_ACTOR or the login name)")
    p.set_defaults(func=bind(revoke_run))
    p = ban_sub.add_parser("release", help="publish a run the circuit breaker held")
    p.add_argument("run", help="run id")
    p.add_argument("--reason", required=True, help="who reviewed it and why it is fine")
    p.add_argument("--by", help="who (default: FARMWATCH_ACTOR or the login name)")
    p.set_defaults(func=bind(release_run))
    trust_commands.register(ban_sub, bind)
