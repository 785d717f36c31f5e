"""Benchmark: how much work the machine's cores do side by side, against one alone.

The nightly's core-use figures (``bench_nightly.py --core-use``) count task seconds on the
cores the operating system reports; whether two busy cores do twice the work of one depends on
what the hypervisor gives them (shared caches, memory bandwidth, a sibling hyperthread) and on
whatever else the host runs. This script measures it: a fixed piece of work per process, timed
in one process alone and then in ``--processes`` processes at once (default: every core), for
two kinds of work:

- ``compute``: SHA-256 over a buffer that fits in cache (the CPU alone);
- ``memory``: gathers from a random permutation of an array larger than the caches (memory
  bandwidth and latency, like a shuffle or a hash join).

For each kind: the median seconds alone and side by side over ``--repeats`` rounds, and
``effective_cores = processes * alone / side_by_side`` (2.0 on two independent cores; about
1.2 on two hyperthreads of one core). Writes JSON (default ``benchmarks/results/cores.json``).

    .venv/bin/python benchmarks/bench_cores.py --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np
from benchkit import write_result

KINDS = ("compute", "memory")


def work(kind: str, scale: float) -> float:
    """Do one fixed piece of ``kind`` work; returns its seconds in this process."""
    start = time.perf_counter()
    if kind == "compute":
        block = bytes(range(256)) * 256  # 64 KiB: in cache
        for _ in range(int(40000 * scale)):
            hashlib.sha256(block).digest()
    elif kind == "memory":
        n = 1 << 24  # 16M int64: 128 MiB, beyond any cache
        values = np.arange(n, dtype=np.int64)
        order = np.random.default_rng(7).permutation(n)
        for _ in range(max(1, int(3 * scale))):
            values = values[order]
    else:
        raise ValueError(f"unknown kind of work: {kind}")
    return time.perf_counter() - start


def _child(kind: str, scale: float, ready: Any, go: Any, out: Any) -> None:
    ready.put(True)
    go.wait()
    try:
        out.put(work(kind, scale))
    except Exception as error:  # noqa: BLE001 (reported by the parent, which would wait else)
        out.put(f"{type(error).__name__}: {error}")


def side_by_side(kind: str, processes: int, scale: float) -> float:
    """Wall seconds for ``processes`` processes each doing the work, started together."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    children = [
        ctx.Process(target=_child, args=(kind, scale, ready, go, out)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    start = time.perf_counter()
    go.set()
    results = [out.get(timeout=3600) for _ in children]
    wall = time.perf_counter() - start
    for child in children:
        child.join(timeout=60)
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"{kind} work failed in a child process: {failed[0]}")
    return wall


def measure(kinds: tuple[str, ...], processes: int, repeats: int, scale: float) -> dict[str, Any]:
    """Alone and side-by-side medians and the effective cores of every kind of work."""
    result: dict[str, Any] = {}
    for kind in kinds:
        alone, together = [], []
        for _ in range(repeats):  # alternate, so drift on a shared machine hits both alike
            alone.append(side_by_side(kind, 1, scale))
            together.append(side_by_side(kind, processes, scale))
        a, t = statistics.median(alone), statistics.median(together)
        result[kind] = {
            "alone_seconds": [round(x, 3) for x in alone],
            "side_by_side_seconds": [round(x, 3) for x in together],
            "alone_median": round(a, 3),
            "side_by_side_median": round(t, 3),
            "effective_cores": round(processes * a / t, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="work per process (1.0: ~1-3 s)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", default="benchmarks/results/cores.json")
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown --kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    result = {
        "benchmark": "cores",
        "processes": args.processes,
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "scale": args.scale,
        "kinds": measure(kinds, args.processes, args.repeats, args.scale),
    }
    write_result(result, args.out)
    for kind, figures in result["kinds"].items():
        print(
            f"{kind:8s} alone {figures['alone_median']:.2f} s, {args.processes} side by side "
            f"{figures['side_by_side_median']:.2f} s: {figures['effective_cores']:.2f} cores"
        )


if __name__ == "__main__":
    main()
