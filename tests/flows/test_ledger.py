"""Run bookkeeping: the stage ledger resumes only what is still valid, runs never overlap,
backfill ranges, and failure notifications reach a real HTTP endpoint."""

from __future__ import annotations

import json
import time

import pytest

from flows.ledger import RunLocked, StageLedger, input_digest, run_lock
from flows.notify import notify, notify_drift
from flows.serve import dates_between
from jobs.core.timing import mark


def test_ledger_skips_finished_stages_and_reruns_from_the_first_change(tmp_path):
    calls: list[str] = []

    def stage(name):
        def fn(value):
            calls.append(name)
            return {"stage": name, "value": value}

        return fn

    def run_all(seed, model="v1", resume=True):
        ledger = StageLedger(tmp_path / "_stages", seed, resume)
        ledger.run("ingest", stage("ingest"), 1)
        ledger.run("features", stage("features"), 2)
        result = ledger.run("score", stage("score"), 3, depends_on=model)
        return ledger, result

    run_all("seed-a")
    assert calls == ["ingest", "features", "score"]
    ledger, result = run_all("seed-a")
    assert calls == ["ingest", "features", "score"]  # nothing ran again
    assert ledger.skipped == ["ingest", "features", "score"]
    assert result == {"stage": "score", "value": 3}  # the recorded result comes back
    run_all("seed-a", model="v2")  # a new model re-scores, nothing upstream
    assert calls[3:] == ["score"]
    run_all("seed-b", model="v2")  # new inputs re-run everything
    assert calls[4:] == ["ingest", "features", "score"]
    run_all("seed-b", model="v2", resume=False)
    assert calls[7:] == ["ingest", "features", "score"]
    marker = json.loads((tmp_path / "_stages" / "score.json").read_text())
    assert marker["result"] == {"stage": "score", "value": 3} and "finished_at" in marker


def test_a_failed_stage_is_not_recorded(tmp_path):
    ledger = StageLedger(tmp_path / "_stages", "seed", True)
    ledger.run("ingest", lambda: 1)

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError):
        ledger.run("graph", broken)
    assert not (tmp_path / "_stages" / "graph.json").exists()
    again = StageLedger(tmp_path / "_stages", "seed", True)
    assert again.run("ingest", lambda: 99) == 1
    assert again.run("graph", lambda: 2) == 2


def test_the_ledger_records_the_parts_a_stage_marked(tmp_path):
    def stage():
        time.sleep(0.05)
        mark("entities")
        time.sleep(0.02)
        mark("links")
        time.sleep(0.01)
        return {"links": 3}

    ledger = StageLedger(tmp_path / "_stages", "seed", True)
    assert ledger.run("graph", stage) == {"links": 3}
    parts = ledger.parts["graph"]
    assert list(parts) == ["entities", "links", "other"]
    assert parts["entities"] >= 0.05 and parts["links"] >= 0.02 and parts["other"] >= 0.01
    assert sum(parts.values()) == pytest.approx(ledger.seconds["graph"], abs=0.02)
    marker = json.loads((tmp_path / "_stages" / "graph.json").read_text())
    assert marker["part_seconds"] == parts
    # each part's span on the wall clock, back to back, as long as its seconds
    spans = ledger.spans["graph"]
    assert [name for name, _, _ in spans] == ["entities", "links", "other"]
    assert all(a[2] == b[1] for a, b in zip(spans, spans[1:], strict=False))
    for name, start, end in spans:
        assert end - start == pytest.approx(parts[name], abs=0.01)
    mark("outside")  # no clock runs: nothing happens
    again = StageLedger(tmp_path / "_stages", "seed", True)
    again.run("graph", stage)
    assert again.skipped == ["graph"] and again.parts == again.spans == {}  # resumed: no parts


def test_two_runs_never_overlap(tmp_path):
    with run_lock(tmp_path, "nightly 2026-06-05"):
        with pytest.raises(RunLocked, match="nightly 2026-06-05"):
            with run_lock(tmp_path, "nightly 2026-06-06"):
                pass
    with run_lock(tmp_path, "nightly 2026-06-06"):  # released after the first finished
        pass


def test_input_digest_follows_the_files(tmp_path):
    (tmp_path / "signups").mkdir()
    part = tmp_path / "signups" / "part-0.parquet"
    part.write_bytes(b"one")
    first = input_digest(tmp_path)
    assert input_digest(tmp_path) == first
    part.write_bytes(b"one more")
    assert input_digest(tmp_path) != first


def test_dates_between():
    assert dates_between("2026-05-30", "2026-06-02") == [
        "2026-05-30",
        "2026-05-31",
        "2026-06-01",
        "2026-06-02",
    ]
    with pytest.raises(ValueError, match="ends"):
        dates_between("2026-06-02", "2026-06-01")


def test_notifications_reach_the_webhook_and_never_raise(webhook):
    url = webhook.url
    assert notify(url, "banlist_held", "40 bans exceed 3x", run_date="2026-06-05")
    assert webhook.received[-1] == {
        "event": "banlist_held",
        "message": "40 bans exceed 3x",
        "text": "farmwatch banlist_held: 40 bans exceed 3x",
        "run_date": "2026-06-05",
    }
    webhook.stop()
    assert notify(url, "run_failed", "boom") is False  # endpoint gone: logged, not raised
    assert notify(None, "run_failed", "boom") is False


def test_drift_alerts_reach_the_webhook_and_a_quiet_run_sends_nothing(webhook):
    url = webhook.url
    published = {"run_id": "r1", "report": "banlists/dt=2026-06-06/run=r1/report.html"}
    alert = "1 of the 3 farms banned last night vanished (1) or shrank (0)"
    loud = {"published": {**published, "store": "/b", "drift": {"alerts": [alert]}}}
    quiet = {"published": {**published, "drift": {"alerts": []}}}
    assert notify_drift(url, "2026-06-06", quiet) is False
    assert notify_drift(url, "2026-06-06", {"published": published}) is False
    assert webhook.received == []
    assert notify_drift(url, "2026-06-06", loud)
    assert webhook.received == [
        {
            "event": "drift_alert",
            "message": alert,
            "text": f"farmwatch drift_alert: {alert}",
            "run_date": "2026-06-06",
            "run_id": "r1",
            "report": "banlists/dt=2026-06-06/run=r1/report.html",
            "store": "/b",
        }
    ]
