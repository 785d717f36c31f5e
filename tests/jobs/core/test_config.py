from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.core.config import load_settings


def test_defaults_run_on_a_laptop(monkeypatch):
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    settings = load_settings()
    assert settings.spark.master == "local[*]"
    assert settings.spark.remote is None
    assert settings.graph.components_backend == "auto"
    assert settings.model.tracking_uri_for(Path("/x")) == "sqlite:////x/mlflow.db"
    assert settings.publish.target_for(Path("/x")) == "/x/bucket"


def test_environment_overrides_nested_keys(monkeypatch):
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_SPARK__MASTER", "spark://10.1.2.3:7077")
    monkeypatch.setenv("FARMWATCH_GRAPH__ENTITY_DEGREE_CAP", "1000")
    monkeypatch.setenv("FARMWATCH_GRAPH__ENTITY_DEGREE_CAP_BY_TYPE", '{"ip": 50}')
    settings = load_settings()
    assert settings.spark.master == "spark://10.1.2.3:7077"
    assert settings.graph.entity_degree_cap == 1000
    assert settings.graph.cap_for("ip") == 50
    assert settings.graph.cap_for("device") == 1000


def test_toml_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    config = tmp_path / "farmwatch.toml"
    config.write_text("[bans]\nban_threshold = 0.97\n[graph]\nmin_farm_size = 8\n")
    monkeypatch.setenv("FARMWATCH_CONFIG", str(config))
    monkeypatch.setenv("FARMWATCH_GRAPH__MIN_FARM_SIZE", "12")
    settings = load_settings()
    assert settings.bans.ban_threshold == 0.97
    assert settings.graph.min_farm_size == 12


def test_missing_config_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FARMWATCH_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_settings()


def test_unknown_keys_and_bad_values_are_rejected(monkeypatch):
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    monkeypatch.setenv("FARMWATCH_GRAPH__COMPONENTS_BACKEND", "magic")
    with pytest.raises(ValidationError):
        load_settings()


def test_fingerprint_follows_what_shapes_results(monkeypatch):
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    base = load_settings().fingerprint()
    # Where the list goes does not change the run: a folder and a bucket get the same run id.
    monkeypatch.setenv("FARMWATCH_PUBLISH__TARGET", "s3://trust-banlists/prod")
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("FARMWATCH_SPARK__MASTER", "local[2]")
    assert load_settings().fingerprint() == base
    # Rotating the entity-hash key changes published hashes, so the fingerprint changes too,
    # but the key never appears in what is hashed.
    monkeypatch.setenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY", "another-secret")
    rotated = load_settings()
    assert rotated.fingerprint() != base
    monkeypatch.delenv("FARMWATCH_PUBLISH__ENTITY_HASH_KEY")
    monkeypatch.setenv("FARMWATCH_BANS__BAN_THRESHOLD", "0.95")
    assert load_settings().fingerprint() != base


def test_refine_kind_weights_name_every_evidence_family_the_graph_uses():
    from typing import get_args

    from jobs.core.sections import EvidenceFamily, GraphSettings
    from jobs.graph.entities import EVIDENCE_KIND

    assert set(EVIDENCE_KIND.values()) == set(get_args(EvidenceFamily))
    with pytest.raises(ValidationError, match="netwrk"):
        GraphSettings(refine_kind_weights={"netwrk": 0.1})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        GraphSettings(refine_kind_weights={"network": -1})
