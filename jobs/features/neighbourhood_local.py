"""The ``local`` backend of :mod:`jobs.features.neighbourhood`: the same figures, on the driver.

In: node features and edges (Spark), collected through Arrow. Out: the same columns as the Spark
plan, bit for bit: adjacency and 2-hop neighbourhoods as sparse matrices, each neighbourhood's
exact-moment sums as one integer matrix product, each maximum a ``reduceat``. Called by
:func:`jobs.features.neighbourhood.neighbour_aggregates` when the expansion fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.moments import FRACTION_BITS, MAX_ABS_VALUE, NOISE

NEIGHBOUR_STATISTICS = ("mean", "max", "std")
_MAX_GROUP = 1 << 23  # the exact-moments limit on a neighbourhood's size (jobs.core.moments)


def neighbour_feature_names(feature_columns: Sequence[str], hops: int = 2) -> tuple[str, ...]:
    """The columns :func:`neighbour_aggregates` adds, in output order."""
    names: list[str] = []
    for hop in range(1, hops + 1):
        names.append(f"nbr{hop}_count")
        names += [
            f"nbr{hop}_{stat}_{column}"
            for column in feature_columns
            for stat in NEIGHBOUR_STATISTICS
        ]
    return tuple(names)


def local_aggregates(
    node_features: DataFrame,
    edges: DataFrame,
    feature_columns: Sequence[str],
    hops: int,
    max_degree: int,
    id_column: str,
    max_paths: int | None,
) -> DataFrame | None:
    """:func:`neighbour_aggregates` on the driver; None when ``max_paths`` rules it out.

    The adjacency ``A`` is a 0/1 sparse matrix over the node codes (sorted ids); ``N2`` is
    ``A + A E A`` with ``E`` the nodes that may be expanded through, its diagonal removed and
    its entries set to 1. Each neighbourhood's exact-moment sums are one integer matrix
    product; each maximum is a ``reduceat`` over the row's neighbours.
    """
    graph = _driver_graph(
        node_features, edges, feature_columns, hops, max_degree, id_column, max_paths
    )
    if graph is None:
        return None
    nodes, order, ranked, hoods = graph
    n = len(order)
    id_type = node_features.schema[id_column].dataType
    values = np.empty((n, len(feature_columns)))  # rows in code order; nulls are NaN here
    missing = np.empty((n, len(feature_columns)), dtype=bool)
    for j, column in enumerate(feature_columns):
        values[:, j] = nodes.column(column).to_numpy(zero_copy_only=False)[order]
        missing[:, j] = pc.is_null(nodes.column(column)).to_numpy(zero_copy_only=False)[order]
    parts = _moment_parts(values, missing, feature_columns)
    out: dict[str, pa.Array] = {id_column: ranked}
    for hop, hood in hoods.items():
        count = np.diff(hood.indptr)
        if count.max(initial=0) > _MAX_GROUP:
            raise ValueError(f"a {hop}-hop neighbourhood exceeds the exact-moments limit")
        sums = np.asarray(hood @ parts)
        if sums.dtype != np.int64:  # the sums must be integers to be exact in any order
            raise TypeError(f"neighbourhood moment sums came out as {sums.dtype}, not int64")
        out[f"nbr{hop}_count"] = pa.array(count.astype(np.int64))
        for j, column in enumerate(feature_columns):
            mean, std = _moment_figures(sums[:, 7 * j : 7 * j + 7])
            top = _row_max(hood, np.where(missing[:, j], -np.inf, values[:, j]), count)
            out[f"nbr{hop}_mean_{column}"] = mean
            present = sums[:, 7 * j] + sums[:, 7 * j + 1]  # values and NaNs: the non-nulls
            out[f"nbr{hop}_max_{column}"] = pa.array(top, mask=present == 0)
            out[f"nbr{hop}_std_{column}"] = std
    names = [id_column, *neighbour_feature_names(feature_columns, hops)]
    table = pa.table({name: out[name] for name in names})
    return node_features.sparkSession.createDataFrame(table).select(
        F.col(id_column).cast(id_type).alias(id_column), *names[1:]
    )


def _driver_graph(
    node_features: DataFrame,
    edges: DataFrame,
    feature_columns: Sequence[str],
    hops: int,
    max_degree: int,
    id_column: str,
    max_paths: int | None,
) -> tuple[pa.Table, np.ndarray, pa.Array, dict[int, sp.csr_matrix]] | None:
    """The nodes (Arrow), their code order, the sorted ids and each hop's neighbourhood matrix.

    None when the ids are not unique (``auto``) or the expansion exceeds ``max_paths``.
    """
    id_type = node_features.schema[id_column].dataType
    nodes = node_features.select(
        id_column, *[F.col(c).cast("double").alias(c) for c in feature_columns]
    ).toArrow()
    ids = nodes.column(id_column).combine_chunks()
    if ids.null_count or len(pc.unique(ids)) != len(ids):
        if max_paths is None:
            raise ValueError("the local backend needs unique, non-null node ids")
        return None
    n = len(ids)
    order = pc.sort_indices(ids).to_numpy()
    code = np.empty(n, dtype=np.int64)
    code[order] = np.arange(n)  # node row -> its code
    ranked = ids.take(pa.array(order))
    links = edges.select(F.col("src").cast(id_type), F.col("dst").cast(id_type)).toArrow()
    ends = [pc.index_in(links.column(i), value_set=ranked) for i in (0, 1)]
    known = pc.and_(pc.is_valid(ends[0]), pc.is_valid(ends[1]))
    src, dst = (pc.filter(e, known).to_numpy().astype(np.int64) for e in ends)
    loops = src == dst
    src, dst = src[~loops], dst[~loops]
    ones = np.ones(2 * len(src), dtype=np.int32)
    adjacency = sp.csr_matrix(
        (ones, (np.concatenate([src, dst]), np.concatenate([dst, src]))), shape=(n, n)
    )
    adjacency.data[:] = 1  # duplicates were summed
    degree = np.diff(adjacency.indptr)
    hoods = {1: adjacency}
    if hops == 2:
        expandable = degree <= max_degree
        paths = int(np.square(degree[expandable].astype(np.int64)).sum())
        if max_paths is not None and paths > max_paths:
            return None
        through = adjacency @ sp.diags_array(expandable, format="csr", dtype=np.int32)
        within = (adjacency + through @ adjacency).tocsr()
        within = (
            within - sp.diags_array(within.diagonal(), format="csr", dtype=within.dtype)
        ).tocsr()
        within.eliminate_zeros()  # the node itself is not its own neighbour
        within.data[:] = 1
        within = within.astype(np.int32)  # integer all through: the sums stay exact
        hoods[2] = within
    return nodes, order, ranked, hoods


def _moment_parts(values: np.ndarray, missing: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Per node and feature the seven exact-moment parts of :func:`jobs.core.moments.moment_sums`.

    Columns ``7 j .. 7 j + 6`` are feature ``j``'s ``n, nan, a, b, aa, ab, bb``.
    """
    nan = np.isnan(values) & ~missing
    valid = ~missing & ~nan
    beyond = valid & ~(np.abs(np.where(valid, values, 0.0)) <= MAX_ABS_VALUE)
    if beyond.any():
        row, col = np.argwhere(beyond)[0]
        raise ValueError(
            f"exact moments {columns[col]}: value {values[row, col]} is beyond +-{MAX_ABS_VALUE:g}"
        )
    x = np.where(valid, values, 0.0)
    whole = np.floor(x)
    a = whole.astype(np.int64)
    b = ((x - whole) * float(1 << FRACTION_BITS)).astype(np.int64)  # truncated, as the cast
    parts = np.stack([valid, nan, a, b, a * a, a * b, b * b], axis=2).astype(np.int64)
    return parts.reshape(len(values), 7 * values.shape[1])


def _moment_figures(sums: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Mean and spread from the summed parts: :func:`jobs.core.moments.moment_mean` and ``_std``."""
    n, nan, a, b, aa, ab, bb = (sums[:, i].astype(np.float64) for i in range(7))
    unit = float(1 << FRACTION_BITS)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = a + b / unit
        squares = aa + 2.0 * ab / unit + bb / (unit * unit)
        mean = total / n
        mean_square = squares / n
        variance = mean_square - (total / n) * (total / n)
        spread = np.where(variance <= NOISE * mean_square, 0.0, np.sqrt(variance))
    empty = n == 0
    mean = np.where(nan > 0, np.nan, mean)
    spread = np.where(nan > 0, np.nan, spread)
    return pa.array(mean, mask=empty), pa.array(spread, mask=empty)


def _row_max(hood: sp.csr_matrix, values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The largest value over each row's columns (NaN wins, as in Spark); NaN for empty rows."""
    top = np.full(len(count), np.nan)
    rows = count > 0
    if rows.any():
        top[rows] = np.maximum.reduceat(values[hood.indices], hood.indptr[:-1][rows])
    return top
