"""Typed configuration for every farmwatch stage.

In: laptop defaults, then an optional TOML file named by ``FARMWATCH_CONFIG`` (or passed to
:func:`load_settings`), then ``FARMWATCH_*`` environment variables (nested keys use ``__``, for
example ``FARMWATCH_SPARK__MASTER=spark://host:7077``). Out: one frozen :class:`Settings` object
with one section per concern. Called by the CLI, the Prefect flows, the jobs' ``run`` functions
and the tests. Secrets (the entity hashing key, S3 credentials) come only from the environment or
boto3's default credential chain, never from the TOML file checked into a repository.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jobs.lake import ObjectPath, lake_location


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SparkSettings(_Section):
    """How to reach Spark: local mode by default, a ``spark://`` master, or Spark Connect."""

    master: str = "local[*]"
    remote: str | None = Field(
        default=None, description="Spark Connect URL (sc://host:port); wins over master."
    )
    app_name: str = "farmwatch"
    shuffle_partitions: int = 8
    driver_memory: str = "6g"
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings.")
    packages: list[Literal["s3a", "graphframes"]] = Field(
        default_factory=list, description="Optional JVM packages (jobs.spark.JVM_PACKAGES)."
    )


class LakeSettings(_Section):
    """Where input tables and per-run intermediates live (a folder or an object-store prefix)."""

    home: Path = Path("var")
    lake: str | Path | None = Field(
        default=None, description="Input tables: a folder or s3://bucket/prefix; <home>/lake."
    )
    runs: str | Path | None = Field(
        default=None, description="Per-run outputs: a folder or s3://bucket/prefix; <home>/runs."
    )
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint of an object-store lake; default AWS."
    )
    region: str | None = None
    format: Literal["parquet", "delta"] = Field(
        default="parquet", description="How input tables are stored: Parquet folders or Delta."
    )

    @property
    def lake_path(self) -> Path | ObjectPath:
        """Location holding one Parquet folder per input table."""
        return lake_location(self.lake or self.home / "lake", self.endpoint_url, self.region)

    @property
    def runs_path(self) -> Path | ObjectPath:
        """Location holding per-run intermediates, quarantine and reports."""
        return lake_location(self.runs or self.home / "runs", self.endpoint_url, self.region)


class IngestSettings(_Section):
    """Contract enforcement for the input tables."""

    lookback_days: int = 44
    earliest_valid_ts: str = "2000-01-01"
    max_future_skew_hours: int = 24


EvidenceFamily = Literal["network", "payment", "device", "identity", "behaviour"]


class GraphSettings(_Section):
    """Account graph and connected components."""

    entity_degree_cap: int = 400
    entity_degree_cap_by_type: dict[str, int] = Field(default_factory=dict)
    components_backend: Literal["auto", "local", "spark", "graphframes"] = "auto"
    local_max_edges: int = 30_000_000
    neighbour_backend: Literal["auto", "local", "spark"] = Field(
        default="auto",
        description="2-hop neighbourhood features: on the driver (local), in Spark, or by size.",
    )
    neighbour_local_max_paths: int = Field(
        default=200_000_000,
        description="Largest 2-hop expansion (two-step paths) 'auto' computes on the driver.",
    )
    spark_max_iterations: int = 60
    spark_checkpoint_interval: int = 2
    graphframes_algorithm: Literal["two_phase", "graphx", "randomized_contraction"] = "two_phase"
    min_farm_size: int = 5
    refinement: Literal["leiden", "none"] = "leiden"
    refine_min_size: int = 30
    leiden_resolution: float = 0.5
    leiden_seed: int = 7
    leiden_iterations: int = 2
    min_evidence_kinds: int = 3
    min_entity_concentration: float = 0.5
    strong_evidence_types: list[str] = Field(
        default_factory=lambda: ["instrument", "device", "email"]
    )
    soft_key_weight: float = 0.5
    # Leiden edge-weight multiplier per evidence family. Network evidence (proxy IPs, /24 + ASN
    # cells, signup bursts behind one ASN) is infrastructure that proxy providers sell to many
    # operators and their ordinary customers, and a farm has many times more network edges than
    # cards, devices and behaviour of its own. At full weight Leiden glued every farm on one
    # proxy pool into one community. At 0 the network still builds the components and still
    # counts in the core rule; it only stops deciding who belongs with whom.
    refine_kind_weights: dict[EvidenceFamily, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"network": 0.0}
    )
    binding_entities: int = 3
    behaviour_entities: bool = True
    behaviour_cell_max_accounts: int = 2000
    behaviour_min_cells: int = 5
    behaviour_bands: int = 8
    behaviour_rows: int = 3

    def cap_for(self, entity_type: str) -> int:
        """Degree cap for one entity type (type-specific override or the global cap)."""
        return self.entity_degree_cap_by_type.get(entity_type, self.entity_degree_cap)


