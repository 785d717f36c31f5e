"""Synthetic world generator (Spark job).

In: a :class:`jobs.world.WorldSpec`. Out: the five input tables of :mod:`jobs.contracts`
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
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.contracts import CONTRACTS
from jobs.lake import ObjectPath
from jobs.tables import TableFormat, write_table
from jobs.world import WorldSpec

_ID_MODULUS = 1_000_000_000
_ID_MULTIPLIER = 982_451_653  # prime, coprime with the modulus: a bijection on [0, 1e9)

_RESIDENTIAL_ASNS = (7922, 701, 20115, 22773, 209, 5650, 11427, 6128)
_MOBILE_ASNS = (21928, 20057, 22394)
_HOSTING_ASNS = (16509, 15169, 14061, 24940)
_OFFICE_ASN, _EDU_ASN, _VPN_ASN = 3356, 1224, 9009
_FIRST = (
    "james mary robert patricia john jennifer michael linda david elizabeth william "
    "barbara richard susan joseph jessica thomas sarah chris karen daniel lisa matthew "
    "nancy anthony sandra mark betty paul ashley steven kim andrew emily josh donna "
    "kevin michelle brian carol george amanda tim melissa ravi priya wei li yuki hans "
    "lucas sofia"
).split()
_LAST = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez lopez "
    "wilson anderson thomas taylor moore jackson martin lee perez thompson white harris "
    "sanchez clark ramirez lewis robinson walker young allen king wright scott torres "
    "nguyen hill flores green adams nelson baker hall rivera campbell mitchell carter "
    "patel kumar muller"
).split()
_FREE_DOMAINS = (
    ("gmail.com", 0.60),
    ("outlook.com", 0.15),
    ("yahoo.com", 0.10),
    ("icloud.com", 0.08),
    ("proton.me", 0.04),
    ("gmx.de", 0.03),
)
_COUNTRIES = (
    ("US", 0.40, 14),
    ("IN", 0.10, 4),
    ("GB", 0.08, 8),
    ("DE", 0.07, 7),
    ("BR", 0.06, 12),
    ("FR", 0.05, 7),
    ("CA", 0.05, 14),
    ("JP", 0.04, 0),
    ("AU", 0.03, 22),
    ("NL", 0.03, 7),
    ("SG", 0.03, 1),
    ("MX", 0.03, 15),
    ("ES", 0.03, 7),
)
_LEGIT_SEGMENTS = ("family", "office", "university", "cgnat", "vpn", "power_user", "spike")


def _ip_string(ip_int: Column) -> Column:
    octets = [F.shiftright(ip_int, s).bitwiseAND(255).cast("string") for s in (24, 16, 8, 0)]
    return F.concat_ws(".", *octets)


def _pick(u: Column, values: Sequence[object], weights: Sequence[float] | None = None) -> Column:
    """Map a uniform draw to one of ``values`` (weighted, cumulative thresholds)."""
    if weights is None:  # uniform: index an array literal (keeps generated code small)
        index = F.least(F.floor(u * len(values)), F.lit(len(values) - 1)).cast("int")
        return F.element_at(F.array(*[F.lit(v) for v in values]), index + 1)
    total = sum(weights)
    expr = F.lit(values[-1])
    cumulative = 0.0
    thresholds = []
    for value, weight in zip(values, weights, strict=True):
        cumulative += weight / total
        thresholds.append((cumulative, value))
    for cut, value in reversed(thresholds[:-1]):
        expr = F.when(u < cut, F.lit(value)).otherwise(expr)
    return expr


class _Draws:
    """Deterministic uniform draws keyed by seed, draw name and row columns."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def hash(self, name: str, *cols: Column | str) -> Column:
        """A 64-bit hash of (seed, name, cols), non-negative."""
        parts = [F.col(c) if isinstance(c, str) else c for c in cols]
        return F.abs(F.xxhash64(F.lit(self.seed), F.lit(name), *parts))

    def u(self, name: str, *cols: Column | str) -> Column:
        """Uniform draw in [0, 1)."""
        return self.hash(name, *cols).bitwiseAND((1 << 52) - 1).cast("double") / float(1 << 52)

    def normal(self, name: str, *cols: Column | str) -> Column:
        """Approximately standard normal draw (sum of four uniforms, rescaled)."""
        total = sum((self.u(f"{name}#{k}", *cols) for k in range(4)), F.lit(0.0))
        return (total - 2.0) * math.sqrt(3.0)

    def token(self, prefix: str, name: str, *cols: Column | str) -> Column:
        """An opaque identifier such as ``pi_3f9c01ab22``."""
        return F.concat(F.lit(prefix), F.lower(F.hex(self.hash(name, *cols)))).substr(
            1, len(prefix) + 12
        )


