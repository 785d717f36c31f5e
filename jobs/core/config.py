"""Typed configuration for every farmwatch stage.

In: laptop defaults (:mod:`jobs.core.sections`), then an optional TOML file named by
``FARMWATCH_CONFIG`` (or passed to :func:`load_settings`), then ``FARMWATCH_*`` environment
variables (nested keys use ``__``, for example ``FARMWATCH_SPARK__MASTER=spark://host:7077``).
Out: one frozen :class:`Settings` object with one section per concern. Called by the CLI, the
Prefect flows, the stages and the tests. Secrets (the entity hashing key, S3 credentials) come
only from the environment or boto3's default credential chain, never from the TOML file checked
into a repository; without a configured key, a local run uses one generated in its home
(:mod:`jobs.core.hash_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jobs.core.hash_key import EntityHashKey, resolve_entity_hash_key
from jobs.core.sections import (
    DEFAULT_MONOTONE,
    AnomalySettings,
    BanSettings,
    GraphSettings,
    IngestSettings,
    LakeSettings,
    ModelSettings,
    OrchestrationSettings,
    PublishSettings,
    ReportSettings,
    SparkSettings,
)

__all__ = [
    "DEFAULT_MONOTONE",
    "AnomalySettings",
    "BanSettings",
    "GraphSettings",
    "IngestSettings",
    "LakeSettings",
    "ModelSettings",
    "OrchestrationSettings",
    "PublishSettings",
    "ReportSettings",
    "Settings",
    "SparkSettings",
    "load_settings",
]

# the TOML file of the load_settings call being built (the environment is never written to)
_CONFIG_FILE: ContextVar[str | None] = ContextVar("farmwatch_config_file", default=None)

_RESULT_SECTIONS = {"ingest", "graph", "anomaly", "model", "bans"}


class Settings(BaseSettings):
    """All of farmwatch's configuration, one section per concern."""

    model_config = SettingsConfigDict(
        env_prefix="FARMWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    spark: SparkSettings = SparkSettings()
    lake: LakeSettings = LakeSettings()
    ingest: IngestSettings = IngestSettings()
    graph: GraphSettings = GraphSettings()
    anomaly: AnomalySettings = AnomalySettings()
    model: ModelSettings = ModelSettings()
    bans: BanSettings = BanSettings()
    report: ReportSettings = ReportSettings()
    publish: PublishSettings = PublishSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, then the TOML file, then defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get() or os.environ.get("FARMWATCH_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"the config file {path} is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def home(self) -> Path:
        """Root folder for local state (lake, runs, MLflow database, bucket stand-in)."""
        return self.lake.home.resolve()

    def fingerprint(self) -> str:
        """Stable sha256 of the settings that shape results, recorded in manifests and MLflow.

        Where a ban list is written (target, endpoint, transport and encryption settings) is left
        out, so the same run publishes the same run id to a folder or a bucket (given the same
        key). The entity-hash key enters only as its key id: rotating it changes the published
        hashes, and so the fingerprint, without the key appearing anywhere. Resolving the key
        may create the home's key file, and refuses an object-store target without a configured
        key, so a run that cannot publish stops before its first stage.
        """
        payload = self.model_dump(
            mode="json", include=_RESULT_SECTIONS, exclude={"model": {"tracking_uri"}}
        )
        payload["publish"] = {
            "prefix": self.publish.prefix,
            "entity_hash_key_id": self.entity_hash_key().key_id,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def entity_hash_key(self) -> EntityHashKey:
        """The key entity values are hashed with: configured, or generated once in the home.

        Raises:
            EntityHashKeyError: publishing to object storage without a configured key, or an
                unusable key (see :mod:`jobs.core.hash_key`).
        """
        return resolve_entity_hash_key(self.publish, self.home)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, an optional TOML file, the environment and overrides.

    The file applies to this call only (nothing is written to the environment, so a later
    call without one does not silently reuse it); without one, ``FARMWATCH_CONFIG`` names it.

    Args:
        config_file: TOML file whose tables mirror the sections (``[spark]``, ``[graph]``, ...).
        **overrides: section objects or dicts that win over everything else (used by tests).

    Returns:
        The frozen settings object.
    """
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)
