"""Run the demo in a fresh home and print the sha256 of the ban list it published.

A refactor that must not change behaviour is checked with it: run it on the code before and
after (``--repo`` points at either checkout), compare the digests, or give ``--expect`` to fail
on a difference. The demo's world, model and list are all seeded, so the same code on the same
dependency set writes the same bytes.

Usage::

    .venv/bin/python benchmarks/demo_digest.py [--repo PATH] [--expect SHA256] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("banlist.parquet", "banlist.csv", "farms.parquet")


def run_demo(repo: Path, home: Path) -> float:
    """Run ``farmwatch demo`` from ``repo`` with ``home`` as its home; returns the seconds."""
    env = {
        **os.environ,
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
    """Parse options, run the demo, print and check the digests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose code runs")
    parser.add_argument("--expect", help="sha256 the ban list must have")
    parser.add_argument("--json", type=Path, help="write the digests here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="farmwatch-digest-") as tmp:
        seconds = run_demo(args.repo.resolve(), Path(tmp))
        digests = published_digests(Path(tmp))
    for name, digest in digests.items():
        print(f"{name:16s} {digest}")
    print(f"demo took {seconds:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"repo": str(args.repo), **digests}, indent=2) + "\n")
    if args.expect and digests["banlist.parquet"] != args.expect:
        print(f"ban list differs: expected {args.expect}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
