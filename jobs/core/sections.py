"""The sections of farmwatch's settings, one typed object per concern, with laptop defaults.

In: nothing (values come through :class:`jobs.core.config.Settings`). Out: the frozen section
classes (Spark, lake, ingest, graph, anomaly, model, bans, report, publish, orchestration) and
:data:`DEFAULT_MONOTONE`. Each field's description is what ``docs/configuration.md`` shows (that
page is generated from these classes and checked by ``tests/test_docs.py``). Called by
:mod:`jobs.core.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from jobs.core.columns import LINK_ENTITY_TYPES, SOFT_ENTITY_TYPES
from jobs.core.lake import ObjectPath, lake_location


class _Section(BaseModel):
    # a field's docstring is its description (docs/configuration.md is generated from them)
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class SparkSettings(_Section):
    """How to reach Spark: local mode by default, a ``spark://`` master, or Spark Connect."""

    master: str = "local[*]"
    """Spark master: local[*], spark://host:7077, yarn, k8s://..."""
    remote: str | None = Field(
        default=None, description="Spark Connect URL (sc://host:port); wins over master."
    )
    app_name: str = "farmwatch"
    """Spark application name."""
    shuffle_partitions: int = 8
    """spark.sql.shuffle.partitions."""
    broadcast_threshold: str = "64MB"
    """spark.sql.autoBroadcastJoinThreshold: a join side estimated below it is copied to every
    task instead of both sides being shuffled (-1: never). The graph's shared-entity statistics
    are about 24 MB at 1M accounts and ten times that at 10M, where the join shuffles again."""
    driver_memory: str = "6g"
    """Driver memory (local mode: the whole JVM)."""
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings.")
    packages: list[Literal["s3a", "graphframes"]] = Field(
        default_factory=list, description="Optional JVM packages (jobs.core.session.JVM_PACKAGES)."
    )


class LakeSettings(_Section):
    """Where input tables and per-run intermediates live (a folder or an object-store prefix)."""

    home: Path = Path("var")
    """Root of local state: lake, runs, MLflow database, bucket stand-in, Prefect."""
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
    """Region of an object-store lake."""
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
    """Days of events each run reads, ending on the run date."""
    earliest_valid_ts: str = "2000-01-01"
    """Event times before this are impossible (quarantined)."""
    max_future_skew_hours: int = 24
    """Event times this far past the run's end are impossible."""


EvidenceFamily = Literal["network", "payment", "device", "identity", "behaviour"]


