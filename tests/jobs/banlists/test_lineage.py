"""Farm lineage on planted multi-night membership tables (pandas only, no Spark).

A week of nights is planted by hand: farm A grows, is half banned and churns, splits in two;
farm B merges into A's larger half; farm C is banned, vanishes, and re-forms under new
accounts that reuse its card; farm D goes dormant and comes back. Each night's registry feeds
the next, as the publish step chains them. Last, through the publish step: a held run and a
revoked run are skipped by the nights after them.
"""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.banlists.lineage import (
    STABLE_FARM_ID,
    Registry,
    farm_story,
    match_night,
    new_farm_id,
)
from jobs.banlists.publish import RunContext, publish
from jobs.banlists.registry import read_registry
from jobs.banlists.runs import revoke
from jobs.core.config import BanSettings
from jobs.core.store import LocalStore

SETTINGS = BanSettings()


def accounts(prefix: str, first: int, last: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(first, last)]


def night(groups: dict[str, list[str]]) -> pd.DataFrame:
    """Membership rows; each candidate's farm_id is its smallest member, as the pipeline does."""
    return pd.DataFrame(
        [(a, min(m)) for m in groups.values() for a in m], columns=["account_id", "farm_id"]
    )


def summary(groups: dict[str, list[str]], banned=(), entities=None) -> pd.DataFrame:
    entities = entities or {}
    return pd.DataFrame(
        {
            "farm_id": [min(m) for m in groups.values()],
            "accounts_banned": [len(m) if k in banned else 0 for k, m in groups.items()],
            "binding_entities": [
                [f"{e} ({len(m)} accounts)" for e in entities.get(k, [])] for k, m in groups.items()
            ],
        }
    )


def run(previous, groups, day, banned=(), entities=None):
    return match_night(previous, night(groups), summary(groups, banned, entities), day, SETTINGS)


def events_of(registry: Registry, day: str) -> set[tuple[str, str, str | None]]:
    h = registry.history[registry.history["run_date"] == day]
    related = h["related_farm_id"].where(h["related_farm_id"].notna(), None)
    return set(zip(h[STABLE_FARM_ID], h["event"], related, strict=True))


def test_a_planted_week_keeps_ids_and_finds_every_planted_event():
    card = "instrument:3fa2c91b0d4e5f61"
    a1 = accounts("a", 0, 100)
    b1 = accounts("b", 0, 40)
    c1 = accounts("c", 0, 50)
    d1 = accounts("d", 0, 30)
    r1, ids1 = run(
        Registry.empty(),
        {"A": a1, "B": b1, "C": c1, "D": d1},
        "2026-06-01",
        banned={"C"},
        entities={"C": [card]},
    )
    A, B, C, D = (new_farm_id("2026-06-01", f) for f in ("a0000", "b0000", "c0000", "d0000"))
    assert ids1 == {"a0000": A, "b0000": B, "c0000": C, "d0000": D}
    assert events_of(r1, "2026-06-01") == {(x, "new", None) for x in (A, B, C, D)}

    # night 2: A grows by 60, C is gone (banned), D is quiet, B unchanged
    a2 = a1 + accounts("a", 100, 160)
    r2, ids2 = run(r1, {"A": a2, "B": b1}, "2026-06-02")
    assert ids2 == {"a0000": A, "b0000": B}
    assert events_of(r2, "2026-06-02") == {
        (A, "grown", None),
        (B, "steady", None),
        (C, "dormant", None),
        (D, "dormant", None),
    }

    # night 3: A's 80 smallest accounts are banned and leave, 80 new accounts join: its
    # candidate id (smallest member) changes, its stable id does not
    a3 = a2[80:] + accounts("a", 500, 580)
    r3, ids3 = run(r2, {"A": a3, "B": b1}, "2026-06-03")
    assert min(a3) != "a0000" and ids3[min(a3)] == A
    assert (A, "steady", None) in events_of(r3, "2026-06-03")

    # night 4: C re-forms under new accounts on its old card; D comes back
    c4 = accounts("k", 0, 45)
    r4, ids4 = run(r3, {"A": a3, "B": b1, "C": c4, "D": d1}, "2026-06-04", entities={"C": [card]})
    assert ids4["k0000"] == C and ids4["d0000"] == D
    assert events_of(r4, "2026-06-04") >= {(C, "re-formed", None), (D, "reappeared", None)}

    # night 5: the operator splits A in two (90 + 70); B joins the larger half
    big, small = a3[:90], a3[90:]
    r5, ids5 = run(r4, {"A1": big + b1, "A2": small, "C": c4, "D": d1}, "2026-06-05")
    child = new_farm_id("2026-06-05", min(small))
    assert ids5[min(big + b1)] == A and ids5[min(small)] == child
    assert events_of(r5, "2026-06-05") >= {
        (A, "split", child),
        (child, "split", A),
        (A, "merged", B),
        (B, "merged", A),
    }
    assert B not in set(r5.farms[STABLE_FARM_ID])
    assert list(r5.farms[STABLE_FARM_ID]) == sorted([A, C, D, child])
    assert r5.farms.set_index(STABLE_FARM_ID).loc[C, "banned_ever"]

    story = farm_story(r5.history, A)
    assert story[["run_date", "event"]].values.tolist() == [
        ["2026-06-01", "new"],
        ["2026-06-02", "grown"],
        ["2026-06-03", "steady"],
        ["2026-06-04", "steady"],
        ["2026-06-05", "merged"],  # B merged into it
        ["2026-06-05", "shrunk"],  # 90 of its 160 plus B's 40
        ["2026-06-05", "split"],
        ["2026-06-05", "merged"],  # B's row, naming A
        ["2026-06-05", "split"],  # the child's row, naming A
    ]
    assert story["size_after"].tolist()[:2] == [100, 160]


