"""Deterministic draws and the vocabularies the synthetic world is made of.

In: a seed, a draw name and row columns. Out: uniform and normal draws, opaque tokens and
weighted picks as Spark columns, all pure functions of their inputs (never ``rand()``), and the
name, domain, country and network vocabularies. Called by the world generator
(:mod:`jobs.world.generate`, :mod:`jobs.world.identity`, :mod:`jobs.world.activity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

ID_MODULUS = 1_000_000_000


ID_MULTIPLIER = 982_451_653  # prime, coprime with the modulus: a bijection on [0, 1e9)


RESIDENTIAL_ASNS = (7922, 701, 20115, 22773, 209, 5650, 11427, 6128)


MOBILE_ASNS = (21928, 20057, 22394)


HOSTING_ASNS = (16509, 15169, 14061, 24940)

OFFICE_ASN, EDU_ASN, VPN_ASN = 3356, 1224, 9009
FIRST = (
    "james mary robert patricia john jennifer michael linda david elizabeth william "
    "barbara richard susan joseph jessica thomas sarah chris karen daniel lisa matthew "
    "nancy anthony sandra mark betty paul ashley steven kim andrew emily josh donna "
    "kevin michelle brian carol george amanda tim melissa ravi priya wei li yuki hans "
    "lucas sofia"
).split()


LAST = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez lopez "
    "wilson anderson thomas taylor moore jackson martin lee perez thompson white harris "
    "sanchez clark ramirez lewis robinson walker young allen king wright scott torres "
    "nguyen hill flores green adams nelson baker hall rivera campbell mitchell carter "
    "patel kumar muller"
).split()


FREE_DOMAINS = (
    ("gmail.com", 0.60),
    ("outlook.com", 0.15),
    ("yahoo.com", 0.10),
    ("icloud.com", 0.08),
    ("proton.me", 0.04),
    ("gmx.de", 0.03),
)


COUNTRIES = (
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


LEGIT_SEGMENTS = ("family", "office", "university", "cgnat", "vpn", "power_user", "spike")


def ip_string(ip_int: Column) -> Column:
    """Dotted IPv4 text of a 32-bit integer column."""
    octets = [F.shiftright(ip_int, s).bitwiseAND(255).cast("string") for s in (24, 16, 8, 0)]
    return F.concat_ws(".", *octets)


def ipv6_string(groups: Sequence[Column]) -> Column:
    """IPv6 text of eight 16-bit group columns, every group in hex as many logs write it.

    No leading zeros and no ``::``: ingest brings it to its RFC 5952 form.
    """
    return F.concat_ws(":", *[F.lower(F.hex(F.pmod(g, 1 << 16))) for g in groups])


def pick(u: Column, values: Sequence[object], weights: Sequence[float] | None = None) -> Column:
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


class Draws:
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