class WorldGenerator:
    """Turns a :class:`WorldSpec` into DataFrames; :meth:`write` stores them."""

    def __init__(self, spark: SparkSession, spec: WorldSpec) -> None:
        self.spark = spark
        self.spec = spec
        self.draw = _Draws(spec.seed)
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
        for name in _LEGIT_SEGMENTS:
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
        for name in reversed(_LEGIT_SEGMENTS):
            lo, hi = self.segment_ranges[name]
            segment = F.when((F.col("idx") >= lo) & (F.col("idx") < hi), name).otherwise(segment)
        segment = F.when(F.col("idx") < self.farm_total, "farm").otherwise(segment)
        op_idx = F.lit(None).cast("int")
        for k, lo, hi in self.operator_ranges:
            op_idx = F.when((F.col("idx") >= lo) & (F.col("idx") < hi), k).otherwise(op_idx)
        seg_start = F.lit(0)
        for name, (lo, _hi) in self.segment_ranges.items():
            seg_start = F.when(F.col("segment") == name, lo).otherwise(seg_start)
        acct_num = F.pmod(F.col("idx") * _ID_MULTIPLIER + spec.seed * 7919 + 12345, _ID_MODULUS)
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
                ("operator", "string"),
            ):
                accounts = accounts.withColumn(name, F.lit(None).cast(dtype))
        is_farm = F.col("segment") == "farm"
        accounts = accounts.withColumn("is_farm", is_farm).withColumn(
            "is_sleeper", is_farm & (d.u("sleeper", "idx") < F.col("sleeper_share"))
        )
        country_u = d.u("country", "idx")
        names = [c[0] for c in _COUNTRIES]
        weights = [c[1] for c in _COUNTRIES]
        tz_start = {c[0]: c[2] for c in _COUNTRIES}
        accounts = accounts.withColumn(
            "country",
            F.when(is_farm, _pick(country_u, ["US", "GB", "CA", "DE"], [6, 2, 1, 1])).otherwise(
                _pick(country_u, names, weights)
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

    # -------------------------------------------------------------- networks
    def _network(self, kind: Column, key: str, salt: str) -> tuple[Column, Column, Column]:
        """IPv4 int, ASN and ASN class for a network kind, keyed on an account row."""
        d = self.draw
        household = F.col("household")
        indiv_lo, indiv_hi = self.segment_ranges["individual"]
        proxy_k = F.floor(d.u(f"proxy{salt}", "idx", key) * self.proxy_pool)
        proxy_household = indiv_lo + F.pmod(proxy_k * 7919, F.lit(indiv_hi - indiv_lo))

        def residential(hh: Column) -> tuple[Column, Column]:
            asn_i = F.pmod(d.hash("res_asn", hh), len(_RESIDENTIAL_ASNS))
            ip = 0x18000000 + asn_i * (1 << 20) + F.pmod(d.hash("res_ip", hh), 1 << 20)
            return ip, _pick(asn_i.cast("double") / len(_RESIDENTIAL_ASNS), _RESIDENTIAL_ASNS)

        home_ip, home_asn = residential(household)
        proxy_ip, proxy_asn = residential(proxy_household)
        carrier = F.pmod(d.hash("carrier", "idx"), 3)
        mobile_ip = (
            0xAC380000
            + carrier * (1 << 16)
            + F.pmod(d.hash(f"mob{salt}", "idx", key), self.mobile_pool)
        )
        mobile_asn = _pick(carrier.cast("double") / 3, _MOBILE_ASNS)
        office_ip = (
            0x40000000
            + F.coalesce(F.col("grp"), F.lit(0)) * 8
            + F.pmod(d.hash(f"off{salt}", "idx", key), 2)
        )
        uni_ip = (
            0x80000000
            + F.coalesce(F.col("grp"), F.lit(0)) * 16
            + F.pmod(d.hash(f"uni{salt}", "idx", key), 4)
        )
        vpn_ip = 0xB9000000 + F.pmod(d.hash(f"vpn{salt}", "idx", key), 2000)
        host_i = F.pmod(d.hash("host_asn", "idx"), len(_HOSTING_ASNS))
        hosting_ip = (
            0x03000000
            + host_i * (1 << 20)
            + F.pmod(
                d.hash("host_ip", "idx", F.floor(d.u(f"hostk{salt}", "idx", key) * 3)), 1 << 20
            )
        )
        hosting_asn = _pick(host_i.cast("double") / len(_HOSTING_ASNS), _HOSTING_ASNS)
        table = {
            "home": (home_ip, home_asn, "residential"),
            "proxy": (proxy_ip, proxy_asn, "residential"),
            "mobile": (mobile_ip, mobile_asn, "mobile"),
            "office": (office_ip, F.lit(_OFFICE_ASN), "business"),
            "university": (uni_ip, F.lit(_EDU_ASN), "education"),
            "vpn": (vpn_ip, F.lit(_VPN_ASN), "vpn"),
            "hosting": (hosting_ip, hosting_asn, "hosting"),
        }
        ip, asn, asn_type = F.lit(None).cast("long"), F.lit(None).cast("int"), F.lit(None)
        for name, (k_ip, k_asn, k_type) in table.items():
            ip = F.when(kind == name, k_ip).otherwise(ip)
            asn = F.when(kind == name, k_asn).otherwise(asn)
            asn_type = F.when(kind == name, F.lit(k_type)).otherwise(asn_type)
        return _ip_string(ip.cast("long")), asn.cast("int"), asn_type

    def _network_kind(self, u: Column) -> Column:
        seg = F.col("segment")
        mixes = {
            "farm": (("proxy", "hosting"), (0.95, 0.05)),
            "family": (("home", "mobile"), (0.9, 0.1)),
            "office": (("office", "home"), (0.75, 0.25)),
            "university": (("university", "mobile"), (0.85, 0.15)),
            "cgnat": (("mobile", "home"), (0.95, 0.05)),
            "vpn": (("vpn", "proxy", "home"), (0.5, 0.4, 0.1)),
            "power_user": (("hosting", "home"), (0.7, 0.3)),
        }
        kind = _pick(u, ("home", "mobile"), (0.85, 0.15))
        for name, (kinds, weights) in mixes.items():
            kind = F.when(seg == name, _pick(u, kinds, weights)).otherwise(kind)
        return kind

    # ----------------------------------------------------------------- tables
    def _signup_seconds(self) -> Column:
        """Signup time in epoch seconds, as a pure function of the account row."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        end_s = int(self.end.timestamp())
        ws_s = int(self.window_start.timestamp())
        day = 86400
        seg = F.col("segment")
        legit_ts = end_s - d.u("signup", "idx") * spec.history_days * day
        uni_ts = (
            end_s
            - d.u("uni_term", "grp") * spec.history_days * day
            + d.u("signup", "idx") * 7 * day
        )
        spike_ts = (end_s - 30 * day + 15 * 3600) + d.u("signup", "idx") * pop.spike_minutes * 60
        burst = F.floor(d.u("burst", "idx") * F.col("n_signup_bursts"))
        burst_start = ws_s - 20 * day + d.u("burst_start", "operator", burst) * 30 * day
        farm_burst_ts = burst_start + d.u("signup", "idx") * F.col("burst_minutes") * 60
        farm_drip_ts = ws_s - 7 * day + d.u("signup", "idx") * F.col("signup_spread_days") * day
        sleeper_ts = ws_s - 60 * day + d.u("signup", "idx") * 30 * day
        return F.floor(
            F.least(
                F.lit(end_s - 1),
                F.when(F.col("is_sleeper"), sleeper_ts)
                .when((seg == "farm") & (F.col("signup_mode") == "burst"), farm_burst_ts)
                .when(seg == "farm", farm_drip_ts)
                .when(seg == "university", uni_ts)
                .when(seg == "spike", spike_ts)
                .otherwise(legit_ts),
            )
        )

    def signups(self, accounts: DataFrame) -> DataFrame:
        """The ``signups`` table."""
        d = self.draw
        signup_s = self._signup_seconds()
        accounts = accounts.withColumn("net_kind", self._network_kind(d.u("signup_net", "idx")))
        ip, asn, _ = self._network(F.col("net_kind"), "idx", "s")
        return accounts.select(
            "account_id",
            F.timestamp_seconds(F.floor(signup_s)).alias("signup_ts"),
            self._email().alias("email"),
            ip.alias("signup_ip"),
            asn.alias("signup_asn"),
            self._device().alias("device_fingerprint"),
            self._client(F.lit(0)).alias("client_fingerprint"),
            "country",
        )

    def _email(self) -> Column:
        d, pop = self.draw, self.spec.population
        first = _pick(d.u("first", "idx"), _FIRST)
        last = _pick(d.u("last", "idx"), _LAST)
        digits = F.pmod(F.col("acct_num"), 1_000_000).cast("string")
        style = d.u("email_style", "idx")
        legit_local = (
            F.when(style < 0.4, F.concat(first, F.lit("."), last, digits))
            .when(style < 0.7, F.concat(first, last, F.substring(digits, 1, 4)))
            .otherwise(F.concat(F.substring(first, 1, 3), F.lit("_"), last, F.lit("_"), digits))
        )
        free = _pick(
            d.u("free_dom", "idx"), [x[0] for x in _FREE_DOMAINS], [x[1] for x in _FREE_DOMAINS]
        )
        seg = F.col("segment")
        legit_domain = (
            F.when(seg == "office", F.concat(F.lit("corp"), F.col("grp"), F.lit(".com")))
            .when(seg == "university", F.concat(F.lit("uni"), F.col("grp"), F.lit(".edu")))
            .when(d.u("own_dom", "idx") < pop.free_email_share, free)
            .otherwise(F.concat(last, F.pmod(d.hash("dom", "idx"), 100000), F.lit(".net")))
        )
        farm_domain_k = F.floor(d.u("farm_dom", "idx") * F.col("n_email_domains"))
        farm_domain = F.when(d.u("farm_free", "idx") < F.col("free_email_share"), free).otherwise(
            F.concat(
                F.lower(F.hex(F.pmod(d.hash("fdom", "operator", farm_domain_k), 1 << 24))),
                _pick(d.u("tld", "operator", farm_domain_k), [".xyz", ".site", ".online", ".top"]),
            )
        )
        farm_local = F.concat(
            first, last, F.lpad(F.pmod(d.hash("fd", "idx"), 10000).cast("string"), 4, "0")
        )
        return F.when(seg == "farm", F.concat(farm_local, F.lit("@"), farm_domain)).otherwise(
            F.concat(legit_local, F.lit("@"), legit_domain)
        )

    def _device(self) -> Column:
        d = self.draw
        seg = F.col("segment")
        farm_device = F.when(
            d.u("dev_rand", "idx") < F.col("device_randomised_share"), d.token("", "dev", "idx")
        ).otherwise(
            d.token("", "fdev", "operator", F.floor(d.u("fdev_k", "idx") * F.col("n_devices")))
        )
        return (
            F.when(seg == "farm", farm_device)
            .when(
                (seg == "family") & (d.u("fam_dev", "idx") < 0.5), d.token("", "hdev", "household")
            )
            .otherwise(d.token("", "dev", "idx"))
        )

    def _client(self, day: Column) -> Column:
        d, pop = self.draw, self.spec.population
        popular = d.token("cf_", "client", F.floor(pop.n_clients * F.pow(d.u("client", "idx"), 2)))
        farm = F.when(d.u("cli_rand", "idx") < F.col("client_randomised_share"), popular).otherwise(
            d.token("cf_", "fclient", "operator", F.pmod(d.hash("fcl", "idx"), 2))
        )
        sdk = d.token("cf_", "sdk", F.pmod(d.hash("sdk", "idx"), 5))
        seg = F.col("segment")
        return F.when(seg == "farm", farm).when(seg == "power_user", sdk).otherwise(popular)

    def payments(self, accounts: DataFrame) -> DataFrame:
        """The ``payments`` table (1-2 attempts per paying account in the window)."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        seg = F.col("segment")
        is_farm = seg == "farm"
        pays = is_farm | (d.u("pays", "idx") < pop.paying_share)
        n_pay = 1 + F.floor(d.u("n_pay", "idx") * 2).cast("int")
        rows = accounts.where(pays).withColumn("k", F.explode(F.sequence(F.lit(0), n_pay - 1)))
        farm_card = F.floor(
            d.u("fcard", "idx", F.when(d.u("switch", "idx", "k") < 0.3, F.col("k")).otherwise(0))
            * F.col("n_cards")
        )
        # an operator buying a card per account (virtual cards by the thousand) never reuses one
        farm_card = F.when(F.col("accounts_per_card") <= 1, F.col("idx")).otherwise(farm_card)
        card_key = (
            F.when(is_farm, F.concat(F.lit("f"), F.col("operator"), F.lit("_"), farm_card))
            .when(
                (seg == "family") & (d.u("famcard", "idx") < 0.7),
                F.concat(F.lit("h"), F.col("household")),
            )
            .when(
                (seg == "office") & (d.u("teamcard", "idx") < 0.3),
                F.concat(F.lit("o"), F.col("grp"), F.lit("_"), F.pmod(d.hash("team", "idx"), 12)),
            )
            .otherwise(F.concat(F.lit("p"), F.col("idx")))
        )
        rows = rows.withColumn("card_key", card_key)
        legit_bin = F.concat(
            F.lit("4"),
            F.lpad(
                F.pmod(
                    d.hash("bin", F.floor(300 * F.pow(d.u("bin_k", "card_key"), 2))), 100000
                ).cast("string"),
                5,
                "0",
            ),
        )
        farm_bin = F.concat(
            F.lit("5"),
            F.lpad(
                F.pmod(
                    d.hash("fbin", "operator", F.pmod(d.hash("fb", "card_key"), F.col("n_bins"))),
                    100000,
                ).cast("string"),
                5,
                "0",
            ),
        )
        legit_post = F.lpad(
            F.pmod(
                d.hash("post", F.floor(3000 * F.pow(d.u("post_k", "card_key"), 1.5))), 100000
            ).cast("string"),
            5,
            "0",
        )
        farm_post = F.lpad(
            F.pmod(
                d.hash("fpost", "operator", F.pmod(d.hash("fp", "card_key"), F.col("n_postcodes"))),
                100000,
            ).cast("string"),
            5,
            "0",
        )
        card_type = F.when(
            is_farm,
            F.when(d.u("virt", "card_key") < F.col("virtual_card_share"), "virtual").otherwise(
                "prepaid"
            ),
        ).otherwise(
            _pick(d.u("ctype", "card_key"), ["credit", "debit", "prepaid"], [0.6, 0.35, 0.05])
        )
        outcome_u = d.u("outcome", "idx", "k")
        outcome = F.when(
            is_farm, _pick(outcome_u, ["approved", "declined", "chargeback"], [0.8, 0.17, 0.03])
        ).otherwise(_pick(outcome_u, ["approved", "declined", "refunded"], [0.96, 0.03, 0.01]))
        ws_s = int(self.window_start.timestamp())
        pay_s = ws_s + d.u("pay_ts", "idx", "k") * spec.window_days * 86400
        return rows.select(
            "account_id",
            F.timestamp_seconds(F.floor(pay_s)).alias("payment_ts"),
            d.token("pi_", "instrument", "card_key").alias("instrument_fingerprint"),
            F.when(is_farm, farm_bin).otherwise(legit_bin).alias("card_bin"),
            card_type.alias("card_type"),
            F.when(is_farm, farm_post).otherwise(legit_post).alias("billing_postcode"),
            F.when(is_farm, F.lit("US")).otherwise(F.col("country")).alias("billing_country"),
            F.when(is_farm, 20.0)
            .otherwise(_pick(d.u("amt", "idx"), [20.0, 200.0, 5.0], [0.8, 0.1, 0.1]))
            .alias("amount"),
            outcome.alias("outcome"),
        )

    def _active_days(self, accounts: DataFrame) -> DataFrame:
        """Account x day rows for days with API activity."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        seg = F.col("segment")
        days = accounts.withColumn(
            "day", F.explode(F.sequence(F.lit(0), F.lit(spec.window_days - 1)))
        )
        p_active = (
            F.when(
                F.col("is_sleeper"),
                F.when(
                    F.col("day") >= spec.window_days - F.col("sleeper_active_days"), 1.0
                ).otherwise(0.0),
            )
            .when(seg == "farm", F.col("active_day_share"))
            .when(seg == "power_user", 0.9)
            .otherwise(pop.active_day_share * (0.3 + 1.4 * d.u("activity", "idx")))
        )
        return days.where(d.u("active", "idx", "day") < p_active)

    def _hours_mask(self, start: Column, length: Column) -> Column:
        """24-bit mask with ``length`` consecutive hours set from ``start`` (wrapping)."""
        start = F.pmod(start, 24)
        base = (F.pow(F.lit(2), length) - 1).cast("long")
        left = base * F.pow(F.lit(2), start).cast("long")
        right = F.floor(base / F.pow(F.lit(2), 24 - start)).cast("long")
        return left.bitwiseOR(right).bitwiseAND(0xFFFFFF).cast("int")

    def api_usage(self, accounts: DataFrame) -> DataFrame:
        """The ``api_usage`` table: one row per account and active day after signup."""
        d, pop = self.draw, self.spec.population
        seg = F.col("segment")
        is_farm = seg == "farm"
        signed = accounts.withColumn("signup_day", self._signup_day())
        days = self._active_days(signed).where(F.col("day") >= F.col("signup_day"))
        legit_req = F.exp(
            math.log(pop.individual_requests_per_day) + 0.9 * d.normal("req", "idx", "day")
        )
        power_req = pop.power_user_requests_per_day * (0.9 + 0.2 * d.u("preq", "idx", "day"))
        farm_req = F.col("requests_per_day") * (
            1 + F.col("requests_jitter") * (2 * d.u("freq", "idx", "day") - 1)
        )
        # a blending farm account behaves like an ordinary user on a share of its days
        blends = {
            knob: is_farm & (d.u(knob, "idx", "day") < F.col(knob))
            for knob in ("volume_blend", "prompt_blend", "schedule_blend")
        }
        requests = F.greatest(
            F.lit(1),
            F.round(
                F.when(is_farm & ~blends["volume_blend"], farm_req)
                .when(seg == "power_user", power_req)
                .otherwise(legit_req)
            ),
        ).cast("long")
        per_token = F.when(is_farm, 2400 + 200 * d.u("tok", "idx", "day")).otherwise(
            600 + 2400 * d.u("tok", "idx", "day")
        )
        shape = lambda u: F.floor(pop.n_prompt_shapes * F.pow(u, 3))  # noqa: E731
        legit_sig = F.when(
            d.u("fav_pick", "idx", "day") < 0.7, shape(d.u("fav", "idx", F.pmod(F.col("day"), 2)))
        )
        legit_sig = legit_sig.otherwise(shape(d.u("sig", "idx", "day")))
        template = F.floor(d.u("tmpl", "idx", "day") * F.col("n_prompt_templates"))
        signature = F.when(
            is_farm
            & ~blends["prompt_blend"]
            & (d.u("use_tmpl", "idx", "day") < F.col("template_share")),
            d.token("ps_", "template", "operator", template),
        ).otherwise(d.token("ps_", "shape", legit_sig.cast("long")))
        farm_start = F.col("schedule_start_hour") + F.when(
            d.u("jit", "idx", "day") < F.col("schedule_jitter"),
            F.when(d.u("jdir", "idx", "day") < 0.5, -1).otherwise(1),
        ).otherwise(0)
        legit_start = (
            F.col("tz_start")
            + F.floor(d.u("hstart", "idx") * 6)
            + F.floor(d.u("hday", "idx", "day") * 5)
            - 2
        )
        legit_len = 2 + F.floor(d.u("hlen", "idx") * 8) + F.floor(d.u("hlen", "idx", "day") * 3)
        mask = (
            F.when(
                is_farm & ~blends["schedule_blend"],
                self._hours_mask(farm_start.cast("int"), F.col("schedule_hours").cast("int")),
            )
            .when((seg == "power_user") & (d.u("ci", "idx") < 0.6), F.lit(0xFFFFFF))
            .otherwise(self._hours_mask(legit_start.cast("int"), legit_len.cast("int")))
        )
        usage_date = F.date_add(F.lit(self.window_start.date()), F.col("day"))
        return days.select(
            "account_id",
            usage_date.alias("usage_date"),
            requests.alias("requests"),
            F.round(requests * per_token).cast("long").alias("tokens"),
            signature.alias("prompt_signature"),
            mask.alias("active_hours_mask"),
            self._client(F.col("day")).alias("client_fingerprint"),
        )

    def _signup_day(self) -> Column:
        """Window day index of the signup (negative if before the window); mirrors signups."""
        window_start_s = int(self.window_start.timestamp())
        return F.floor((self._signup_seconds() - window_start_s) / 86400).cast("int")

    def ip_events(self, accounts: DataFrame) -> DataFrame:
        """The ``ip_events`` table: logins and API sessions with their network."""
        d, spec = self.draw, self.spec
        seg = F.col("segment")
        is_farm = seg == "farm"
        signed = accounts.withColumn("signup_day", self._signup_day())
        farm_days = F.when(F.col("is_sleeper"), F.col("sleeper_active_days")).otherwise(
            F.least(
                F.lit(spec.window_days),
                spec.window_days - F.greatest(F.col("signup_day"), F.lit(0)),
            )
            * F.col("active_day_share")
        )
        n_events = (
            F.when(is_farm, F.greatest(F.lit(1), F.round(farm_days * F.col("proxy_ips_per_day"))))
            .otherwise(1 + F.floor(d.u("n_ev", "idx") * 6))
            .cast("int")
        )
        events = signed.withColumn("ev", F.explode(F.sequence(F.lit(0), n_events - 1)))
        first_day = F.greatest(F.col("signup_day"), F.lit(0))
        first_day = F.when(
            F.col("is_sleeper"), spec.window_days - F.col("sleeper_active_days")
        ).otherwise(first_day)
        span = F.greatest(F.lit(1), spec.window_days - first_day)
        day = first_day + F.floor(d.u("ev_day", "idx", "ev") * span)
        blended = d.u("schedule_blend", "idx", "ev") < F.col("schedule_blend")
        hour = F.when(
            is_farm & ~blended,
            F.col("schedule_start_hour")
            + F.floor(d.u("ev_h", "idx", "ev") * F.col("schedule_hours")),
        ).otherwise(F.col("tz_start") + F.floor(d.u("ev_h", "idx", "ev") * 10))
        ws_s = int(self.window_start.timestamp())
        ts = ws_s + day * 86400 + F.pmod(hour, 24) * 3600 + F.floor(d.u("ev_s", "idx", "ev") * 3600)
        ip, asn, asn_type = self._network(self._network_kind(d.u("ev_net", "idx", "ev")), "ev", "e")
        event_type = _pick(
            d.u("ev_type", "idx", "ev"), ["api_session", "login", "payment"], [0.7, 0.25, 0.05]
        )
        return events.select(
            "account_id",
            F.timestamp_seconds(F.floor(ts)).alias("event_ts"),
            ip.alias("ip"),
            asn.alias("asn"),
            asn_type.alias("asn_type"),
            event_type.alias("event_type"),
        )

    def labels(self, accounts: DataFrame) -> DataFrame:
        """The ``labels`` table: some farm accounts confirmed fraud, some customers verified."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        is_farm = F.col("segment") == "farm"
        labelled = F.when(is_farm, d.u("label", "idx") < F.col("label_share")).otherwise(
            d.u("label", "idx") < pop.label_share
        )
        ws_s = int(self.window_start.timestamp())
        frac = F.when(F.col("is_campaign"), 0.7 + 0.3 * d.u("lab_t", "idx")).otherwise(
            F.when(is_farm, 0.2 + 0.8 * d.u("lab_t", "idx")).otherwise(d.u("lab_t", "idx"))
        )
        source = (
            F.when(F.col("is_campaign"), F.lit("abuse_report"))
            .when(
                is_farm,
                _pick(
                    d.u("lab_src", "idx"),
                    ["chargeback", "trust_review", "abuse_report"],
                    [0.3, 0.5, 0.2],
                ),
            )
            .otherwise(F.lit("verified_customer"))
        )
        return accounts.where(labelled).select(
            "account_id",
            F.when(is_farm, 1).otherwise(0).cast("int").alias("label"),
            F.timestamp_seconds(F.floor(ws_s + frac * (spec.window_days - 1) * 86400)).alias(
                "labelled_at"
            ),
            source.alias("source"),
        )

    def _inject_malformed(self, table: DataFrame, name: str) -> DataFrame:
        """Break a small, seeded share of rows the way real feeds break.

        A picked row gets one of: a null ``account_id``, a 1970 timestamp, an out-of-contract
        value (negative ``requests`` or an unknown ``event_type``), or a duplicate copy. Ingest
        must quarantine all of them; ``WorldSpec.malformed_share = 0`` turns this off.
        """
        share = self.spec.malformed_share
        if share <= 0:
            return table
        d = self.draw
        row_key = F.concat_ws("|", *[F.col(c).cast("string") for c in table.columns])
        # one pass: -1 = untouched, 0..2 = broken in place, 3 = emitted twice
        bad = F.when(
            d.u(f"bad_{name}", row_key) < share, F.floor(d.u(f"bad_kind_{name}", row_key) * 4)
        ).otherwise(-1)
        time_col = "usage_date" if name == "api_usage" else "event_ts"
        epoch = F.lit("1970-01-01").cast(table.schema[time_col].dataType)
        marked = table.withColumn("_bad", bad).withColumn(
            "_copy",
            F.explode(
                F.when(F.col("_bad") == 3, F.array(F.lit(0), F.lit(1))).otherwise(F.array(F.lit(0)))
            ),
        )
        broken = marked.withColumn(
            "account_id", F.when(F.col("_bad") == 0, F.lit(None)).otherwise(F.col("account_id"))
        ).withColumn(time_col, F.when(F.col("_bad") == 1, epoch).otherwise(F.col(time_col)))
        if name == "api_usage":
            broken = broken.withColumn(
                "requests", F.when(F.col("_bad") == 2, F.lit(-5)).otherwise(F.col("requests"))
            )
        else:
            broken = broken.withColumn(
                "event_type",
                F.when(F.col("_bad") == 2, F.lit("teleport")).otherwise(F.col("event_type")),
            )
        return broken.drop("_bad", "_copy")

    def ground_truth(self, accounts: DataFrame) -> DataFrame:
        """The ``ground_truth`` table (evaluation only)."""
        return accounts.select(
            "account_id",
            F.col("is_farm"),
            F.col("operator"),
            F.when(F.col("is_farm"), F.concat(F.lit("farm_"), F.col("operator"))).alias("farm_id"),
            "segment",
            F.coalesce(F.col("is_campaign"), F.lit(False)).alias("is_campaign"),
            F.coalesce(F.col("is_sleeper"), F.lit(False)).alias("is_sleeper"),
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
