from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import build_parser, main


def test_parser_knows_every_command():
    parser = build_parser()
    args = parser.parse_args(
        ["generate", "--accounts", "5000", "--seed", "3", "--scenario", "mixed-operators"]
    )
    assert (args.command, args.accounts, args.seed, args.scenario) == (
        "generate",
        5000,
        3,
        "mixed-operators",
    )
    assert parser.parse_args(["nightly", "--date", "2026-06-05"]).date == "2026-06-05"
    assert parser.parse_args(["train"]).command == "train"
    for sub in ("latest", "runs", "show", "diff"):
        assert parser.parse_args(["banlist", sub]).banlist_command == sub
    revoke = parser.parse_args(["banlist", "revoke", "abc", "--reason", "appeal"])
    assert (revoke.run, revoke.reason) == ("abc", "appeal")
    assert parser.parse_args(["nightly", "--release-held"]).release_held is True
    evaluate = parser.parse_args(
        ["evaluate-graph", "--nodes", "n.parquet", "--edges", "e.parquet", "--folds", "3"]
    )
    assert (evaluate.command, evaluate.nodes, evaluate.edges, evaluate.folds) == (
        "evaluate-graph",
        "n.parquet",
        "e.parquet",
        3,
    )
    assert (evaluate.seed, evaluate.max_degree, evaluate.json) == (None, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["explode"])


def test_failures_are_one_line_and_exit_1(farmwatch_home, capsys):
    assert main(["banlist", "latest"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no ban list in force" in err[0]


def test_generate_rejects_an_unknown_scenario(farmwatch_home, capsys):
    assert main(["generate", "--accounts", "5000", "--scenario", "nope"]) == 1
    assert "unknown scenario 'nope'" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "generate" in out.stdout and "nightly" in out.stdout
