"""The entities accounts share: cards, devices, IPs, emails, and softer keys and behaviour.

In: the accepted ``signups``, ``payments``, ``ip_events`` and ``api_usage`` tables and the
entity hashing key. Out: ``account_entities`` (account_id, entity_type, entity_id) with entity
ids as keyed hashes, so no raw email, IP or card data travels past the graph stage, and the
MinHash ``behaviour`` buckets of synchronised accounts. Hard keys (:data:`LINK_ENTITY_TYPES`)
link accounts (:mod:`jobs.graph.links`); soft keys are features and community evidence only.
Called by the graph stage (:mod:`jobs.graph.stage`) and the tests.
"""

from __future__ import annotations

from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.addresses import network_keys, subscriber_ip
from jobs.core.columns import LINK_ENTITY_TYPES, SOFT_ENTITY_TYPES
from jobs.core.config import GraphSettings
from jobs.core.validation import require_columns

ENTITY_TYPES = LINK_ENTITY_TYPES + SOFT_ENTITY_TYPES


# Independent kinds of evidence: entities of one kind come from the same observation (an IP
# event gives both ``ip`` and ``ip24_asn_day``), so sharing two of them is one piece of evidence.
# ``ip`` is an IPv4 address or an IPv6 /64 (one subscriber: :mod:`jobs.core.addresses`);
# ``ip24_asn_day`` is a network strangers share, with its ASN and day: an IPv4 /24, or an IPv6
# /64 and its /48. The name predates IPv6 and stays: it is part of every published network hash.
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
        pairs(signups, "ip", subscriber_ip(F.col("signup_ip"))),
        pairs(ip_events, "ip", subscriber_ip(F.col("ip"))),
        pairs(signups, "email", normalise_email(F.col("email"))),
        pairs(
            payments, "bin_postcode", F.concat_ws("|", F.col("card_bin"), F.col("billing_postcode"))
        ),
        pairs(
            ip_events.select("*", F.explode(network_keys(F.col("ip"))).alias("network")),
            "ip24_asn_day",
            F.concat_ws(
                "|", "network", F.col("asn").cast("string"), F.to_date("event_ts").cast("string")
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
    # distinct before hashing: SHA-256 runs once per membership, not once per event row (an
    # account's IP events repeat its addresses). One shuffle either way; distinct values give
    # distinct ids (a 64-bit id shared by two values of one account is a 2**-64 event)
    return union.distinct().select("account_id", "entity_type", entity_id.alias("entity_id"))


def behaviour_entities(
    ip_events: DataFrame, api_usage: DataFrame, settings: GraphSettings, hash_key: str
) -> DataFrame:
    """MinHash LSH band buckets of each account's activity cells, as ``behaviour`` entities.

    In the spirit of SynchroTrap and CopyCatch: an account's activity is the set of its
    (hour, ASN) cells from IP events, its (day, active-hours profile) cells and its
    prompt-structure signatures. Cells that more than ``behaviour_cell_max_accounts`` accounts
    share (peak hour on a big ISP, office hours) say nothing and are dropped, and accounts left
    with fewer than ``behaviour_min_cells`` cells get no bucket. Each set is hashed by
    ``behaviour_bands * behaviour_rows`` MinHash functions, those of Spark ML's ``MinHashLSH``
    over ``HashingTF`` indices; ``behaviour_rows`` consecutive hashes form one band, and
    accounts with the same band value share a ``behaviour`` entity. Two accounts with Jaccard
    similarity ``j`` share at least one band with probability ``1 - (1 - j**rows)**bands``. A
    bucket is an entity like a card or a device, so a synchronised group of 25,000 accounts
    costs 25,000 memberships, not the 312 million pairs a similarity self-join would emit.

    A set's MinHash is the minimum of its elements' hashes, so each distinct cell is hashed
    once (``MinHashLSH`` over a one-cell set) and an account's value is a native ``min`` over
    its cells: the same buckets as hashing every account's set, without a vector per account.

    Args:
        ip_events: accepted IP events (``account_id, event_ts, asn``).
        api_usage: accepted API usage (``account_id, usage_date, active_hours_mask,
            prompt_signature``).
        settings: the ``behaviour_*`` keys.
        hash_key: secret key for the entity hashes.

    Returns:
        Distinct ``account_id, entity_type, entity_id`` rows (``entity_type = 'behaviour'``).
    """
    require_columns(ip_events, "ip_events", ("account_id", "event_ts", "asn"))
    require_columns(
        api_usage,
        "api_usage",
        ("account_id", "usage_date", "active_hours_mask", "prompt_signature"),
    )
    values = account_minhashes(activity_cells(ip_events, api_usage), settings)
    # a band is ``behaviour_rows`` consecutive values, sliced from the account's own row (no
    # regrouping of every account's hashes by band)
    rows = settings.behaviour_rows
    bands = values.select(
        "account_id",
        F.explode(F.sequence(F.lit(0), F.lit(settings.behaviour_bands - 1))).alias("band"),
        "_values",
    ).select(
        "account_id",
        "band",
        F.concat_ws(",", F.slice("_values", F.col("band") * rows + 1, F.lit(rows))).alias("bucket"),
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
    # one row per account and band, and the band is in the hash: distinct already
    return bands.select(
        "account_id", F.lit("behaviour").alias("entity_type"), entity_id.alias("entity_id")
    )


def account_minhashes(cells: DataFrame, settings: GraphSettings) -> DataFrame:
    """Each account's MinHash values over its activity cells, as Spark ML's ``MinHashLSH``.

    Args:
        cells: ``account_id, cell`` rows (:func:`activity_cells`), duplicates allowed.
        settings: the ``behaviour_*`` keys.

    Returns:
        ``account_id, _values``: the ``behaviour_bands * behaviour_rows`` hash values as text,
        for the accounts with at least ``behaviour_min_cells`` cells that are not popular.
    """
    from pyspark.ml.feature import HashingTF, MinHashLSH

    # one group per cell: the accounts that have it (one shuffle, deduplicated map-side), the
    # popular cells dropped by their count before anything is hashed
    by_cell = (
        cells.groupBy("cell")
        .agg(F.collect_set("account_id").alias("accounts"))
        .where(F.size("accounts") <= settings.behaviour_cell_max_accounts)
        .select("accounts", F.array("cell").alias("cells"))
    )
    vectors = HashingTF(
        inputCol="cells", outputCol="features", numFeatures=1 << 20, binary=True
    ).transform(by_cell)
    n_hashes = settings.behaviour_bands * settings.behaviour_rows
    lsh = MinHashLSH(
        inputCol="features",
        outputCol="hashes",
        numHashTables=n_hashes,
        seed=settings.behaviour_seed,
    ).fit(vectors)
    # the vectors become numbers once per cell, before the explode: in one select with it,
    # Spark would convert them again for every account that has the cell
    memberships = (
        lsh.transform(vectors)
        .select("accounts", F.transform("hashes", lambda h: vector_to_array(h)[0]).alias("_h"))
        .select(F.explode("accounts").alias("account_id"), F.col("_h").alias("_hashes"))
    )
    # a set's MinHash is the least of its cells' hashes: a native min per hash function
    return (
        memberships.groupBy("account_id")
        .agg(
            F.count("*").alias("_cells"),
            *(F.min(F.col("_hashes")[i]).alias(f"_h{i}") for i in range(n_hashes)),
        )
        .where(F.col("_cells") >= settings.behaviour_min_cells)
        .select(
            "account_id",
            F.array(*(f"_h{i}" for i in range(n_hashes))).cast("array<string>").alias("_values"),
        )
    )


def activity_cells(ip_events: DataFrame, api_usage: DataFrame) -> DataFrame:
    """Each account's activity cells, one row per event (duplicates left to the grouping).

    Cells: (hour, ASN) from IP events, (day, active-hours profile) and prompt signatures from
    API usage.

    Returns:
        ``account_id, cell`` (string).
    """
    return (
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
    )
