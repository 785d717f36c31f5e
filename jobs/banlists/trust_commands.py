"""The trust team's case-work commands: ``farmwatch banlist decide|audit|farm``.

In: parsed command-line arguments and the settings (where lists are published). Out: text on
stdout; ``decide`` appends decision records (:mod:`jobs.banlists.decisions`), ``audit`` prints
the audit log (:mod:`jobs.banlists.audit`), ``farm`` tells one farm's story from the registry
of the list in force (:mod:`jobs.banlists.registry`). Nothing here needs Spark or Prefect.
Registered on the ``banlist`` sub-parser by :func:`register`, called from
:func:`jobs.banlists.commands.register`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.banlists.audit import read_audit
from jobs.banlists.decisions import DECISIONS, record_decision, record_decisions_csv
from jobs.banlists.lineage import STABLE_FARM_ID, farm_story
from jobs.banlists.registry import read_registry
from jobs.banlists.runs import latest_pointer
from jobs.core.config import Settings
from jobs.core.store import ObjectStore, store_for

Bind = Callable[[Callable[[argparse.Namespace, Settings], int]], Callable[..., int]]


def _store(settings: Settings) -> tuple[ObjectStore, str]:
    store = store_for(settings.publish.target_for(settings.home), settings.publish)
    return store, settings.publish.prefix


def decide(args: argparse.Namespace, settings: Settings) -> int:
    """Record one decision about an account, or every row of a review tool's CSV."""
    store, prefix = _store(settings)
    if args.csv:
        if args.account or args.decision or args.reason or args.at:
            raise ValueError("give either --csv FILE or ACCOUNT --decision --reason, not both")
        records = record_decisions_csv(store, prefix, Path(args.csv), args.by)
    else:
        if not (args.account and args.decision and args.reason):
            raise ValueError("decide needs ACCOUNT, --decision and --reason (or --csv FILE)")
        records = [
            record_decision(
                store, prefix, args.account, args.decision, args.reason, args.by, args.at
            )
        ]
    for r in records:
        print(f"{r['record_id']}  {r['account_id']}  {r['decision']}  by {r['by']}")
    print(f"recorded {len(records)} decision(s); the next run applies them")
    return 0


def audit(args: argparse.Namespace, settings: Settings) -> int:
    """Print the audit log (newest last), optionally one account's or one run's entries."""
    store, prefix = _store(settings)
    log = read_audit(store, prefix)
    if args.account:
        log = log[log["account_id"] == args.account]
    if args.run:
        log = log[log["run_id"] == args.run]
    for row in log.tail(args.rows).itertuples(index=False):
        subject = (
            f"run {row.run_id} ({row.run_date})"
            if isinstance(row.run_id, str)
            else f"account {row.account_id} {row.decision}"
        )
        print(f"{row.recorded_at}  {row.action:<7}  {subject}  by {row.by}: {row.reason}")
    print(f"{len(log)} entr{'y' if len(log) == 1 else 'ies'}")
    return 0


def farm(args: argparse.Namespace, settings: Settings) -> int:
    """One farm in the registry of the list in force: where it stands, and its history."""
    store, prefix = _store(settings)
    latest = latest_pointer(store, prefix)
    if latest is None:
        raise FileNotFoundError(f"no ban list in force under {store.describe()}/{prefix}")
    registry = read_registry(store, latest["prefix"])
    if registry is None:
        raise FileNotFoundError(f"{latest['prefix']} has no farm registry (published before it)")
    farms = registry.farms
    # a farm is named by its stable id, or by tonight's candidate id (its smallest member)
    row = farms[(farms[STABLE_FARM_ID] == args.farm) | (farms["farm_id"] == args.farm)]
    stable = row[STABLE_FARM_ID].iloc[0] if not row.empty else args.farm
    story = farm_story(registry.history, stable)
    if row.empty and story.empty:
        print(f"{args.farm} is not in the farm registry of {latest['prefix']}")
        return 0
    if row.empty:
        print(f"{stable}: no longer in the registry (merged or long dormant)")
    else:
        r = row.iloc[0]
        print(
            f"{stable}  {r['status']}  size {r['size']:,} (peak {r['peak_size']:,})  "
            f"first seen {r['first_seen']}  last seen {r['last_seen']}  "
            f"candidate {r['farm_id'] or '-'}  banned before: {'yes' if r['banned_ever'] else 'no'}"
        )
    if args.history:
        shown = story.assign(
            related_farm_id=story["related_farm_id"].fillna("-"),
            size_before=story["size_before"]
            .astype(object)
            .where(story["size_before"].notna(), "-"),
            farm_id=story["farm_id"].fillna("-"),
        )
        with pd.option_context("display.width", 200):
            print(shown.to_string(index=False))
    return 0


def register(ban_sub: Any, bind: Bind) -> None:
    """Add ``decide``, ``audit`` and ``farm`` to the ``banlist`` sub-parsers."""
    p = ban_sub.add_parser("decide", help="record a reviewer's or an appeal's decision")
    p.add_argument("account", nargs="?", help="account id (or --csv for many)")
    p.add_argument("--decision", choices=DECISIONS)
    p.add_argument("--reason", help="why, in words a colleague can check")
    p.add_argument("--by", help="who decided (default: FARMWATCH_ACTOR or the login name)")
    p.add_argument("--at", help="when it was decided, ISO 8601 with a zone (default: now)")
    p.add_argument(
        "--csv", help="CSV from a review tool: account_id,decision,reason[,by,decided_at]"
    )
    p.set_defaults(func=bind(decide))
    p = ban_sub.add_parser("audit", help="every publish, hold, release, revoke and decision")
    p.add_argument("--account", help="only this account's decisions")
    p.add_argument("--run", help="only this run's actions")
    p.add_argument("--rows", type=int, default=50, help="newest entries shown")
    p.set_defaults(func=bind(audit))
    p = ban_sub.add_parser("farm", help="one farm in the registry: status, size, lineage")
    p.add_argument("farm", help="stable farm id, or a candidate farm_id of the list in force")
    p.add_argument("--history", action="store_true", help="every lineage event, oldest first")
    p.set_defaults(func=bind(farm))
