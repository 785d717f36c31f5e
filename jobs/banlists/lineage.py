"""The farm registry: stable farm ids across nights, and each farm's lineage.

In: tonight's farm candidates (``account_id, farm_id``: every member, listed or not), what the
ban list says per candidate (accounts banned, binding entities by keyed hash), the run date,
and the registry of the night before (:class:`Registry`: farms, their members, the history).
Out: tonight's :class:`Registry` and the map from tonight's candidate ``farm_id`` (its smallest
member's id, which changes as members come and go) to a ``stable_farm_id`` that does not.

Matching (all pandas on the driver, every order explicit, so any Spark layout gives the same
ids): a candidate ``c`` and an earlier farm ``p`` (active or dormant) are *linked* when they
share at least ``min_shared`` accounts and the shared accounts are at least ``link_share`` of
the smaller of the two (the overlap coefficient ``|c & p| / min(|c|, |p|)``; a split half or a
farm that doubled is still fully linked, which Jaccard alone would miss). Links are ranked by
Jaccard ``|c & p| / |c | p|``, then accounts shared, then the older farm, then ids, and taken
greedily one-to-one: each farm continues in at most one candidate. What is left of a
many-to-many match is lineage:

- a candidate linked only to farms already continued elsewhere is a **split** off the farm it
  shares most with (new id, ``related_farm_id`` the parent; the parent gets a ``split`` row);
- an earlier farm linked only to candidates that continue other farms **merged** into the one
  it shares most with (its id closes; the survivor gets a ``merged`` row);
- a continued farm is **grown** or **shrunk** when its size moved by at least ``size_change``
  of its size the night before, else **steady**; one that was dormant **reappeared**;
- an earlier farm with no candidate tonight is **dormant** (kept, with its members, for
  ``dormant_days``, then dropped from the registry; its history stays);
- a candidate with no link is **re-formed** when it shares a binding entity (card, IP, device:
  keyed hashes) with a farm that had bans before: it takes that farm's id when the farm is not
  continued tonight, else a new id with ``related_farm_id`` that farm; otherwise it is **new**.

A new id is ``F<YYYYMMDD>-<candidate farm_id>``: the night it was first seen and the smallest
member then, unique and readable. Called by :func:`jobs.banlists.publish.publish`, which
stores the registry in each run's folder; the night before is the newest *published* run dated
before the run, so held and revoked runs never advance lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from jobs.core.config import BanSettings

STABLE_FARM_ID = "stable_farm_id"
LINEAGE_EVENTS = (
    "new",
    "grown",
    "shrunk",
    "steady",
    "split",
    "merged",
    "dormant",
    "reappeared",
    "re-formed",
)
REGISTRY_COLUMNS = (
    STABLE_FARM_ID,
    "status",
    "farm_id",
    "first_seen",
    "last_seen",
    "size",
    "peak_size",
    "banned_ever",
    "entities",
    "last_event",
)
MEMBER_COLUMNS = (STABLE_FARM_ID, "account_id")
HISTORY_COLUMNS = (
    "run_date",
    STABLE_FARM_ID,
    "event",
    "related_farm_id",
    "size_before",
    "size_after",
    "farm_id",
)
FILES = {
    "farms": "farm_registry.parquet",
    "members": "farm_members.parquet",
    "history": "farm_history.parquet",
}


@dataclass(frozen=True)
class Registry:
    """The farm registry as of one night (the three files each run folder holds)."""

    farms: pd.DataFrame
    """:data:`REGISTRY_COLUMNS`, one row per active or dormant farm, by ``stable_farm_id``."""
    members: pd.DataFrame
    """:data:`MEMBER_COLUMNS`: the accounts of each farm when it was last seen."""
    history: pd.DataFrame
    """:data:`HISTORY_COLUMNS`: every event of every night of the chain, oldest first."""

    @staticmethod
    def empty() -> Registry:
        """The registry before the first night."""
        return Registry(
            pd.DataFrame(columns=list(REGISTRY_COLUMNS)),
            pd.DataFrame(columns=list(MEMBER_COLUMNS)),
            pd.DataFrame(columns=list(HISTORY_COLUMNS)),
        )


def entity_keys(binding_entities: object) -> list[str]:
    """``type:hash`` of each binding entity (``"instrument:3fa2... (211 accounts)"``)."""
    if binding_entities is None or not hasattr(binding_entities, "__iter__"):
        return []
    return sorted({str(e).split(" (", 1)[0] for e in binding_entities})


def new_farm_id(run_date: str, farm_id: str) -> str:
    """The stable id a farm first seen tonight as candidate ``farm_id`` gets."""
    return f"F{run_date.replace('-', '')}-{farm_id}"


def _validate(members: pd.DataFrame, farms: pd.DataFrame) -> None:
    for name, frame, needed in (
        ("farm members", members, ("account_id", "farm_id")),
        ("farm summary", farms, ("farm_id", "accounts_banned", "binding_entities")),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}")


def _links(
    candidates: dict[str, set[str]], earlier: dict[str, set[str]], settings: BanSettings
) -> pd.DataFrame:
    """Every linked (candidate, earlier farm) pair with its shared accounts and Jaccard."""
    owner = {a: p for p, accounts in earlier.items() for a in accounts}
    shared: dict[tuple[str, str], int] = {}
    for c, accounts in candidates.items():
        for a in accounts:
            p = owner.get(a)
            if p is not None:
                shared[(c, p)] = shared.get((c, p), 0) + 1
    rows = []
    for (c, p), n in shared.items():
        small = min(len(candidates[c]), len(earlier[p]))
        if n >= settings.lineage_min_shared and n / small >= settings.lineage_link_share:
            union = len(candidates[c]) + len(earlier[p]) - n
            rows.append((c, p, n, n / union))
    return pd.DataFrame(rows, columns=["farm_id", STABLE_FARM_ID, "shared", "jaccard"])


def match_night(
    previous: Registry,
    members: pd.DataFrame,
    farms: pd.DataFrame,
    run_date: str,
    settings: BanSettings,
) -> tuple[Registry, dict[str, str]]:
    """Match tonight's candidates to the registry; return tonight's registry and the id map.

    Args:
        previous: the registry of the night before (:meth:`Registry.empty` on the first night).
        members: ``account_id, farm_id`` of every member of tonight's farm candidates.
        farms: per candidate ``farm_id, accounts_banned, binding_entities`` (the ban list's
            farm summary; candidates missing from it count as unbanned, without entities).
        run_date: ``YYYY-MM-DD``.
        settings: ``lineage_*`` thresholds of :class:`jobs.core.config.BanSettings`.

    Returns:
        Tonight's registry and ``{candidate farm_id: stable_farm_id}``.

    Raises:
        ValueError: a missing column, or an account in two candidates.
    """
    _validate(members, farms)
    members = members.loc[members["farm_id"].notna(), ["account_id", "farm_id"]]
    if members["account_id"].duplicated().any():
        raise ValueError("farm members: an account is in more than one farm candidate")
    candidates = {
        str(f): set(g["account_id"].astype(str)) for f, g in members.groupby("farm_id", sort=True)
    }
    prior = previous.farms.set_index(STABLE_FARM_ID, drop=False)
    earlier = {
        str(p): set(g["account_id"].astype(str))
        for p, g in previous.members.groupby(STABLE_FARM_ID, sort=True)
        if p in prior.index
    }
    banned = farms.set_index("farm_id")["accounts_banned"].to_dict()
    entities = {
        str(f): entity_keys(e)
        for f, e in zip(farms["farm_id"], farms["binding_entities"], strict=True)
    }

    links = _links(candidates, earlier, settings)
    if not links.empty:
        links["first_seen"] = links[STABLE_FARM_ID].map(prior["first_seen"])
        links = links.sort_values(
            ["jaccard", "shared", "first_seen", STABLE_FARM_ID, "farm_id"],
            ascending=[False, False, True, True, True],
            ignore_index=True,
        )
    continued: dict[str, str] = {}  # candidate -> earlier farm it continues
    taken: set[str] = set()
    for c, p in zip(links["farm_id"], links[STABLE_FARM_ID], strict=True):
        if c not in continued and p not in taken:
            continued[c] = p
            taken.add(p)

    events: list[tuple[str, str, str | None, int | None, int, str | None]] = []
    splits: list[tuple[str, str]] = []  # (parent, child)
    ids: dict[str, str] = {}
    inherited: dict[str, pd.Series] = {}  # stable id -> the earlier row it carries on
    for c in sorted(candidates):
        size = len(candidates[c])
        if c in continued:
            p = continued[c]
            row = prior.loc[p]
            before = int(row["size"])
            if row["status"] == "dormant":
                event = "reappeared"
            elif size - before >= settings.lineage_size_change * before:
                event = "grown"
            elif before - size >= settings.lineage_size_change * before:
                event = "shrunk"
            else:
                event = "steady"
            ids[c], inherited[p] = p, row
            events.append((p, event, None, before, size, c))
            continue
        own_links = links[links["farm_id"] == c]
        if not own_links.empty:  # every farm it overlaps continues elsewhere: a split
            parent = own_links[STABLE_FARM_ID].iloc[0]
            ids[c] = new_farm_id(run_date, c)
            events.append((ids[c], "split", parent, None, size, c))
            splits.append((parent, ids[c]))
            continue
        source = _reformed_from(entities.get(c, []), prior, taken)
        if source is None:
            ids[c] = new_farm_id(run_date, c)
            events.append((ids[c], "new", None, None, size, c))
        elif source not in taken:
            taken.add(source)
            ids[c], inherited[source] = source, prior.loc[source]
            events.append((source, "re-formed", None, int(prior.loc[source, "size"]), size, c))
        else:
            ids[c] = new_farm_id(run_date, c)
            events.append((ids[c], "re-formed", source, None, size, c))

    by_stable = {s: c for c, s in ids.items()}
    for parent, child in splits:
        events.append((parent, "split", child, None, len(candidates[by_stable[parent]]), None))
    merged: set[str] = set()
    for p in sorted(set(earlier) - taken):
        p_links = links[links[STABLE_FARM_ID] == p]
        if not p_links.empty:
            survivor = ids[p_links["farm_id"].iloc[0]]
            merged.add(p)
            events.append((p, "merged", survivor, int(prior.loc[p, "size"]), 0, None))
            events.append((survivor, "merged", p, None, len(candidates[by_stable[survivor]]), None))

    rows = []
    for c, s in sorted(ids.items(), key=lambda kv: kv[1]):
        old = inherited.get(s)
        size = len(candidates[c])
        rows.append(
            {
                STABLE_FARM_ID: s,
                "status": "active",
                "farm_id": c,
                "first_seen": run_date if old is None else old["first_seen"],
                "last_seen": run_date,
                "size": size,
                "peak_size": size if old is None else max(size, int(old["peak_size"])),
                "banned_ever": int(banned.get(c, 0) or 0) > 0
                or (old is not None and bool(old["banned_ever"])),
                "entities": sorted(
                    set(entities.get(c, [])) | set(old["entities"] if old is not None else [])
                ),
            }
        )
    horizon = date.fromisoformat(run_date) - timedelta(days=settings.lineage_dormant_days)
    for p in sorted(set(earlier) - taken - merged):
        row = prior.loc[p]
        if row["status"] == "active":
            events.append((p, "dormant", None, int(row["size"]), 0, None))
        if date.fromisoformat(row["last_seen"]) >= horizon:
            rows.append({**row.to_dict(), "status": "dormant", "farm_id": None})

    history = pd.DataFrame(
        [(run_date, *e) for e in events],
        columns=list(HISTORY_COLUMNS),
    )
    tonight_events = history.groupby(STABLE_FARM_ID)["event"].agg(
        lambda e: "+".join(dict.fromkeys(e))
    )
    registry = pd.DataFrame(rows, columns=list(REGISTRY_COLUMNS))
    registry["last_event"] = (
        registry[STABLE_FARM_ID].map(tonight_events).fillna(registry["last_event"])
    )
    registry = registry.sort_values(STABLE_FARM_ID, ignore_index=True)
    kept = set(registry[STABLE_FARM_ID])
    tonight = pd.DataFrame(
        [(ids[c], a) for c in sorted(candidates) for a in sorted(candidates[c])],
        columns=list(MEMBER_COLUMNS),
    )
    dormant = previous.members[previous.members[STABLE_FARM_ID].isin(kept - set(ids.values()))]
    all_members = pd.concat([tonight, dormant], ignore_index=True).sort_values(
        list(MEMBER_COLUMNS), ignore_index=True
    )
    full_history = pd.concat(
        [previous.history, history.sort_values([STABLE_FARM_ID, "event"], kind="stable")],
        ignore_index=True,
    )
    return Registry(
        _typed_registry(registry), all_members.astype(str), _typed_history(full_history)
    ), ids


def _reformed_from(keys: list[str], prior: pd.DataFrame, taken: set[str]) -> str | None:
    """The earlier banned farm that shares most binding entities with a candidate, if any.

    Ties go to a farm not continued tonight (so a dormant banned farm is re-formed before a
    live one is named as a relative), then to the older farm, then to the smaller id.
    """
    if not keys or prior.empty:
        return None
    best: tuple[int, bool, str, str] | None = None
    for p, row in prior.iterrows():
        if not bool(row["banned_ever"]):
            continue
        shared = len(set(keys) & set(row["entities"]))
        if shared == 0:
            continue
        rank = (-shared, p in taken, row["first_seen"], str(p))
        if best is None or rank < best:
            best = rank
    return best[3] if best is not None else None


def _typed_registry(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {
            STABLE_FARM_ID: "object",
            "status": "object",
            "farm_id": "object",
            "first_seen": "object",
            "last_seen": "object",
            "size": "int64",
            "peak_size": "int64",
            "banned_ever": "bool",
            "last_event": "object",
        }
    ).assign(entities=lambda f: f["entities"].map(lambda e: [str(x) for x in e]))


def _typed_history(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {
            "run_date": "object",
            STABLE_FARM_ID: "object",
            "event": "object",
            "related_farm_id": "object",
            "size_before": "Int64",
            "size_after": "int64",
            "farm_id": "object",
        }
    )


def farm_story(history: pd.DataFrame, stable_farm_id: str) -> pd.DataFrame:
    """One farm's events, oldest first, including those that name it as the related farm."""
    own = history[STABLE_FARM_ID] == stable_farm_id
    related = history["related_farm_id"] == stable_farm_id
    return history[own | related].reset_index(drop=True)
