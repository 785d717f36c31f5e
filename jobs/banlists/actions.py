"""Ban-list actions: scores -> actions -> allowlist -> farm floor -> the evidence binding a farm.

In: the ``scores`` table of a run, the run's ``group_anomaly`` table, the accepted ``signups``
(for the email domains of the allowlist), the graph's ``communities`` and ``account_entities``
and :class:`jobs.core.config.BanSettings`. Out: the listed rows (``action`` and reasons), the
allowlisted rows kept off the list, and per farm its binding entities (keyed hashes). Called by
the publish stage (:mod:`jobs.banlists.stage`) and the tests; every function is a
DataFrame-in, DataFrame-out transform except :func:`load_allowlist`, which reads the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.core.config import BanSettings
from jobs.core.validation import require_columns
from jobs.graph.links import top_binding_entities

ACTIONS = ("ban", "review", "watch")
# the reason that leads a held-back ban (:func:`hold_small_farms`): accounts counted, then the floor
FARM_FLOOR_REASON = (
    "only %d of its farm candidate's accounts qualify for a ban (ban band, own evidence, not "
    "allowlisted); a farm ban needs %d"
)
ALLOWLIST_KINDS = ("account", "email_domain")


def assign_actions(
    scores: DataFrame, bans: BanSettings, anomaly: DataFrame | None = None
) -> DataFrame:
    """Turn scores into actions: ``ban`` (farm members above the ban band), ``review``, ``watch``.

    Accounts outside any farm candidate are never banned automatically: above the ban band they
    go to human review. With ``bans.ban_needs_own_evidence``, neither is an account without
    evidence of its own (``own_evidence`` false: its account score, what its own features say
    without its group, is under ``bans.own_evidence_min_score``): a household caught in a
    farm's community goes to a person, not to the ban list. (A farm is banned as a group: see
    :func:`hold_small_farms`, applied after the allowlist.)

    The first-night path: with ``anomaly`` (the ``group_anomaly`` table of
    :mod:`jobs.features.anomaly`), every member of a farm candidate that is unlike random groups of
    its size in ``bans.anomaly_review_families`` or more evidence families goes at least to
    ``review``, even when the model is unsure (a brand-new operator), and its reasons start with
    what the group does. Group evidence alone never bans. Rows without an action are dropped.
    """
    needed = ("account_id", "farm_id", "score", "reasons")
    require_columns(
        scores, "scores", (*needed, "own_evidence") if bans.ban_needs_own_evidence else needed
    )
    if not bans.watch_threshold <= bans.review_threshold <= bans.ban_threshold:
        raise ValueError("score bands must satisfy watch <= review <= ban")
    score = F.col("score")
    bannable = F.col("farm_id").isNotNull()
    if bans.ban_needs_own_evidence:
        bannable = bannable & F.col("own_evidence")
    first_night = F.lit(False)
    if anomaly is not None and bans.anomaly_review_families > 0:
        require_columns(anomaly, "group_anomaly", ("farm_id", "group_anomalous_families"))
        groups = anomaly.select(
            "farm_id",
            F.col("group_anomalous_families").alias("_families"),
            F.slice(F.col("evidence"), 1, 2).alias("_evidence"),
        )
        scores = scores.join(groups, "farm_id", "left")
        first_night = F.coalesce(
            F.col("_families") >= bans.anomaly_review_families, F.lit(False)
        ) & (score < bans.review_threshold)
        note = F.format_string(
            "first night: its group is unlike random groups of its size in %d of 7 kinds of "
            "behaviour, and the model is not sure",
            F.col("_families").cast("int"),
        )
        scores = scores.withColumn(
            "reasons",
            F.when(
                first_night,
                F.array_distinct(F.concat(F.array(note), F.col("_evidence"), F.col("reasons"))),
            ).otherwise(F.col("reasons")),
        )
    action = (
        F.when((score >= bans.ban_threshold) & bannable, "ban")
        .when((score >= bans.review_threshold) | first_night, "review")
        .when(score >= bans.watch_threshold, "watch")
    )
    listed = scores.withColumn("action", action).where(F.col("action").isNotNull())
    return listed.drop("_families", "_evidence")


def hold_small_farms(listed: DataFrame, bans: BanSettings) -> DataFrame:
    """A farm is banned as a group: send the bans of a farm with too few of them to review.

    When fewer than ``bans.min_farm_bans`` members of a farm candidate are banned, they go to
    ``review`` instead, their reasons led by why (three relatives sharing one card inside a
    larger community are not a farm, however sure the model is of each). Applied to the rows
    the allowlist kept, so an allowlisted member does not count towards its farm's bans.

    Args:
        listed: rows with ``farm_id``, ``action`` and ``reasons`` (from :func:`assign_actions`,
            after :func:`apply_allowlist`).
        bans: ``min_farm_bans`` (1 returns ``listed`` as it is).
    """
    require_columns(listed, "listed", ("farm_id", "action", "reasons"))
    if bans.min_farm_bans <= 1:
        return listed
    banned = F.col("action") == "ban"
    counts = listed.where(banned).groupBy("farm_id").agg(F.count(F.lit(1)).alias("_farm_bans"))
    held = banned & (F.col("_farm_bans") < bans.min_farm_bans)
    note = F.format_string(
        FARM_FLOOR_REASON,
        F.col("_farm_bans").cast("int"),
        F.lit(bans.min_farm_bans),
    )
    changed = {
        "reasons": F.when(held, F.concat(F.array(note), F.col("reasons"))).otherwise(
            F.col("reasons")
        ),
        "action": F.when(held, F.lit("review")).otherwise(F.col("action")),
    }
    return listed.join(F.broadcast(counts), "farm_id", "left").select(
        *[changed[c].alias(c) if c in changed else F.col(c) for c in listed.columns]
    )


def allowlist_digest(path: Path) -> str:
    """SHA-256 of the allowlist file's bytes.

    Part of a run's inputs: a run after the file was edited is a new run (a new id) that
    applies it, not the old run found already published.

    Raises:
        OSError: the file cannot be read.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_allowlist(spark: SparkSession, path: Path) -> DataFrame:
    """Read an allowlist file (CSV or Parquet with ``kind, value[, note]``) and validate it.

    ``kind`` is ``account`` (value: account id) or ``email_domain`` (value: a domain such as
    ``bigcorp.com``; an organisation is allowlisted through its domains). Domains are compared
    lower-case.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing or a row has an unknown kind or an empty value.
    """
    if not path.is_file():
        raise FileNotFoundError(f"allowlist {path} does not exist (bans.allowlist)")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = {"kind", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"allowlist {path} is missing column(s) {sorted(missing)}")
    if "note" not in frame.columns:
        frame["note"] = ""
    frame = frame[["kind", "value", "note"]].astype(str)
    frame["kind"] = frame["kind"].str.strip().str.lower()
    frame["value"] = frame["value"].str.strip()
    bad = frame[~frame["kind"].isin(ALLOWLIST_KINDS) | (frame["value"] == "")]
    if not bad.empty:
        rows = ", ".join(str(i + 2) for i in bad.index[:5])
        raise ValueError(
            f"allowlist {path}: row(s) {rows} need kind in {ALLOWLIST_KINDS} and a value"
        )
    frame.loc[frame["kind"] == "email_domain", "value"] = frame["value"].str.lower()
    return spark.createDataFrame(frame, "kind string, value string, note string")