class AnomalySettings(_Section):
    """Group anomaly: farm candidates against random groups of their size (no labels)."""

    seed: int = Field(default=7, description="Seed of the random reference groups.")
    random_groups: int = Field(default=64, description="Random reference groups per size bin.")
    min_random_groups: int = Field(
        default=16, description="Fewest random groups per size bin, whatever the budget."
    )
    random_group_budget: int = Field(
        default=262_144, description="Most memberships of random groups in one size bin."
    )
    min_spread: float = Field(
        default=0.02, gt=0, description="Floor on a signal's spread among random groups."
    )
    z_anomalous: float = Field(
        default=3.0, gt=0, description="z-score at which a signal (and its family) is anomalous."
    )
    z_cap: float = Field(default=50.0, gt=0, description="Largest z-score a signal reports.")


# Features where more (or, at -1, less) can never mean less suspicious. A constraint keeps a
# model trained on a few operators from learning "farms have exactly this many accounts per
# card": an unseen operator that shares more is scored at least as high.
DEFAULT_MONOTONE: dict[str, Literal[-1, 0, 1]] = {
    "account_age_days": -1,
    "requests_cv": -1,
    "decline_rate": 1,
    "chargebacks": 1,
    "virtual_card_share": 1,
    "ips_per_active_day": 1,
    **{
        f"max_share_{t}": 1
        for t in (
            "instrument",
            "device",
            "ip",
            "email",
            "bin_postcode",
            "ip24_asn_day",
            "email_shape",
            "signup_minute_asn",
            "prompt",
            "client",
            "behaviour",
        )
    },
    "account_score": 1,
    "group_anomalous_families": 1,
    "group_anomaly": 1,
    "community_known_bad": 1,
    "community_known_bad_share": 1,
}


