"""Account graph: accounts linked through the entities they share.

In: the accepted ``signups``, ``payments``, ``ip_events`` and ``api_usage`` tables. Out:
- ``account_entities``: (account_id, entity_type, entity_id) with entity ids as keyed hashes, so
  no raw email, IP or card data travels past this stage;
- ``entity_stats``: degree and IDF-like weight per entity, and whether it is a hub (degree above
  the configured cap for its type);
- ``account_links``: the edges used for connected components: for every linking entity that is
  not a hub, a *star* from its smallest account to each other account (``degree - 1`` edges,
  never the quadratic clique).
Called by the nightly flow's graph task, training and the tests. Hub entities (CGNAT IPs,
gmail-shaped emails, popular BINs, popular prompt shapes) never link accounts; how many accounts
share them stays available as features.
"""

from __future__ import annotations

from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.config import GraphSettings

# Hard keys identify one thing an operator must pay for or control; they link accounts.
LINK_ENTITY_TYPES = ("instrument", "device", "ip", "email")
# Soft keys are cheap for a farm to share and common among strangers; they are features only.
SOFT_ENTITY_TYPES = (
    "bin_postcode",
    "ip24_asn_day",
    "email_shape",
    "signup_minute_asn",
    "prompt",
    "client",
    "behaviour",
)
ENTITY_TYPES = LINK_ENTITY_TYPES + SOFT_ENTITY_TYPES
# Independent kinds of evidence: entities of one kind come from the same observation (an IP
# event gives both ``ip`` and ``ip24_asn_day``), so sharing two of them is one piece of evidence.
EVIDENCE_KIND = {
    "ip": "network",
    "ip24_asn_day": "network",
    "signup_minute_asn": "network",
    "instrument": "payment",
    "bin_postcode": "payment",
    "device": "device",
    "client": "device",
    "email": "identity",
    "email_shape": "identity",
    "prompt": "behaviour",
    "behaviour": "behaviour",
}

_REQUIRED = {
    "signups": (
        "account_id",
        "signup_ts",
        "email",
        "signup_ip",
        "signup_asn",
        "device_fingerprint",
        "client_fingerprint",
    ),
    "payments": ("account_id", "instrument_fingerprint", "card_bin", "billing_postcode"),
    "ip_events": ("account_id", "event_ts", "ip", "asn"),
    "api_usage": ("account_id", "prompt_signature", "client_fingerprint"),
}


