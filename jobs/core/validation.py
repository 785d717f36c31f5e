"""Contract checks at a transform's boundary.

In: a DataFrame, the name of the table it stands for, and the columns a transform needs. Out:
nothing, or a ``ValueError`` naming the table and the first missing column (graphframes checks
its ``id``/``src``/``dst`` contract the same way). Called by every transform of ``jobs``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame


def require_columns(df: DataFrame, table: str, columns: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first missing column of ``table``."""
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"{table} is missing column {column!r}")
