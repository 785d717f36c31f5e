"""Files attached to a publish (the run report) follow the list's rules: verified, in the manifest,
written before ``latest.json`` moves; a failing attachment leaves the list in force alone."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from jobs.banlists.publish import Draft, RunContext, publish
from jobs.banlists.runs import latest_pointer
from jobs.core.config import BanSettings
from jobs.core.store import LocalStore

MODEL = {"name": "farmwatch-farm-model", "version": "3"}


def _banlist(accounts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": accounts,
            "farm_id": ["farm_x"] * len(accounts),
            "score": [0.95] * len(accounts),
            "action": ["ban"] * len(accounts),
            "reasons": [["shares a payment instrument with 4 other accounts"]] * len(accounts),
            "model_version": ["3"] * len(accounts),
        }
    )


def _context(day: str) -> RunContext:
    return RunContext(day, MODEL, "cfg", "code", {"accounts": day})


def test_attachments_are_verified_listed_and_see_the_list_in_force(tmp_path):
    store = LocalStore(tmp_path)
    drafts: list[Draft] = []

    def attach(draft: Draft) -> dict[str, bytes]:
        drafts.append(draft)
        return {"report.html": f"<p>{draft.run_id} {len(draft.banlist)}</p>".encode()}

    first = publish(
        _banlist(["a1", "a2"]),
        store,
        "banlists",
        _context("2026-06-01"),
        BanSettings(),
        attachments=attach,
    )
    second = publish(
        _banlist(["a1"]),
        store,
        "banlists",
        _context("2026-06-02"),
        BanSettings(),
        attachments=attach,
    )
    assert drafts[0].last_night is None
    assert drafts[0].diff_summary["accounts"]["new"] == 2
    assert list(drafts[0].farms["farm_id"]) == ["farm_x"]
    assert list(drafts[1].last_night["account_id"]) == ["a1", "a2"]
    assert drafts[1].breaker["held"] is False
    page = (tmp_path / second.run_prefix / "report.html").read_bytes()
    assert page == f"<p>{second.manifest['run_id']} 1</p>".encode()
    assert second.manifest["files"]["report.html"] == {
        "sha256": hashlib.sha256(page).hexdigest(),
        "bytes": len(page),
    }
    assert first.manifest["files"]["report.html"]["bytes"] > 0
    assert latest_pointer(store)["run_id"] == second.manifest["run_id"]


def test_a_failing_attachment_publishes_nothing_and_one_may_not_replace_the_list(tmp_path):
    store = LocalStore(tmp_path)
    publish(_banlist(["a1"]), store, "banlists", _context("2026-06-01"), BanSettings())
    before = json.loads((tmp_path / "banlists" / "latest.json").read_text())

    def broken(draft: Draft) -> dict[str, bytes]:
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="report failed"):
        publish(
            _banlist(["a1", "a2"]),
            store,
            "banlists",
            _context("2026-06-02"),
            BanSettings(),
            attachments=broken,
        )
    with pytest.raises(ValueError, match="banlist.parquet"):
        publish(
            _banlist(["a1", "a2"]),
            store,
            "banlists",
            _context("2026-06-03"),
            BanSettings(),
            attachments=lambda draft: {"banlist.parquet": b"not a list"},
        )
    assert json.loads((tmp_path / "banlists" / "latest.json").read_text()) == before
    assert not list((tmp_path / "banlists").glob("dt=2026-06-0[23]/run=*/*"))
