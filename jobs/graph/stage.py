"""The graph stage: the accepted tables of a run -> entities, entity statistics, links.

In: a :class:`jobs.core.stage.StageContext` (the run's accepted tables, the entity hashing key
of :mod:`jobs.core.hash_key`, the ``graph`` settings). Out: ``account_entities``,
``entity_stats`` and ``account_links`` under the run's layout, and a summary (accounts,
entities, hubs, links). Called by the nightly and training flows' graph task and the tests.
"""

from __future__ import annotations

from typing import Any

from jobs.core.lake import persist, persist_parts
from jobs.core.stage import StageContext
from jobs.graph.entities import account_entities, behaviour_entities
from jobs.graph.links import account_links, entity_stats
from jobs.ingest.stage import load_accepted


def run(ctx: StageContext) -> dict[str, Any]:
    """Write the account graph of one run; returns its figures."""
    settings, layout = ctx.settings, ctx.layout
    tables = load_accepted(ctx.spark, layout)
    key = settings.entity_hash_key().secret
    signups = tables["signups"]
    entities = account_entities(
        signups, tables["payments"], tables["ip_events"], tables["api_usage"], key
    )
    parts = {}
    if settings.graph.behaviour_entities:  # one table, its behaviour buckets timed apart
        parts["behaviour"] = behaviour_entities(
            tables["ip_events"], tables["api_usage"], settings.graph, key
        )
    parts["account_entities"] = entities
    entities = persist_parts(parts, layout.account_entities)
    n_accounts = signups.count()
    stats = persist(entity_stats(entities, settings.graph, n_accounts), layout.entity_stats)
    links = persist(account_links(entities, stats), layout.account_links)
    return {
        "accounts": n_accounts,
        "shared_entities": stats.count(),
        "hub_entities": stats.where("is_hub").count(),
        "links": links.count(),
    }
