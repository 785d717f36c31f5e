"""Every intermediate of one run, named once: the only place a run-folder path is spelled.

In: a run folder (``<lake.runs>/dt=YYYY-MM-DD``: a local :class:`pathlib.Path` or an
:class:`jobs.core.lake.ObjectPath`). Out: the location of each dataset the stages write and
read. Called by every stage, the flows, training, the benchmarks and the tests.

- ``accepted/<table>``, ``quarantine/<table>``, ``ingest_counts.json`` (ingest): valid rows;
  rejected rows with a ``reason``; read = accepted + quarantined (``ingest_judged/<table>``:
  the one pass both are split from, removed once they are written);
- ``graph/account_entities``, ``graph/entity_stats``, ``graph/account_links`` (graph):
  keyed-hash entities, their degrees, star links;
- ``graph/components``, ``graph/refined``, ``graph/communities`` (communities): components,
  Leiden communities, farm candidates; ``graph/refine_cut/<table>``: the rounds of cutting a
  component above ``graph.refine_max_task_accounts`` (only when one is);
- ``account_features``, ``feature_reference.json``, ``group_anomaly``, ``features``
  (features): the model's input table and what it is built from;
- ``scores`` (score): score, account score, reasons, own evidence;
- ``banlist.parquet`` (publish): the run's copy of the list it published;
- ``report.json`` (report): the run summary;
- ``_stages/<stage>.json`` (the flows' ledger): finished stages, for resuming.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunLayout:
    """Where one run's datasets live (see the module docstring's table)."""

    root: Any  # Path | ObjectPath: both offer "/", str() and the file methods the stages use

    @classmethod
    def at(cls, root: Path | Any) -> RunLayout:
        """The layout of the run folder ``root``."""
        return cls(root)

    def accepted(self, table: str) -> Any:
        """Valid rows of an input table."""
        return self.root / "accepted" / table

    def quarantine(self, table: str) -> Any:
        """Rejected rows of an input table, each with its reason."""
        return self.root / "quarantine" / table

    def judged(self, table: str) -> Any:
        """Every row of an input table judged once (ingest's working copy, removed after)."""
        return self.root / "ingest_judged" / table

    @property
    def ingest_counts(self) -> Any:
        """Rows read, accepted, quarantined and outside the window, per table (JSON)."""
        return self.root / "ingest_counts.json"

    @property
    def account_entities(self) -> Any:
        """``account_id, entity_type, entity_id`` (keyed hashes)."""
        return self.root / "graph" / "account_entities"

    @property
    def entity_stats(self) -> Any:
        """Degree, weight and hub flag per entity."""
        return self.root / "graph" / "entity_stats"

    @property
    def account_links(self) -> Any:
        """Star edges through shared hard keys."""
        return self.root / "graph" / "account_links"

    @property
    def components(self) -> Any:
        """``account_id, component_id``."""
        return self.root / "graph" / "components"

    @property
    def refined(self) -> Any:
        """Communities after Leiden and the core rule, before farm ids."""
        return self.root / "graph" / "refined"

    @property
    def refine_cut(self) -> Any:
        """Scratch tables of the cut of components above the Leiden task cap."""
        return self.root / "graph" / "refine_cut"

    @property
    def communities(self) -> Any:
        """The communities table trust teams and later stages read."""
        return self.root / "graph" / "communities"

    @property
    def farm_entities(self) -> Any:
        """Per farm candidate member, the entities two or more of its members hold."""
        return self.root / "graph" / "farm_entities"

    @property
    def account_features(self) -> Any:
        """One row of account features per account."""
        return self.root / "account_features"

    @property
    def feature_reference(self) -> Any:
        """What ordinary accounts show (percentiles per account feature, JSON)."""
        return self.root / "feature_reference.json"

    @property
    def group_anomaly(self) -> Any:
        """Farm candidates against random groups of their size."""
        return self.root / "group_anomaly"

    @property
    def features(self) -> Any:
        """The model's input table."""
        return self.root / "features"

    @property
    def scores(self) -> Any:
        """Scores, account scores, reasons and own evidence per account."""
        return self.root / "scores"

    @property
    def banlist(self) -> Any:
        """The run's copy of the list it published (Parquet)."""
        return self.root / "banlist.parquet"

    @property
    def report(self) -> Any:
        """The run summary (JSON)."""
        return self.root / "report.json"

    @property
    def stages(self) -> Any:
        """The flows' ledger of finished stages."""
        return self.root / "_stages"
