"""Seconds per part of a stage, so a benchmark shows where a change lands.

In: :func:`mark` calls from stage code at the points where Spark has just computed something
(every :func:`jobs.core.lake.persist` is one: the write runs the plan since the last mark).
Out: inside :func:`part_clock`, the seconds between consecutive marks, by part name (a part
marked twice adds up), and what no mark claimed as ``other``; and each part's span on the wall
clock (epoch seconds), so a benchmark can set Spark's task times beside them. Outside a clock,
:func:`mark` does nothing. Called by the flows' stage ledger (:mod:`flows.ledger`), which
records the parts of every stage it runs, and by the stages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class PartClock:
    """Seconds between consecutive marks, by part, and the parts' spans on the wall clock."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.last_epoch = time.time()
        self.parts: dict[str, float] = {}
        self.spans: list[tuple[str, float, float]] = []  # (part, start, end), epoch seconds

    def mark(self, name: str) -> None:
        """Give the seconds since the last mark (or the start) to ``name``."""
        now, epoch = time.perf_counter(), time.time()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.last
        self.spans.append((name, round(self.last_epoch, 3), round(epoch, 3)))
        self.last, self.last_epoch = now, epoch

    def finish(self) -> dict[str, float]:
        """The parts, with the seconds after the last mark as ``other``, rounded to 0.01 s."""
        self.mark("other")
        return {name: round(seconds, 2) for name, seconds in self.parts.items()}


_CLOCK: ContextVar[PartClock | None] = ContextVar("farmwatch_part_clock", default=None)


@contextmanager
def part_clock() -> Iterator[PartClock]:
    """A clock that :func:`mark` calls in this context (and the Prefect tasks it calls) reach."""
    clock = PartClock()
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


def mark(name: str) -> None:
    """End the part ``name`` on the current clock; nothing when no clock runs."""
    clock = _CLOCK.get()
    if clock is not None:
        clock.mark(name)
