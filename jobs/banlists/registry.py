"""The farm registry on the store: which night a run continues, and its files in the run folder.

In: an :class:`jobs.core.store.ObjectStore`, the ban-list prefix, a run date, the ban list and
farm summary of a run and its farm candidates' members. Out: the :class:`Registry` of the night
the run continues (read from that run's verified files), tonight's registry
(:func:`jobs.banlists.lineage.match_night`), the ban list and farm summary with the stable
``stable_farm_id`` (and, per farm, ``first_seen`` and ``last_event``), and the registry's
three files, which the publish step writes and verifies with the run's other files.

Which nights count: a run continues the newest **published** run dated before it. A held run
writes its registry but nobody continues it until it is released; a revoked run is skipped
from then on; a re-run of a date continues the same night its first run did. Runs published
before the registry existed have no registry files and start lineage afresh. Called by
:func:`jobs.banlists.publish.publish` and the trust commands.
"""

from __future__ import annotations

import io

import pandas as pd

from jobs.banlists.lineage import FILES, STABLE_FARM_ID, Registry, match_night
from jobs.banlists.runs import list_runs, read_run
from jobs.core.config import BanSettings
from jobs.core.store import ObjectStore


def night_before(store: ObjectStore, prefix: str, run_date: str) -> dict | None:
    """The :func:`jobs.banlists.runs.list_runs` entry a run of ``run_date`` continues."""
    published = [r for r in list_runs(store, prefix, before=run_date) if r["status"] == "published"]
    return published[-1] if published else None


def read_registry(store: ObjectStore, run_prefix: str) -> Registry | None:
    """A run's registry, each file checked against the run's manifest (``None`` if it has none)."""
    try:
        parts = {part: read_run(store, run_prefix, name)[1] for part, name in FILES.items()}
    except (KeyError, FileNotFoundError):  # a run published before the registry existed
        return None
    return Registry(parts["farms"], parts["members"], parts["history"])


def registry_before(store: ObjectStore, prefix: str, run_date: str) -> Registry:
    """The registry a run of ``run_date`` matches against (empty on the first night)."""
    parent = night_before(store, prefix, run_date)
    found = read_registry(store, parent["prefix"]) if parent is not None else None
    return found if found is not None else Registry.empty()


def with_lineage(
    banlist: pd.DataFrame,
    farms: pd.DataFrame,
    members: pd.DataFrame | None,
    previous: Registry,
    run_date: str,
    bans: BanSettings,
) -> tuple[pd.DataFrame, pd.DataFrame, Registry]:
    """Tonight's registry, and the ban list and farm summary carrying the stable ids.

    Args:
        banlist: the run's list (``account_id, farm_id`` and the rest).
        farms: :func:`jobs.banlists.publish.farm_summary` of that list.
        members: ``account_id, farm_id`` of every member of tonight's farm candidates; without
            it, the listed members stand for their farms.
        previous: :func:`registry_before` of the run.
        run_date: ``YYYY-MM-DD``.
        bans: the ``lineage_*`` settings.
    """
    if members is None:
        members = banlist.loc[banlist["farm_id"].notna(), ["account_id", "farm_id"]]
    registry, ids = match_night(previous, members, farms, run_date, bans)
    banlist = banlist.assign(**{STABLE_FARM_ID: banlist["farm_id"].map(ids).astype(object)})
    facts = registry.farms.set_index(STABLE_FARM_ID)
    stable = farms["farm_id"].map(ids).astype(object)
    farms = farms.assign(
        **{
            STABLE_FARM_ID: stable,
            "first_seen": stable.map(facts["first_seen"]).astype(object),
            "last_event": stable.map(facts["last_event"]).astype(object),
        }
    )
    return banlist, farms, registry


def registry_files(registry: Registry) -> dict[str, bytes]:
    """The registry's three Parquet files, by file name."""
    out = {}
    for part, name in FILES.items():
        frame = getattr(registry, part).copy(deep=False)
        frame.attrs = {}  # Spark Connect's toPandas() leaves query metrics here; not content
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        out[name] = buffer.getvalue()
    return out