def require_columns(df: DataFrame, table: str, columns: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first missing column of ``table``."""
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"{table} is missing column {column!r}")


def normalise_email(email: Column) -> Column:
    """Lower-case, drop ``+tags`` and, for gmail, dots in the local part."""
    email = F.lower(F.trim(email))
    local = F.regexp_replace(F.substring_index(email, "@", 1), r"\+.*$", "")
    domain = F.substring_index(email, "@", -1)
    local = F.when(
        domain.isin("gmail.com", "googlemail.com"), F.regexp_replace(local, r"\.", "")
    ).otherwise(local)
    return F.concat(local, F.lit("@"), domain)


def email_shape(email: Column) -> Column:
    """Local-part shape plus domain: ``maryjones4821@x.xyz`` -> ``a9@x.xyz``."""
    email = F.lower(email)
    local = F.substring_index(email, "@", 1)
    shape = F.regexp_replace(F.regexp_replace(local, "[a-z]+", "a"), "[0-9]+", "9")
    return F.concat(shape, F.lit("@"), F.substring_index(email, "@", -1))


def ip24(ip: Column) -> Column:
    """The /24 network of a dotted IPv4 address."""
    return F.substring_index(ip, ".", 3)


def account_entities(
    signups: DataFrame,
    payments: DataFrame,
    ip_events: DataFrame,
    api_usage: DataFrame,
    hash_key: str,
) -> DataFrame:
    """Every (account, entity) pair, entities hashed with a secret key.

    Args:
        signups: accepted signups.
        payments: accepted payments.
        ip_events: accepted IP events.
        api_usage: accepted API usage.
        hash_key: secret key for the entity hashes (published reasons refer to these).

    Returns:
        Distinct ``account_id, entity_type, entity_id`` rows.
    """
    for name, df in (
        ("signups", signups),
        ("payments", payments),
        ("ip_events", ip_events),
        ("api_usage", api_usage),
    ):
        require_columns(df, name, _REQUIRED[name])

    def pairs(df: DataFrame, entity_type: str, value: Column) -> DataFrame:
        return df.select(
            "account_id", F.lit(entity_type).alias("entity_type"), value.alias("value")
        ).where(F.col("value").isNotNull())

    parts = [
        pairs(payments, "instrument", F.col("instrument_fingerprint")),
        pairs(signups, "device", F.col("device_fingerprint")),
        pairs(signups, "ip", F.col("signup_ip")),
        pairs(ip_events, "ip", F.col("ip")),
        pairs(signups, "email", normalise_email(F.col("email"))),
        pairs(
            payments, "bin_postcode", F.concat_ws("|", F.col("card_bin"), F.col("billing_postcode"))
        ),
        pairs(
            ip_events,
            "ip24_asn_day",
            F.concat_ws(
                "|",
                ip24(F.col("ip")),
                F.col("asn").cast("string"),
                F.to_date("event_ts").cast("string"),
            ),
        ),
        pairs(signups, "email_shape", email_shape(F.col("email"))),
        pairs(
            signups,
            "signup_minute_asn",
            F.concat_ws(
                "|",
                F.date_trunc("minute", "signup_ts").cast("string"),
                F.col("signup_asn").cast("string"),
            ),
        ),
        pairs(api_usage, "prompt", F.col("prompt_signature")),
        pairs(signups, "client", F.col("client_fingerprint")),
        pairs(api_usage, "client", F.col("client_fingerprint")),
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    entity_id = F.substring(
        F.sha2(F.concat_ws(":", F.lit(hash_key), F.col("entity_type"), F.col("value")), 256), 1, 16
    )
    return union.select("account_id", "entity_type", entity_id.alias("entity_id")).distinct()


def behaviour_entities(
    ip_events: DataFrame, api_usage: DataFrame, settings: GraphSettings, hash_key: str
) -> DataFrame:
    """MinHash LSH band buckets of each account's activity cells, as ``behaviour`` entities.

    In the spirit of SynchroTrap and CopyCatch: an account's activity is the set of its
    (hour, ASN) cells from IP events, its (day, active-hours profile) cells and its
    prompt-structure signatures. Cells that more than ``behaviour_cell_max_accounts`` accounts
    share (peak hour on a big ISP, office hours) say nothing and are dropped. Spark ML's
    ``MinHashLSH`` hashes every remaining set (``behaviour_bands * behaviour_rows`` hash
    functions); ``behaviour_rows`` consecutive hashes form one band, and accounts with the same
    band value share a ``behaviour`` entity. Two accounts with Jaccard similarity ``j`` share at
    least one band with probability ``1 - (1 - j**rows)**bands``. A bucket is an entity like a
    card or a device, so a synchronised group of 25,000 accounts costs 25,000 memberships, not
    the 312 million pairs an approximate similarity self-join would emit.

    Args:
        ip_events: accepted IP events (``account_id, event_ts, asn``).
        api_usage: accepted API usage (``account_id, usage_date, active_hours_mask,
            prompt_signature``).
        settings: the ``behaviour_*`` keys.
        hash_key: secret key for the entity hashes.

    Returns:
        Distinct ``account_id, entity_type, entity_id`` rows (``entity_type = 'behaviour'``).
    """
    from pyspark.ml.feature import HashingTF, MinHashLSH

    require_columns(ip_events, "ip_events", ("account_id", "event_ts", "asn"))
    require_columns(
        api_usage,
        "api_usage",
        ("account_id", "usage_date", "active_hours_mask", "prompt_signature"),
    )
    cells = (
        ip_events.select(
            "account_id",
            F.concat_ws(
                "|",
                F.lit("h"),
                F.date_format("event_ts", "yyyy-MM-dd HH"),
                F.col("asn").cast("string"),
            ).alias("cell"),
        )
        .unionByName(
            api_usage.select(
                "account_id",
                F.concat_ws(
                    "|",
                    F.lit("d"),
                    F.col("usage_date").cast("string"),
                    F.col("active_hours_mask").cast("string"),
                ).alias("cell"),
            )
        )
        .unionByName(
            api_usage.select(
                "account_id", F.concat_ws("|", F.lit("p"), "prompt_signature").alias("cell")
            )
        )
        .where(F.col("cell").isNotNull())
        .distinct()
    )
    popular = (
        cells.groupBy("cell")
        .count()
        .where(F.col("count") > settings.behaviour_cell_max_accounts)
        .select("cell")
    )
    sets = (
        cells.join(F.broadcast(popular), "cell", "left_anti")
        .groupBy("account_id")
        .agg(F.collect_list("cell").alias("cells"))
        .where(F.size("cells") >= settings.behaviour_min_cells)
    )
    vectors = HashingTF(
        inputCol="cells", outputCol="features", numFeatures=1 << 20, binary=True
    ).transform(sets)
    n_hashes = settings.behaviour_bands * settings.behaviour_rows
    lsh = MinHashLSH(
        inputCol="features", outputCol="hashes", numHashTables=n_hashes, seed=settings.leiden_seed
    ).fit(vectors)
    hashes = lsh.transform(vectors).select(
        "account_id", F.posexplode("hashes").alias("position", "hash")
    )
    bands = (
        hashes.select(
            "account_id",
            F.floor(F.col("position") / settings.behaviour_rows).alias("band"),
            F.struct("position", vector_to_array(F.col("hash"))[0].alias("value")).alias("h"),
        )
        .groupBy("account_id", "band")
        .agg(F.sort_array(F.collect_list("h")).alias("h"))
        .select(
            "account_id",
            "band",
            F.concat_ws(",", F.col("h.value").cast("array<string>")).alias("bucket"),
        )
    )
    entity_id = F.substring(
        F.sha2(
            F.concat_ws(
                ":", F.lit(hash_key), F.lit("behaviour"), F.col("band").cast("string"), "bucket"
            ),
            256,
        ),
        1,
        16,
    )
    return bands.select(
        "account_id", F.lit("behaviour").alias("entity_type"), entity_id.alias("entity_id")
    ).distinct()


def entity_stats(entities: DataFrame, settings: GraphSettings, n_accounts: int) -> DataFrame:
    """Degree, IDF-like weight and hub flag for every entity.

    Args:
        entities: output of :func:`account_entities`.
        settings: degree caps per entity type.
        n_accounts: accounts in the graph (for the IDF weight).

    Returns:
        ``entity_type, entity_id, degree, weight, is_hub``.
    """
    require_columns(entities, "account_entities", ("account_id", "entity_type", "entity_id"))
    cap = F.lit(settings.entity_degree_cap)
    for entity_type, type_cap in settings.entity_degree_cap_by_type.items():
        cap = F.when(F.col("entity_type") == entity_type, type_cap).otherwise(cap)
    return (
        entities.groupBy("entity_type", "entity_id")
        .agg(F.count("*").alias("degree"))
        .withColumn("weight", F.log(F.lit(float(max(n_accounts, 2))) / F.col("degree")))
        .withColumn("is_hub", F.col("degree") > cap)
    )


def account_links(entities: DataFrame, stats: DataFrame) -> DataFrame:
    """Star edges through non-hub linking entities (no quadratic hub projection).

    Returns:
        Distinct undirected edges ``src < dst`` with the ``entity_type`` that made them.
    """
    linking = stats.where(
        (~F.col("is_hub")) & (F.col("degree") >= 2) & F.col("entity_type").isin(*LINK_ENTITY_TYPES)
    ).select("entity_type", "entity_id")
    members = entities.join(linking, ["entity_type", "entity_id"])
    anchors = members.groupBy("entity_type", "entity_id").agg(F.min("account_id").alias("anchor"))
    edges = members.join(anchors, ["entity_type", "entity_id"]).where(
        F.col("account_id") != F.col("anchor")
    )
    return (
        edges.select(
            F.least("anchor", "account_id").alias("src"),
            F.greatest("anchor", "account_id").alias("dst"),
            "entity_type",
        )
        .groupBy("src", "dst")
        .agg(F.min("entity_type").alias("entity_type"), F.count("*").alias("shared_entities"))
    )


def community_density(members: DataFrame, links: DataFrame, group: str) -> DataFrame:
    """Links with both ends inside a group over the group's account pairs.

    Args:
        members: ``account_id`` and the ``group`` column.
        links: undirected edges ``src, dst``.
        group: the grouping column (``community_id`` or ``component_id``).

    Returns:
        ``<group>, community_density`` for every group (0 for a single account).
    """
    require_columns(members, "members", ("account_id", group))
    require_columns(links, "account_links", ("src", "dst"))
    member = members.select("account_id", group)
    inside = (
        links.join(member.withColumnRenamed("account_id", "src"), "src")
        .join(member.select(F.col("account_id").alias("dst"), F.col(group).alias("_g")), "dst")
        .where(F.col(group) == F.col("_g"))
        .groupBy(group)
        .agg(F.count("*").alias("_links"))
    )
    size = F.col("_size").cast("double")
    pairs = size * (size - 1) / 2.0
    return (
        member.groupBy(group)
        .agg(F.count("*").alias("_size"))
        .join(inside, group, "left")
        .select(
            group,
            F.when(pairs > 0, F.coalesce(F.col("_links"), F.lit(0)) / pairs)
            .otherwise(0.0)
            .alias("community_density"),
        )
    )


def shared_entities(members: DataFrame, entities: DataFrame, group: str) -> DataFrame:
    """Entities that two or more members of a group share.

    Args:
        members: ``account_id`` and the ``group`` column.
        entities: ``account_id, entity_type, entity_id``.
        group: the grouping column (``farm_id``, ``community_id``).

    Returns:
        ``<group>, entity_type, entity_id, members`` with ``members >= 2``.
    """
    require_columns(members, "members", ("account_id", group))
    require_columns(entities, "account_entities", ("account_id", "entity_type", "entity_id"))
    return (
        members.select("account_id", group)
        .join(entities, "account_id")
        .distinct()
        .groupBy(group, "entity_type", "entity_id")
        .agg(F.count("*").alias("members"))
        .where(F.col("members") >= 2)
    )


def top_binding_entities(shared: DataFrame, group: str, top: int) -> DataFrame:
    """The ``top`` most shared entities per group as ``type:hash (n accounts)`` strings.

    Returns:
        ``<group>, binding_entities`` (array, most shared first, ties by type and hash).
    """
    by_size = Window.partitionBy(group).orderBy(F.desc("members"), "entity_type", "entity_id")
    label = F.format_string("%s:%s (%d accounts)", "entity_type", "entity_id", "members")
    return (
        shared.withColumn("_rank", F.row_number().over(by_size))
        .where(F.col("_rank") <= top)
        .groupBy(group)
        .agg(F.sort_array(F.collect_list(F.struct("_rank", label.alias("e")))).alias("_e"))
        .select(group, F.col("_e.e").alias("binding_entities"))
    )
