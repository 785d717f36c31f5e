"""The one shape of every stage: ``run(ctx) -> summary``.

In: a :class:`StageContext`: the Spark session, the settings, the run's :class:`RunLayout`, the
run date and what a late stage needs from earlier ones (the champion model and its version for
scoring and publishing, the earlier stages' summaries, an operator's release of a held list).
Out: each stage's ``run`` returns a JSON-ready summary dict (the flows' ledger records it).
Called by the Prefect tasks of :mod:`flows.nightly` and :mod:`flows.training`, the benchmarks
and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from pyspark.sql import SparkSession

from jobs.core.config import Settings
from jobs.core.layout import RunLayout


@dataclass(frozen=True)
class StageContext:
    """What a stage runs with."""

    spark: SparkSession
    settings: Settings
    layout: RunLayout
    run_date: date
    model: Any = None
    model_version: str | None = None
    earlier: Mapping[str, Any] = field(default_factory=dict)  # stage name -> its summary
    release_held: bool = False
    code_version: str = "unknown"

    @property
    def window_end(self) -> datetime:
        """The end of the run's window: midnight (UTC) after the run date."""
        return datetime.combine(self.run_date, datetime.min.time()) + timedelta(days=1)


class Stage(Protocol):
    """A stage module's entry."""

    def __call__(self, ctx: StageContext) -> dict[str, Any]:
        """Run the stage; return its summary."""
        ...
