"""Benchmark: what normalising IP addresses and deriving their keys costs, per family.

Makes ``--rows`` random IPv4 addresses and as many random IPv6 addresses (every group written,
as the generator and many logs write them), caches both, and measures, ``--repeats`` times
each, a Spark job summing the length of:

- ``passthrough``: the address as stored (the job's own cost);
- ``normalise``: :func:`jobs.core.addresses.normalise_ip` (what ingest adds per IP column);
- ``keys``: :func:`jobs.core.addresses.subscriber_ip` and :func:`network_keys` of the normalised
  address (what the graph stage adds per IP event).

Prints medians and microseconds per row over the passthrough, and writes JSON::

    .venv/bin/python benchmarks/bench_addresses.py --rows 2000000
"""

from __future__ import annotations

import argparse
from typing import Any

from benchkit import timed, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/addresses.json")
    args = parser.parse_args()

    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F

    from jobs.core.addresses import network_keys, normalise_ip, subscriber_ip

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    ids = spark.range(args.rows)
    families = {
        "ipv4": ids.select(
            F.concat_ws(".", *[F.pmod(F.xxhash64("id", F.lit(k)), 256) for k in range(4)])
            .cast("string")
            .alias("ip")
        ),
        "ipv6": ids.select(
            F.concat_ws(
                ":", *[F.lower(F.hex(F.pmod(F.xxhash64("id", F.lit(k)), 65536))) for k in range(8)]
            ).alias("ip")
        ),
    }

    def job(df: DataFrame, value: Column) -> Any:
        return df.select(F.sum(F.length(value))).collect()

    ip = F.col("ip")
    keys = F.concat(subscriber_ip(ip), F.array_join(network_keys(ip), "|"))
    result: dict[str, Any] = {"rows": args.rows, "repeats": args.repeats, "master": "local[2]"}
    for family, df in families.items():
        df = df.cache()
        df.count()
        normalised = df.select(normalise_ip(ip).alias("ip")).cache()
        normalised.count()
        base, base_runs, _ = timed(lambda d=df: job(d, ip), args.repeats)
        norm, norm_runs, _ = timed(lambda d=df: job(d, normalise_ip(ip)), args.repeats)
        key, key_runs, _ = timed(lambda d=normalised: job(d, keys), args.repeats)
        result[family] = {
            "passthrough_seconds": base,
            "normalise_seconds": norm,
            "keys_seconds": key,
            "normalise_us_per_row": round((norm - base) / args.rows * 1e6, 2),
            "keys_us_per_row": round((key - base) / args.rows * 1e6, 2),
            "runs": {"passthrough": base_runs, "normalise": norm_runs, "keys": key_runs},
        }
        df.unpersist()
        normalised.unpersist()
    spark.stop()
    write_result(result, args.out)


if __name__ == "__main__":
    main()