def apply_allowlist(
    listed: DataFrame, signups: DataFrame, allowlist: DataFrame
) -> tuple[DataFrame, DataFrame]:
    """Split listed accounts into (kept, allowlisted).

    Args:
        listed: rows with ``account_id`` and ``action`` (from :func:`assign_actions`).
        signups: ``account_id, email`` (the email domain is used here and never published).
        allowlist: ``kind, value, note`` from :func:`load_allowlist`.

    Returns:
        The rows of accounts not allowlisted, and the allowlisted rows with ``allowlist_rule``
        (``kind:value``) and ``allowlist_note``; their ``action`` is the one they would have had.
    """
    require_columns(listed, "listed", ("account_id", "action"))
    require_columns(signups, "signups", ("account_id", "email"))
    require_columns(allowlist, "allowlist", ("kind", "value", "note"))
    domains = signups.select(
        "account_id", F.lower(F.substring_index("email", "@", -1)).alias("email_domain")
    )
    by_account = allowlist.where(F.col("kind") == "account").select(
        F.col("value").alias("account_id"),
        F.concat(F.lit("account:"), F.col("value")).alias("allowlist_rule"),
        F.col("note").alias("allowlist_note"),
    )
    by_domain = (
        allowlist.where(F.col("kind") == "email_domain")
        .select(
            F.col("value").alias("email_domain"),
            F.concat(F.lit("email_domain:"), F.col("value")).alias("allowlist_rule"),
            F.col("note").alias("allowlist_note"),
        )
        .join(domains, "email_domain")
        .drop("email_domain")
    )
    first_rule = Window.partitionBy("account_id").orderBy("allowlist_rule")
    matches = (
        by_account.unionByName(by_domain)
        .withColumn("_n", F.row_number().over(first_rule))
        .where("_n = 1")
        .drop("_n")
    )
    kept = listed.join(matches.select("account_id"), "account_id", "left_anti")
    allowlisted = listed.join(matches, "account_id")
    return kept, allowlisted


def attach_evidence(
    listed: DataFrame, farm_entities: DataFrame, top_entities: int = 3
) -> tuple[DataFrame, DataFrame]:
    """Name, by keyed hash, the entities that bind each farm and each listed account to it.

    Args:
        listed: rows with ``account_id, farm_id, reasons``.
        farm_entities: ``farm_id, account_id, entity_type, entity_id, members``
            (:func:`jobs.graph.links.farm_shared_entities`; ids are keyed hashes).
        top_entities: entities kept per farm.

    Returns:
        ``listed`` with one more reason for farm members ("shares instrument 3fa2... with 211
        other accounts of its farm") and a per-farm table ``farm_id, binding_entities`` (list of
        ``type:hash (n accounts)``, most shared first).
    """
    require_columns(listed, "listed", ("account_id", "farm_id", "reasons"))
    require_columns(
        farm_entities,
        "farm_entities",
        ("farm_id", "account_id", "entity_type", "entity_id", "members"),
    )
    farms = listed.where(F.col("farm_id").isNotNull()).select("farm_id").distinct()
    held = farm_entities.join(farms, "farm_id")
    shared = held.select("farm_id", "entity_type", "entity_id", "members").distinct()
    farm_entities = top_binding_entities(shared, "farm_id", top_entities)
    per_account = Window.partitionBy("account_id").orderBy(
        F.desc("members"), "entity_type", "entity_id"
    )
    strongest = (
        held.withColumn("_rank", F.row_number().over(per_account))
        .where("_rank = 1")
        .select(
            "account_id",
            F.format_string(
                "shares %s %s with %d other accounts of its farm",
                "entity_type",
                "entity_id",
                F.col("members") - 1,
            ).alias("_evidence"),
        )
    )
    with_evidence = (
        listed.join(strongest, "account_id", "left")
        .withColumn(
            "reasons",
            F.when(
                F.col("_evidence").isNotNull(),
                F.concat("reasons", F.array(F.col("_evidence"))),
            ).otherwise(F.col("reasons")),
        )
        .drop("_evidence")
    )
    return with_evidence, farm_entities