def test_a_new_group_sharing_a_card_with_a_live_banned_farm_is_re_formed_under_a_new_id():
    card = "instrument:aa"
    r1, _ = run(Registry.empty(), {"C": accounts("c", 0, 20)}, "2026-06-01", {"C"}, {"C": [card]})
    C = new_farm_id("2026-06-01", "c0000")
    groups = {"C": accounts("c", 0, 20), "N": accounts("n", 0, 20)}
    r2, ids = run(r1, groups, "2026-06-02", entities={"N": [card]})
    assert ids["n0000"] == new_farm_id("2026-06-02", "n0000")
    assert (ids["n0000"], "re-formed", C) in events_of(r2, "2026-06-02")
    # an unbanned farm's entities never make a re-formed farm
    r1b, _ = run(Registry.empty(), {"C": accounts("c", 0, 20)}, "2026-06-01", (), {"C": [card]})
    r2b, _ = run(r1b, {"N": accounts("n", 0, 20)}, "2026-06-02", entities={"N": [card]})
    assert ("F20260602-n0000", "new", None) in events_of(r2b, "2026-06-02")


def test_ids_do_not_depend_on_row_order():
    groups = {"A": accounts("a", 0, 50), "B": accounts("b", 0, 30)}
    r1, _ = run(Registry.empty(), groups, "2026-06-01")
    tonight = {"X": accounts("a", 0, 25) + accounts("b", 0, 30), "Y": accounts("a", 25, 50)}
    members = night(tonight)
    farms = summary(tonight)
    forward, ids_f = match_night(r1, members, farms, "2026-06-02", SETTINGS)
    shuffled = members.sample(frac=1, random_state=4).reset_index(drop=True)
    backward, ids_b = match_night(r1, shuffled, farms[::-1], "2026-06-02", SETTINGS)
    assert ids_f == ids_b
    pd.testing.assert_frame_equal(forward.farms, backward.farms)
    pd.testing.assert_frame_equal(forward.history, backward.history)
    pd.testing.assert_frame_equal(forward.members, backward.members)


def test_dormant_farms_leave_the_registry_after_the_horizon():
    r1, _ = run(Registry.empty(), {"A": accounts("a", 0, 10)}, "2026-06-01")
    r2, _ = run(r1, {}, "2026-07-30")
    assert r2.farms["status"].tolist() == ["dormant"]
    r3, _ = run(r2, {}, "2026-08-01")
    assert r3.farms.empty and r3.members.empty
    assert len(r3.history) == 2  # new, dormant: the history stays


def test_bad_input_is_refused_with_the_column_named():
    members = night({"A": accounts("a", 0, 3)})
    with pytest.raises(ValueError, match="binding_entities"):
        match_night(
            Registry.empty(),
            members,
            pd.DataFrame({"farm_id": [], "accounts_banned": []}),
            "2026-06-01",
            SETTINGS,
        )
    twice = pd.DataFrame({"account_id": ["a1", "a1"], "farm_id": ["a1", "a0"]})
    with pytest.raises(ValueError, match="more than one farm candidate"):
        match_night(Registry.empty(), twice, summary({}), "2026-06-01", SETTINGS)


def test_held_and_revoked_runs_never_advance_lineage(tmp_path):
    store = LocalStore(tmp_path)
    bans = BanSettings(breaker_min_history=2, breaker_multiple=2.0, breaker_floor=3)

    def night(day: str, n: int):
        rows = pd.DataFrame(
            {
                "account_id": accounts("a", 0, n),
                "farm_id": "a0000",
                "score": 0.99,
                "action": "ban",
                "reasons": [["r"]] * n,
                "model_version": "1",
            }
        )
        context = RunContext(day, {"name": "m", "version": "1"}, "cfg", "test", {"rows": 1})
        return publish(rows, store, "banlists", context, bans)

    for day in ("2026-06-01", "2026-06-02", "2026-06-03"):
        assert night(day, 5).status == "published"
    assert night("2026-06-04", 40).status == "held"
    fifth = night("2026-06-05", 6)
    history = read_registry(store, fifth.run_prefix).history
    assert "2026-06-04" not in set(history["run_date"])
    assert history.iloc[-1][["run_date", "size_before", "size_after"]].tolist() == [
        "2026-06-05",
        5,
        6,
    ]
    revoke(store, "banlists", fifth.manifest["run_id"], "bad model")
    sixth = night("2026-06-06", 6)
    history = read_registry(store, sixth.run_prefix).history
    assert history["run_date"].tolist() == [
        "2026-06-01",
        "2026-06-02",
        "2026-06-03",
        "2026-06-06",
    ]
    assert history.iloc[-1]["event"] == "grown"
