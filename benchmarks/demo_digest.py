"""Run the demo in fresh homes from one or more checkouts and compare the published ban lists.

A change that must not change behaviour is checked with it: give the checkout before the change
and the one after (``--repo`` twice); every checkout runs ``farmwatch demo`` in its own fresh
home and the sha256 of each published file is printed; the exit status is 1 when the ban lists
differ (or differ from ``--expect``). The demo's world, model and list are seeded, so the same
code on the same dependency set writes the same bytes. Entity hashes depend on the hashing key:
with two or more checkouts all of them get one key generated for this comparison, unless
``FARMWATCH_PUBLISH__ENTITY_HASH_KEY`` is already set.

Usage::

    .venv/bin/python benchmarks/demo_digest.py --repo <before> --repo <after> [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("banlist.parquet", "banlist.csv", "farms.parquet")
KEY_ENV = "FARMWATCH_PUBLISH__ENTITY_HASH_KEY"


def run_demo(repo: Path, home: Path, extra_env: dict[str, str]) -> float:
    """Run ``farmwatch demo`` from ``repo`` with ``home`` as its home; returns the seconds."""
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": str(repo),
        "FARMWATCH_LAKE__HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
    }
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo"], cwd=repo, env=env, check=True, timeout=3600
    )
    return time.perf_counter() - start


def published_digests(home: Path) -> dict[str, str]:
    """sha256 of each file of the run ``latest.json`` points at."""
    latest = home / "bucket" / "banlists" / "latest.json"
    folder = latest.parents[1] / json.loads(latest.read_text())["prefix"]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def main() -> int:
    """Parse options, run the demo from every checkout, print and compare the digests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, action="append", help="checkout whose code runs")
    parser.add_argument("--expect", help="sha256 every ban list must have")
    parser.add_argument("--json", type=Path, help="write the digests here")
    args = parser.parse_args()
    repos = [r.resolve() for r in args.repo or [ROOT]]
    extra = {}
    if len(repos) > 1 and KEY_ENV not in os.environ:
        extra[KEY_ENV] = secrets.token_hex(32)  # one key for this comparison, never stored
    results = []
    for repo in repos:
        with tempfile.TemporaryDirectory(prefix="farmwatch-digest-") as tmp:
            seconds = run_demo(repo, Path(tmp), extra)
            results.append({"repo": str(repo), "seconds": round(seconds, 1)})
            results[-1].update(published_digests(Path(tmp)))
    for result in results:
        print(result["repo"], f"(demo {result['seconds']:.0f}s)")
        for name in FILES:
            print(f"  {name:16s} {result[name]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    lists = {r["banlist.parquet"] for r in results}
    if len(lists) > 1 or (args.expect and lists != {args.expect}):
        print("ban lists differ", file=sys.stderr)
        return 1
    if len(results) > 1 or args.expect:
        print("same ban list bytes" if len(results) > 1 else "ban list as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
