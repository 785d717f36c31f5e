"""The README keeps its promises: the two commands, and every data-contract column."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.core.contracts import CONTRACTS

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


def test_reference_pages_are_what_the_code_says():
    """docs/configuration.md and docs/contracts.md are generated; a stale page fails here."""
    from jobs.core.docs import PAGES, RENDERERS

    for name, path in PAGES.items():
        assert path.read_text() == RENDERERS[name](), (
            f"{path.relative_to(ROOT)} is stale: run `.venv/bin/python -m jobs.core.docs`"
        )


def test_every_contract_column_and_setting_is_documented():
    """Independently of the generator: each column and each setting appears in its page."""
    from jobs.core.config import Settings

    contracts = (ROOT / "docs" / "contracts.md").read_text()
    for contract in CONTRACTS.values():
        assert f"#### `{contract.name}`" in contracts, contract.name
        section = contracts.split(f"#### `{contract.name}`", 1)[1].split("####", 1)[0]
        for column in contract.columns:
            assert f"| `{column.name}` | {column.dtype.simpleString()} |" in section, (
                contract.name,
                column.name,
            )
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    for section, info in Settings.model_fields.items():
        for key, field in info.annotation.model_fields.items():
            assert f"| `{section}.{key}` |" in configuration, f"{section}.{key}"
            assert field.description, f"{section}.{key} has no description"


def test_readme_is_a_front_door_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