class GraphSettings(_Section):
    """Account graph and connected components."""

    entity_degree_cap: int = 400
    """An entity shared by more accounts is a hub: it never links them."""
    entity_degree_cap_by_type: dict[str, int] = Field(default_factory=dict)
    """Hub cap per entity type (overrides entity_degree_cap)."""
    components_backend: Literal["auto", "local", "spark", "graphframes"] = "auto"
    """Connected components: auto, local (driver), spark, graphframes."""
    local_max_edges: int = 30_000_000
    """Largest link graph the local backend solves on the driver."""
    neighbour_backend: Literal["auto", "local", "spark"] = Field(
        default="auto",
        description="2-hop neighbourhood features: on the driver (local), in Spark, or by size.",
    )
    neighbour_local_max_paths: int = Field(
        default=200_000_000,
        description="Largest 2-hop expansion (two-step paths) 'auto' computes on the driver.",
    )
    neighbour_max_degree: int = Field(
        default=200, description="Accounts linked to more than this are not expanded through."
    )
    spark_max_iterations: int = 60
    """Rounds of contraction of the spark components backend before it gives up."""
    spark_finish_edges: Annotated[int, Field(ge=0)] = 1_000_000
    """The spark backend solves a contracted graph this small on the driver (0: never)."""
    spark_checkpoint_interval: int = 2
    """Rounds between local checkpoints (graphframes backend)."""
    graphframes_algorithm: Literal["two_phase", "graphx", "randomized_contraction"] = "two_phase"
    """GraphFrames' connected-components algorithm."""
    min_farm_size: int = 5
    """Smallest community that is a farm candidate."""
    refinement: Literal["leiden", "none"] = "leiden"
    """leiden splits large components into communities; none keeps them whole."""
    refine_min_size: int = 30
    """Components of at least this many accounts are refined by Leiden."""
    refine_max_task_accounts: Annotated[int, Field(ge=2)] | None = None
    """Most accounts one Leiden task holds; larger components are cut first (none: no cap).
    Set it above the parts where farms meet: on the 10M world 200,000 kept the campaign, 30,000
    cut it into lone accounts."""
    leiden_resolution: float = 0.5
    """Leiden's modularity resolution."""
    leiden_seed: int = 7
    """Leiden's seed."""
    leiden_iterations: int = 2
    """Leiden iterations; negative: until stable (slow on loose components)."""
    min_evidence_kinds: int = 3
    """Evidence points a member needs to stay in its community (core rule)."""
    min_entity_concentration: float = 0.5
    """Share of an entity's accounts that must be members for it to tie."""
    strong_evidence_types: list[str] = Field(
        default_factory=lambda: ["instrument", "device", "email"]
    )
    """Identifiers that count twice in the core rule."""
    soft_key_weight: float = 0.5
    """Leiden weight of soft keys (BIN+postcode, email shape, prompts...)."""
    # Leiden edge-weight multiplier per evidence family. Network evidence (proxy IPs, /24 + ASN
    # cells, signup bursts behind one ASN) is infrastructure that proxy providers sell to many
    # operators and their ordinary customers, and a farm has many times more network edges than
    # cards, devices and behaviour of its own. At full weight Leiden glued every farm on one
    # proxy pool into one community. At 0 the network still builds the components and still
    # counts in the core rule; it only stops deciding who belongs with whom.
    refine_kind_weights: dict[EvidenceFamily, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"network": 0.0}
    )
    """Leiden weight multiplier per evidence family (unnamed: 1.0)."""
    binding_entities: int = 3
    """Binding entities listed per community and farm."""
    behaviour_entities: bool = True
    """Build MinHash behaviour buckets (synchronised activity)."""
    behaviour_cell_max_accounts: int = 2000
    """Activity cells shared by more accounts say nothing (dropped)."""
    behaviour_min_cells: int = 5
    """Accounts with fewer activity cells get no behaviour bucket."""
    behaviour_bands: int = 8
    """MinHash bands."""
    behaviour_rows: int = 3
    """MinHash rows per band."""
    behaviour_seed: int = Field(default=7, description="Seed of the MinHash behaviour buckets.")

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
    **{f"max_share_{t}": 1 for t in (*LINK_ENTITY_TYPES, *SOFT_ENTITY_TYPES)},
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
    """MLflow experiment name."""
    registered_model: str = "farmwatch-farm-model"
    """MLflow registered model name (the combined model)."""
    test_fraction_by_time: float = 0.3
    """Share of labelled accounts, latest first, held out for testing."""
    num_boost_round: int = 400
    """Most boosting rounds per fit."""
    early_stopping_rounds: int = 30
    """Rounds without improvement on a held-out fold before stopping."""
    seed: int = 7
    """LightGBM and fold seed."""
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
    """LightGBM base parameters (model.candidates override them)."""
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
    """AUPRC a challenger must gain over the champion on the same holdout."""
    reasons_per_account: int = 3
    """Reasons kept per scored account."""
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
    """Score bands that turn scores into actions, and the circuit breaker guarding the list."""

    ban_threshold: float = 0.9
    """Score from which a farm member with own evidence is banned."""
    review_threshold: float = 0.6
    """Score from which an account goes to review."""
    watch_threshold: float = 0.3
    """Score from which an account is on watch (and gets reasons)."""
    ban_needs_own_evidence: bool = True
    """Send to review, not ban, an account without evidence of its own."""
    own_evidence_min_score: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="Account-model score (the account's own features alone) that is own evidence "
        "(0.4: an unseen operator's accounts that hide their hard keys score just under 0.5 alone; "
        "docs/detection.md).",
    )
    min_farm_bans: int = Field(
        default=5,
        ge=1,
        description="Ban a farm candidate's members only when at least this many of them "
        "qualify (ban band, own evidence, not allowlisted); fewer go to review (a household "
        "sharing a card is not a farm); 1 turns it off.",
    )
    anomaly_review_families: int = Field(
        default=4,
        ge=0,
        description="Members of a farm candidate anomalous in this many evidence families go "
        "to review at least (the first-night path); 0 turns it off.",
    )
    allowlist: Path | None = None
    """CSV or Parquet of (kind, value, note): kind 'account' or 'email_domain'."""
    breaker_multiple: float = 3.0
    """Hold a run whose bans exceed this multiple of the trailing median."""
    breaker_window_runs: int = Field(default=7, description="Published runs in the median.")
    breaker_history_runs: int = 28
    """Earlier runs read for the breaker's history (any status)."""
    breaker_min_history: int = 3
    """Runs needed before the upward median rule applies."""
    breaker_floor: int = 100
    """The upward median rule never holds a run with this many bans or fewer."""
    breaker_max_bans: int = Field(default=100_000, description="Absolute ceiling on bans per run.")
    breaker_min_share_of_median: float = Field(default=0.5, ge=0, le=1)
    """Hold a run whose bans fall below this share of the trailing median (from one earlier
    published run on); 0 turns it off."""
    breaker_max_vanished_farms: float = Field(default=0.5, ge=0, le=1)
    """Hold a run in which more than this share of the farms banned in the list in force have
    no banned account left; 1 turns it off."""
    breaker_drop_floor: int = Field(default=10, ge=0)
    """The two falling-bans rules never hold a run that lifts this many bans or fewer."""
    breaker_min_input_share: float = Field(default=0.8, ge=0, le=1)
    """Hold a run in which an input table's accepted rows fall below this share of its median
    over the trailing published runs with the same look-back; 0 turns it off."""
    lineage_link_share: float = Field(default=0.3, gt=0, le=1)
    """A farm candidate continues an earlier farm when the accounts they share are at least
    this share of the smaller of the two (jobs/banlists/lineage.py)."""
    lineage_min_shared: int = Field(default=2, ge=1)
    """Accounts a farm candidate must share with an earlier farm to continue it."""
    lineage_size_change: float = Field(default=0.1, ge=0)
    """A continued farm has grown or shrunk when its size moved by this share of the night
    before's; less is steady."""
    lineage_dormant_days: int = Field(default=60, ge=0)
    """A farm unseen for longer leaves the registry (its history stays)."""


