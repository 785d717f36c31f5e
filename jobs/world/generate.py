"""Synthetic world generator (Spark job).

In: a :class:`jobs.world.spec.WorldSpec`. Out: the five input tables of :mod:`jobs.core.contracts`
(``signups``, ``payments``, ``ip_events``, ``api_usage``, ``labels``) plus ``ground_truth``, as
Parquet folders (or Delta tables) under the lake, and ``_world.json`` describing the spec. Called by
``farmwatch generate``, the demo, the tests and ``benchmarks/bench_generate.py``.

Every random draw is a hash of (seed, draw name, row index), never ``rand()``: rows never move
between partitions (no shuffles), so the same seed and spec give the same bytes on any machine.
Account ids are a bijective scramble of the row index, so farms are not contiguous id ranges.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.contracts import CONTRACTS
from jobs.core.lake import ObjectPath
from jobs.core.tables import TableFormat, write_table
from jobs.world.activity import ActivityTables
from jobs.world.draws import (
    COUNTRIES,
    ID_MODULUS,
    ID_MULTIPLIER,
    LEGIT_SEGMENTS,
    Draws,
    pick,
)
from jobs.world.identity import IdentityTables
from jobs.world.spec import WorldSpec


class WorldGenerator(IdentityTables, ActivityTables):
    """Turns a :class:`WorldSpec` into DataFrames; :meth:`write` stores them."""

    def __init__(self, spark: SparkSession, spec: WorldSpec) -> None:
        self.spark = spark
        self.spec = spec
        self.draw = Draws(spec.seed)
        self.end = datetime.fromisoformat(spec.end_date) + timedelta(days=1)
        self.window_start = self.end - timedelta(days=spec.window_days)
        self._plan_ranges()

    # ----------------------------------------------------------------- layout
    def _plan_ranges(self) -> None:
        spec, pop = self.spec, self.spec.population
        self.operator_sizes = spec.operator_sizes()
        start = 0
        self.operator_ranges: list[tuple[int, int, int]] = []
        for k, op in enumerate(spec.operators):
            size = self.operator_sizes[op.operator]
            self.operator_ranges.append((k, start, start + size))
            start += size
        self.farm_total = start
        legit = spec.accounts - self.farm_total
        shares = {
            "family": pop.family_share,
            "office": pop.office_share,
            "university": pop.university_share,
            "cgnat": pop.cgnat_share,
            "vpn": pop.vpn_share,
            "power_user": pop.power_user_share,
            "spike": pop.spike_share,
        }
        self.segment_ranges: dict[str, tuple[int, int]] = {}
        for name in LEGIT_SEGMENTS:
            size = int(legit * shares[name])
            if name == "family":
                size -= size % pop.family_size
            self.segment_ranges[name] = (start, start + size)
            start += size
        self.segment_ranges["individual"] = (start, spec.accounts)
        n_indiv = spec.accounts - start
        if n_indiv < 100:
            raise ValueError("segment shares leave too few ordinary individuals")
        self.n_offices = max(1, self._size("office") // pop.office_size)
        self.n_universities = max(1, self._size("university") // pop.university_size)
        mobile_users = self._size("cgnat") + 0.15 * n_indiv
        self.mobile_pool = max(2, math.ceil(mobile_users * 3.0 / pop.cgnat_accounts_per_ip / 3))
        scale = spec.accounts / 1_000_000
        self.proxy_pool = max(50, int(pop.proxy_pool_per_million * scale))

    def _size(self, segment: str) -> int:
        lo, hi = self.segment_ranges[segment]
        return hi - lo

    def _operators_frame(self) -> DataFrame:
        rows = []
        for k, lo, hi in self.operator_ranges:
            op = self.spec.operators[k]
            size = hi - lo
            row = asdict(op)
            row.update(
                op_idx=k,
                op_start=lo,
                op_size=size,
                n_cards=max(1, round(size / op.accounts_per_card)),
                n_devices=max(1, round(size / op.accounts_per_device)),
            )
            rows.append(row)
        if not rows:
            return self.spark.createDataFrame([], "op_idx int")
        return self.spark.createDataFrame(rows)

    # --------------------------------------------------------------- accounts
    def accounts(self) -> DataFrame:
        """One row per account with its segment, groups and (for farms) operator knobs."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        partitions = max(1, math.ceil(spec.accounts / 500_000))
        base = self.spark.range(0, spec.accounts, 1, partitions).withColumnRenamed("id", "idx")
        segment = F.lit("individual")
        for name in reversed(LEGIT_SEGMENTS):
            lo, hi = self.segment_ranges[name]
            segment = F.when((F.col("idx") >= lo) & (F.col("idx") < hi), name).otherwise(segment)
        segment = F.when(F.col("idx") < self.farm_total, "farm").otherwise(segment)
        op_idx = F.lit(None).cast("int")
        for k, lo, hi in self.operator_ranges:
            op_idx = F.when((F.col("idx") >= lo) & (F.col("idx") < hi), k).otherwise(op_idx)
        seg_start = F.lit(0)
        for name, (lo, _hi) in self.segment_ranges.items():
            seg_start = F.when(F.col("segment") == name, lo).otherwise(seg_start)
        acct_num = F.pmod(F.col("idx") * ID_MULTIPLIER + spec.seed * 7919 + 12345, ID_MODULUS)
        accounts = (
            base.withColumn("segment", segment)
            .withColumn("op_idx", op_idx)
            .withColumn("account_id", F.concat(F.lit("a"), F.lpad(acct_num.cast("string"), 9, "0")))
            .withColumn("acct_num", acct_num)
            .withColumn("local_idx", F.col("idx") - seg_start)
        )
        group = (
            F.when(F.col("segment") == "family", F.floor(F.col("local_idx") / pop.family_size))
            .when(
                F.col("segment") == "office",
                F.floor(self.n_offices * F.pow(d.u("office", "idx"), 2)),
            )
            .when(
                F.col("segment") == "university",
                F.floor(self.n_universities * F.pow(d.u("uni", "idx"), 1.5)),
            )
            .when(F.col("segment") == "cgnat", F.floor(d.u("carrier", "idx") * 3))
            .otherwise(F.lit(None))
            .cast("long")
        )
        accounts = accounts.withColumn("grp", group)
        ops = self._operators_frame()
        if self.farm_total:
            accounts = accounts.join(F.broadcast(ops), "op_idx", "left")
        else:
            for name, dtype in (
                ("is_campaign", "boolean"),
                ("sleeper_share", "double"),
                ("ipv6_share", "double"),
                ("operator", "string"),
            ):
                accounts = accounts.withColumn(name, F.lit(None).cast(dtype))
        is_farm = F.col("segment") == "farm"
        accounts = accounts.withColumn("is_farm", is_farm).withColumn(
            "is_sleeper", is_farm & (d.u("sleeper", "idx") < F.col("sleeper_share"))
        )
        country_u = d.u("country", "idx")
        names = [c[0] for c in COUNTRIES]
        weights = [c[1] for c in COUNTRIES]
        tz_start = {c[0]: c[2] for c in COUNTRIES}
        accounts = accounts.withColumn(
            "country",
            F.when(is_farm, pick(country_u, ["US", "GB", "CA", "DE"], [6, 2, 1, 1])).otherwise(
                pick(country_u, names, weights)
            ),
        )
        tz = F.lit(14)
        for name, hour in tz_start.items():
            tz = F.when(F.col("country") == name, hour).otherwise(tz)
        return accounts.withColumn("tz_start", tz).withColumn(
            "household",
            F.when(
                F.col("segment") == "family",
                self.segment_ranges["family"][0] + F.col("grp") * pop.family_size,
            ).otherwise(F.col("idx")),
        )

    def tables(self) -> dict[str, DataFrame]:
        """All six tables, conformed to their contracts."""
        accounts = self.accounts()
        signups = self.signups(accounts)
        out = {
            "signups": signups,
            "payments": self.payments(accounts),
            "ip_events": self._inject_malformed(self.ip_events(accounts), "ip_events"),
            "api_usage": self._inject_malformed(self.api_usage(accounts), "api_usage"),
            "labels": self.labels(accounts),
            "ground_truth": self.ground_truth(accounts),
        }
        return {
            name: df.select(*[F.col(c.name).cast(c.dtype) for c in CONTRACTS[name].columns])
            for name, df in out.items()
        }


def generate(
    spark: SparkSession,
    spec: WorldSpec,
    lake: Path | ObjectPath,
    table_format: TableFormat = "parquet",
) -> dict[str, int]:
    """Generate a world and write it under ``lake`` (Parquet or Delta); returns row counts."""
    generator = WorldGenerator(spark, spec)
    lake.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, df in generator.tables().items():
        write_table(spark, df, lake / name, table_format)
        counts[name] = spark.read.parquet(str(lake / name)).count()
    meta = {"spec": json.loads(spec.to_json()), "counts": counts, "end_date": spec.end_date}
    (lake / "_world.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return counts
