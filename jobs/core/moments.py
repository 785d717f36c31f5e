"""Mean and population standard deviation that do not depend on row order or partitioning.

Spark's ``avg`` and ``stddev_pop`` of non-integer doubles add partial results in the order the
partitions arrive, so their last bits change with the number of shuffle partitions, executors
or cores. A feature that differs in its 13th digit can still fall on the other side of a
LightGBM split the model learnt from the same (noisy) values, and then the same lake publishes
a different ban list on a cluster than in local mode. These helpers sum fixed-point integers
instead: integer addition gives the same total in any order, so the figures are bit-identical
wherever the job runs.

How: each value ``x`` is cut into its whole part ``a = floor(x)`` and ``b``, the fraction in
units of 2**-20 (truncated; so ``x`` counts to within 1e-6). The group sums ``a``, ``b``, ``a*a``,
``a*b`` and ``b*b`` as longs, which are the exact sums of the (quantised) values and of their
squares; the mean and spread are computed once from those totals. With ``|x| <=``
:data:`MAX_ABS_VALUE` (< 2**20) every product is below 2**40, so a group of up to 2**23 (about
8.4 million) non-null rows sums exactly; a larger one stops with Spark's arithmetic overflow
error (ANSI mode) rather than a wrong figure, and a value beyond the range stops the job with an
error naming it.
Nulls are skipped (as ``avg`` does); a NaN makes the group's mean and spread NaN (as ``avg``).

Usage: ``df.groupBy(k).agg(*moment_sums(F.col("x"), "_x")).select(k, moment_mean("_x"),
moment_std("_x"))``.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

FRACTION_BITS = 20
MAX_ABS_VALUE = 1_000_000.0
_PARTS = ("n", "nan", "a", "b", "aa", "ab", "bb")
# below this share of the mean square a variance is double rounding, not spread
NOISE = 1e-12


def moment_sums(x: Column, tag: str) -> list[Column]:
    """Aggregate expressions: the exact count and fixed-point sums of ``x`` and ``x*x``.

    Raises (when the query runs): a Spark error naming the limit when ``|x|`` exceeds
    :data:`MAX_ABS_VALUE` or is infinite.
    """
    value = x.cast("double")
    nan = F.isnan(value)
    checked = F.when(nan, F.lit(None).cast("double")).otherwise(
        F.when(
            F.abs(value) > MAX_ABS_VALUE,
            F.raise_error(
                F.concat(
                    F.lit(f"exact moments {tag}: value "),
                    value.cast("string"),
                    F.lit(f" is beyond +-{MAX_ABS_VALUE:g}"),
                )
            ),
        ).otherwise(value)
    )
    whole = F.floor(checked)
    fraction = ((checked - whole) * float(1 << FRACTION_BITS)).cast("long")
    parts = {
        "n": F.count(checked),
        "nan": F.sum(nan.cast("int")),
        "a": F.sum(whole),
        "b": F.sum(fraction),
        "aa": F.sum(whole * whole),
        "ab": F.sum(whole * fraction),
        "bb": F.sum(fraction * fraction),
    }
    return [parts[part].alias(f"{tag}_{part}") for part in _PARTS]


def _part(tag: str, part: str) -> Column:
    return F.col(f"{tag}_{part}").cast("double")


def _first_and_second(tag: str) -> tuple[Column, Column]:
    """The group's sum of values and sum of squares, as doubles from the exact totals."""
    unit = float(1 << FRACTION_BITS)
    total = _part(tag, "a") + _part(tag, "b") / unit
    squares = _part(tag, "aa") + 2.0 * _part(tag, "ab") / unit + _part(tag, "bb") / (unit * unit)
    return total, squares


def _finish(tag: str, figure: Column) -> Column:
    """Null for a group without values, NaN when any value was NaN, else ``figure``."""
    return (
        F.when(F.col(f"{tag}_n") == 0, F.lit(None).cast("double"))
        .when(F.col(f"{tag}_nan") > 0, F.lit(float("nan")))
        .otherwise(figure)
    )


def moment_mean(tag: str) -> Column:
    """The mean of the values summed under ``tag`` (null when the group had none)."""
    total, _ = _first_and_second(tag)
    return _finish(tag, total / _part(tag, "n"))


def moment_std(tag: str) -> Column:
    """The population standard deviation of the values summed under ``tag``."""
    total, squares = _first_and_second(tag)
    n = _part(tag, "n")
    mean_square = squares / n
    variance = mean_square - (total / n) * (total / n)
    spread = F.when(variance <= NOISE * mean_square, F.lit(0.0)).otherwise(F.sqrt(variance))
    return _finish(tag, spread)
