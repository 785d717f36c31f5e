"""The README keeps its promises: the two commands, and every data-contract column."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.contracts import CONTRACTS

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block, "no code block under Quick start"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_has_exactly_the_two_commands():
    assert _quick_start_block() == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [
        line
        for line in script.splitlines()
        if line.strip()
        and not line.startswith("#")
        and not line.startswith("set ")
        and not line.startswith("cd ")
    ]
    assert commands == [_quick_start_block()[1]]


def test_every_contract_column_is_documented():
    readme = (ROOT / "README.md").read_text()
    for contract in CONTRACTS.values():
        assert f"#### `{contract.name}`" in readme, contract.name
        section = readme.split(f"#### `{contract.name}`", 1)[1].split("####", 1)[0]
        for column in contract.columns:
            assert f"| `{column.name}` | {column.dtype.simpleString()} |" in section, (
                contract.name,
                column.name,
            )


def test_every_setting_is_documented():
    from jobs.config import Settings

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for section, info in Settings.model_fields.items():
        for key in info.annotation.model_fields:
            assert f"`{section}.{key}`" in table, f"{section}.{key} missing from README"
