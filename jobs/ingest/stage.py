"""The ingest stage: the lake's input tables -> accepted and quarantined rows of one run.

In: a :class:`jobs.core.stage.StageContext` (the lake location and format, the ``ingest``
settings, the run date). Out, under the run's layout: ``accepted/<table>``,
``quarantine/<table>`` (the raw row as JSON and its ``reason``) and ``ingest_counts.json``;
the summary is the counts per table, each reconciling (read = accepted + quarantined) and
naming the optional columns the table lacked (``missing_columns``, filled with null), which the
run report prints. Called by the nightly and training flows' ingest task and the tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs.core.contracts import INPUT_TABLES
from jobs.core.lake import remove_tree
from jobs.core.layout import RunLayout
from jobs.core.stage import StageContext
from jobs.core.timing import mark
from jobs.ingest.encodings import missing_optional_columns
from jobs.ingest.validate import (
    InputTableError,
    RunWindow,
    TableCounts,
    first_line,
    judged_rows,
    read_table,
    split_judged,
)


def run(ctx: StageContext, now: datetime | None = None) -> dict[str, Any]:
    """Validate every input table for the run date; write accepted and quarantine tables.

    Returns:
        Counts per table, as dicts of :class:`jobs.ingest.validate.TableCounts`.

    Raises:
        InputTableError: a table is missing, unreadable or breaks its contract's schema.
    """
    spark, settings, layout = ctx.spark, ctx.settings, ctx.layout
    window = RunWindow.for_run(
        ctx.run_date,
        settings.ingest.lookback_days,
        settings.ingest.earliest_valid_ts,
        settings.ingest.max_future_skew_hours,
        now,
    )
    counts: dict[str, TableCounts] = {}
    for contract in INPUT_TABLES:
        raw = read_table(spark, settings.lake.lake_path, contract, settings.lake.format)
        try:
            judged = judged_rows(raw, contract, window)
        except ValueError as exc:
            raise InputTableError(str(exc)) from exc
        # judged once and written once: the accepted and quarantined rows and the counts are
        # split from the written copy instead of parsing and ranking the table for each
        judged_path = layout.judged(contract.name)
        try:
            judged.write.mode("overwrite").parquet(str(judged_path))
        except Exception as exc:  # corrupt data files surface only when rows are read
            raise InputTableError(
                f"input table {contract.name!r} could not be read: {first_line(exc)}"
            ) from exc
        accepted, quarantined, outside = split_judged(
            spark.read.parquet(str(judged_path)), contract
        )
        accepted_path = layout.accepted(contract.name)
        quarantine_path = layout.quarantine(contract.name)
        accepted.write.mode("overwrite").parquet(str(accepted_path))
        quarantined.write.mode("overwrite").parquet(str(quarantine_path))
        n_accepted = spark.read.parquet(str(accepted_path)).count()
        n_quarantined = spark.read.parquet(str(quarantine_path)).count()
        n_outside = outside.count()
        n_read = raw.count() - n_outside
        remove_tree(judged_path.parent)  # the working copy: it holds only this table's
        mark(contract.name)
        table_counts = TableCounts(
            contract.name,
            n_read,
            n_accepted,
            n_quarantined,
            n_outside,
            tuple(missing_optional_columns(raw, contract)),
        )
        if not table_counts.reconciles:
            raise RuntimeError(f"row counts of {contract.name!r} do not reconcile: {table_counts}")
        counts[contract.name] = table_counts
    total_raw = {name: c.read + c.out_of_window for name, c in counts.items()}
    layout.ingest_counts.write_text(
        json.dumps(
            {
                "window": [window.start.isoformat(), window.end.isoformat()],
                "tables": {k: v.as_dict() for k, v in counts.items()},
                "rows_in_lake": total_raw,
            },
            indent=2,
        )
    )
    return {name: c.as_dict() for name, c in counts.items()}


def load_accepted(spark: SparkSession, layout: RunLayout) -> dict[str, DataFrame]:
    """The accepted tables the ingest stage wrote."""
    return {c.name: spark.read.parquet(str(layout.accepted(c.name))) for c in INPUT_TABLES}
