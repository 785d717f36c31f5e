"""A re-run of a published date after a trust decision publishes again and applies it.

The home starts with the shared small world's finished stages, its bucket and its key, and
reads its lake and champion: a re-run of the date resumes every stage but publish (the target
is another folder), which finds the same run already published; the next re-run resumes every
stage, publish included. Then a reviewer upholds an appeal of one banned account: the next
re-run must not resume the old publish; it is a new run (the decision is in its inputs) whose
list leaves the account out and reports it as kept off by that decision, and it becomes the
list in force. The same goes for the allowlist: setting one, then editing the file in place,
each time resumes every stage but publish, which lists the newly allowlisted account no more.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.nightly import nightly_flow
from jobs.banlists.decisions import record_decision
from jobs.core.store import LocalStore

pytestmark = pytest.mark.e2e
STAGES = ["ingest", "graph", "communities", "features", "score"]


def test_a_rerun_after_a_decision_publishes_a_list_that_applies_it(
    small_world, prefect_harness, tmp_path, monkeypatch
):
    day = small_world.summary["run_date"]
    home = tmp_path / "farmwatch"
    small_world.continue_in(home, monkeypatch, stages=True)
    monkeypatch.setenv("FARMWATCH_LAKE__LAKE", str(small_world.home / "lake"))
    latest = home / "bucket" / "banlists" / "latest.json"
    first_run = small_world.run_id.removeprefix("run=")

    same = nightly_flow(run_date=day)  # this home's bucket is another target: publish runs,
    assert same["resumed_stages"] == STAGES
    assert same["published"]["run_id"] == first_run  # and finds the same run already there
    assert json.loads(latest.read_text())["run_id"] == first_run
    again = nightly_flow(run_date=day)
    assert again["resumed_stages"] == [*STAGES, "publish"]  # nothing new: everything resumes

    listed = pd.read_parquet(home / "bucket" / same["published"]["prefix"] / "banlist.parquet")
    account = listed.loc[listed["action"] == "ban", "account_id"].iloc[0]
    record = record_decision(
        LocalStore(str(home / "bucket")),
        "banlists",
        account,
        "appeal-upheld",
        "a business account, verified by phone",
        by="reviewer-1",
    )
    after = nightly_flow(run_date=day)

    assert after["resumed_stages"] == STAGES  # the publish step ran again
    published = after["published"]
    assert published["status"] == "published" and published["run_id"] != first_run
    assert json.loads(latest.read_text())["run_id"] == published["run_id"]
    run = home / "bucket" / published["prefix"]
    relisted = pd.read_parquet(run / "banlist.parquet")
    assert account not in set(relisted["account_id"])
    assert len(relisted) == len(listed) - 1
    kept_off = pd.read_parquet(run / "allowlisted.parquet")
    rule = kept_off.set_index("account_id").loc[account, "allowlist_rule"]
    assert rule == f"decision:{record['record_id']}"

    # An allowlist set, then edited in place: the stages resume, publish applies the file.
    banned = relisted.loc[relisted["action"] == "ban", "account_id"]
    first, second = banned.iloc[0], banned.iloc[-1]
    allowlist = tmp_path / "allowlist.csv"
    allowlist.write_text("kind,value,note\n")
    monkeypatch.setenv("FARMWATCH_BANS__ALLOWLIST", str(allowlist))
    listed_runs = [published["run_id"]]
    kept_off_now: set[str] = set()
    for vip in (first, second):  # the first run with the file, then the same file edited
        allowlist.write_text(allowlist.read_text() + f"account,{vip},vip\n")
        kept_off_now.add(vip)
        run = nightly_flow(run_date=day)
        assert run["resumed_stages"] == STAGES, kept_off_now  # publish ran again
        assert run["published"]["run_id"] not in listed_runs
        listed_runs.append(run["published"]["run_id"])
        now = pd.read_parquet(home / "bucket" / run["published"]["prefix"] / "banlist.parquet")
        assert not kept_off_now & set(now["account_id"]), kept_off_now
        assert len(now) == len(relisted) - len(kept_off_now)
