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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

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
)
ENTITY_TYPES = LINK_ENTITY_TYPES + SOFT_ENTITY_TYPES

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