class ModelSettings(_Section):
    """LightGBM training, MLflow tracking and the registry."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<home>/mlflow.db."
    )
    experiment: str = "farmwatch"
    registered_model: str = "farmwatch-farm-model"
    test_fraction_by_time: float = 0.3
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    seed: int = 7
    params: dict[str, Any] = Field(
        default_factory=lambda: {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "verbose": -1,
        }
    )
    cv_folds: int = Field(
        default=5, ge=2, description="Cross-validation folds, grouped by farm candidate."
    )
    candidates: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"num_leaves": 7, "min_data_in_leaf": 20},
            {"num_leaves": 15, "min_data_in_leaf": 10},
            {"num_leaves": 31, "min_data_in_leaf": 5, "lambda_l2": 5.0},
        ],
        description="Overrides of params tried on the grouped folds; the best one is kept.",
    )
    monotone: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=lambda: dict(DEFAULT_MONOTONE),
        description="Monotone constraint per feature: +1 more is never less suspicious, -1 "
        "less is never less suspicious; unnamed features are free.",
    )
    promotion_margin: float = 0.0
    reasons_per_account: int = 3
    evaluator: Literal["compiled", "lightgbm"] = Field(
        default="compiled",
        description=(
            "How scoring evaluates the trees: 'compiled' (the champion compiled to machine code "
            "with lleaves, checked against LightGBM in every task) or 'lightgbm' (the booster)."
        ),
    )

    def tracking_uri_for(self, home: Path) -> str:
        """The tracking URI, defaulting to a SQLite file under the farmwatch home."""
        return self.tracking_uri or f"sqlite:///{(home / 'mlflow.db').resolve()}"

    def artifact_location_for(self, home: Path) -> str | None:
        """Artifacts beside the default SQLite registry; a tracking server decides its own."""
        return None if self.tracking_uri else (home / "mlartifacts").resolve().as_uri()


class BanSettings(_Section):
    """Score bands that turn scores into actions."""

    ban_threshold: float = 0.9
    review_threshold: float = 0.6
    watch_threshold: float = 0.3
    ban_needs_own_evidence: bool = Field(
        default=True,
        description="Send to review, not ban, an account without evidence of its own.",
    )
    own_evidence_min_score: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Account-model score (the account's own features alone) that is own evidence.",
    )
    anomaly_review_families: int = Field(
        default=4,
        ge=0,
        description="Members of a farm candidate anomalous in this many evidence families go "
        "to review at least (the first-night path); 0 turns it off.",
    )
    allowlist: Path | None = Field(
        default=None,
        description="CSV or Parquet of (kind, value, note): kind 'account' or 'email_domain'.",
    )
    breaker_multiple: float = Field(
        default=3.0,
        description="Hold a run whose bans exceed this multiple of the trailing median.",
    )
    breaker_window_runs: int = Field(default=7, description="Published runs in the median.")
    breaker_min_history: int = Field(
        default=3, description="Runs needed before the median rule applies."
    )
    breaker_floor: int = Field(
        default=100, description="The median rule never holds a run with this many bans or fewer."
    )
    breaker_max_bans: int = Field(default=100_000, description="Absolute ceiling on bans per run.")


class PublishSettings(_Section):
    """Where ban lists go: a local folder laid out like the bucket, or S3."""

    target: str | None = Field(
        default=None, description="s3://bucket or a folder; default folder <home>/bucket."
    )
    prefix: str = "banlists"
    entity_hash_key: SecretStr = SecretStr("farmwatch-local-demo-key")
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, moto); default AWS."
    )
    region: str | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_max_attempts: int = Field(default=6, description="boto3 adaptive-mode attempts per call.")
    s3_connect_timeout_seconds: float = 5.0
    s3_read_timeout_seconds: float = 60.0
    sse: Literal["AES256", "aws:kms", "none"] = Field(
        default="AES256", description="Server-side encryption requested on every object."
    )
    sse_kms_key_id: str | None = None
    multipart_threshold_mib: int = 64
    multipart_chunk_mib: int = 16

    def target_for(self, home: Path) -> str:
        """Publishing target, defaulting to the local stand-in for the bucket."""
        return self.target or str((home / "bucket").resolve())


class OrchestrationSettings(_Section):
    """Prefect schedules, retries of I/O steps, resumption and failure notifications."""

    nightly_cron: str = "0 2 * * *"
    retrain_cron: str = "0 3 * * 0"
    timezone: str = "UTC"
    io_retries: int = Field(default=2, description="Retries of the registry and publish steps.")
    io_retry_delays_seconds: list[int] = Field(default_factory=lambda: [10, 60])
    resume: bool = Field(
        default=True, description="Skip stages a previous attempt of the same run finished."
    )
    webhook_url: str | None = Field(
        default=None, description="POSTed a JSON message when a run fails or a list is held."
    )


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
        config_file = os.environ.get("FARMWATCH_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"FARMWATCH_CONFIG points at {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def home(self) -> Path:
        """Root folder for local state (lake, runs, MLflow database, bucket stand-in)."""
        return self.lake.home.resolve()

    def fingerprint(self) -> str:
        """Stable sha256 of the settings that shape results, recorded in manifests and MLflow.

        Where a ban list is written (target, endpoint, transport and encryption settings) is left
        out, so the same run publishes the same run id to a folder or a bucket. The entity-hash
        key enters only as a short digest: rotating it changes the published hashes, and so the
        fingerprint, without the key appearing anywhere.
        """
        payload = self.model_dump(
            mode="json", include=_RESULT_SECTIONS, exclude={"model": {"tracking_uri"}}
        )
        payload["publish"] = {
            "prefix": self.publish.prefix,
            "entity_hash_key_id": hashlib.sha256(
                self.publish.entity_hash_key.get_secret_value().encode()
            ).hexdigest()[:8],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, an optional TOML file, the environment and overrides.

    Args:
        config_file: TOML file whose tables mirror the sections (``[spark]``, ``[graph]``, ...).
        **overrides: section objects or dicts that win over everything else (used by tests).

    Returns:
        The frozen settings object.
    """
    if config_file is not None:
        os.environ["FARMWATCH_CONFIG"] = str(config_file)
    return Settings(**overrides)