class ReportSettings(_Section):
    """The run report (report.html beside each ban list) and its drift and adversary watch."""

    max_farms_drawn: int = Field(default=12, ge=0)
    """Farms drawn as graphs in the report, those with the most bans first."""
    max_members_per_farm: int = Field(default=60, ge=1)
    """Members drawn per farm graph (the highest scores first; the page says when it samples)."""
    max_entities_per_farm: int = Field(default=40, ge=0)
    """Hashed entities drawn per farm graph (those shared by the most drawn members first)."""
    trailing_runs: int = Field(default=7, ge=1)
    """Published runs the score chart and the drift are compared with."""
    profile_relative_error: float = Field(default=0.001, ge=0, le=1)
    """Rank error of the quantiles profiled for drift (Spark percentile_approx)."""
    feature_psi_alert: float = Field(default=0.25, ge=0)
    """Alert when a model feature's population stability index exceeds this."""
    score_psi_alert: float = Field(default=0.25, ge=0)
    """Alert when the score distribution's population stability index exceeds this."""
    farm_shrink_ratio: float = Field(default=0.5, ge=0, le=1)
    """A farm banned last night shrank sharply when fewer than this share of its bans remain."""
    farm_loss_alert: float = Field(default=0.3, ge=0, le=1)
    """Alert when more than this share of last night's banned farms vanished or shrank sharply."""


class PublishSettings(_Section):
    """Where ban lists go: a local folder laid out like the bucket, or S3."""

    target: str | None = Field(
        default=None, description="s3://bucket or a folder; default folder <home>/bucket."
    )
    prefix: str = "banlists"
    """Key prefix of the ban lists under the target."""
    entity_hash_key: SecretStr | None = None
    """Secret key of the entity hashes, 32+ random characters, from the environment
    (FARMWATCH_PUBLISH__ENTITY_HASH_KEY). Unset: a random key generated once in
    <home>/entity-hash-key (mode 0600), and an s3:// target is refused."""
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, moto); default AWS."
    )
    region: str | None = None
    """Region of the bucket."""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """S3 addressing: auto, path (most S3-compatible stores), virtual."""
    s3_max_attempts: int = Field(default=6, description="boto3 adaptive-mode attempts per call.")
    s3_connect_timeout_seconds: float = 5.0
    """Connect timeout of S3 calls."""
    s3_read_timeout_seconds: float = 60.0
    """Read timeout of S3 calls."""
    sse: Literal["AES256", "aws:kms", "none"] = Field(
        default="AES256", description="Server-side encryption requested on every object."
    )
    sse_kms_key_id: str | None = None
    """KMS key for sse = aws:kms."""
    multipart_threshold_mib: int = 64
    """Files above this are uploaded in parts."""
    multipart_chunk_mib: int = 16
    """Part size of multipart uploads."""

    def target_for(self, home: Path) -> str:
        """Publishing target, defaulting to the local stand-in for the bucket."""
        return self.target or str((home / "bucket").resolve())


class OrchestrationSettings(_Section):
    """Prefect schedules, retries of I/O steps, resumption and failure notifications."""

    nightly_cron: str = "0 2 * * *"
    """Schedule of the served nightly deployment."""
    retrain_cron: str = "0 3 * * 0"
    """Schedule of the served retraining deployment."""
    timezone: str = "UTC"
    """Time zone of both schedules."""
    io_retries: int = Field(default=2, description="Retries of the registry and publish steps.")
    io_retry_delays_seconds: list[int] = Field(default_factory=lambda: [10, 60])
    """Backoff between retries of registry and publish steps."""
    resume: bool = Field(
        default=True, description="Skip stages a previous attempt of the same run finished."
    )
    webhook_url: str | None = Field(
        default=None,
        description="POSTed a JSON message when a run fails, a list is held or drift alerts.",
    )
