"""Every committed notebook runs end to end on the shared small world, so none can rot.

Each notebook in ``notebooks/`` is executed with nbclient in a fresh kernel (this virtualenv's
ipykernel) with ``FARMWATCH_LAKE__HOME`` pointing at the session's ``small_world`` home: the
same lake, run folders, published lists and registry the jobs wrote. The small world has one
registered model version, so the comparison notebook gets a second version registered from the
first's artifacts in a copy of the registry (the shared one is left untouched): both versions
then score the same holdout, and the notebook must show the same figures for both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _second_version(home: Path, registry: Path) -> str:
    """A copy of the small world's registry with version 1 registered again as version 2."""
    import mlflow
    from mlflow import MlflowClient

    shutil.copy(home / "mlflow.db", registry / "mlflow.db")
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = "farmwatch-farm-model"
    first = client.get_model_version(name, "1")
    second = client.create_model_version(name, first.source, run_id=first.run_id)
    assert str(second.version) == "2"
    return uri


def test_there_are_the_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "compare_models.ipynb",
        "explore_run.ipynb",
        "investigate_farm.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_small_world(path, small_world, tmp_path, monkeypatch):
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(small_world.home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    if path.stem == "compare_models":
        monkeypatch.setenv(
            "FARMWATCH_MODEL__TRACKING_URI", _second_version(small_world.home, tmp_path)
        )
    notebook = _execute(path, tmp_path)
    text = _text(notebook)
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert errors == []
    if path.stem == "explore_run":
        assert f"{small_world.summary['farm_candidates']} farm candidates" in text
    elif path.stem == "compare_models":
        assert "comparing ['1', '2']" in text
        assert "0 of " in text  # identical artifacts: no holdout account changes side
    else:
        assert "banned" in text and "run_date" in text
