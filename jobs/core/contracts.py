"""Data contracts of the five input tables (and the synthetic ground truth).

In: nothing. Out: one :class:`TableContract` per table: columns with Spark types, meaning and an
example, which columns are required (never null; a table without them is refused) and which are
optional (filled with null when the table lacks them), the key columns that must not be null,
the event-time column used for the look-back window and impossible-timestamp checks, the natural
key used to find duplicates, and allowed values; and :data:`ACCEPTED_ENCODINGS`, how each
contract type may be stored. Read by the generator (to write), by ingest (to enforce) and by the
generated reference page (:mod:`jobs.core.docs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T


@dataclass(frozen=True)
class Column:
    """One contract column."""

    name: str
    dtype: T.DataType
    meaning: str
    example: str
    nullable: bool = True

    @property
    def required(self) -> bool:
        """A required column must be in the table; an optional one may be absent (all null)."""
        return not self.nullable


@dataclass(frozen=True)
class Encoding:
    """How values of one contract type may be stored in an input table."""

    contract_type: str
    accepted: str
    refused: str


@dataclass(frozen=True)
class TableContract:
    """The promise an input table makes to farmwatch."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key_columns: tuple[str, ...]
    time_column: str | None
    natural_key: tuple[str, ...]
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    non_negative: tuple[str, ...] = ()
    ip_columns: tuple[str, ...] = ()  # IPv4 or IPv6 text, normalised by ingest
    windowed: bool = True

    @property
    def schema(self) -> T.StructType:
        """Spark schema of the accepted table."""
        return T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        """Column names in contract order."""
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        """Columns the table must have."""
        return [c.name for c in self.columns if c.required]

    @property
    def optional_columns(self) -> list[str]:
        """Columns the table may lack (ingest fills them with null and names them)."""
        return [c.name for c in self.columns if not c.required]


ACCEPTED_ENCODINGS: tuple[Encoding, ...] = (
    Encoding(
        "timestamp",
        "Parquet timestamps in milliseconds, microseconds or nanoseconds (as "
        "`pandas.DataFrame.to_parquet` writes by default; kept to the microsecond), with or "
        "without a time zone, and INT96; dates (midnight); ISO-8601 strings "
        "(`2026-06-01T10:00:00Z`, `2026-06-01 10:00:00.25+02:00`, `2026-06-01`). A time "
        "without a zone is UTC.",
        "numbers (seconds, milliseconds or nanoseconds since 1970 cannot be told apart) and "
        "strings that are not ISO-8601",
    ),
    Encoding(
        "date",
        "Parquet dates; timestamps and ISO-8601 timestamp strings (their UTC day); ISO-8601 "
        "date strings (`2026-06-01`).",
        "numbers and strings that are not ISO-8601",
    ),
    Encoding(
        "int",
        "integers of any width, signed or unsigned (int8 to int64, uint8 to uint64); floats "
        "and decimals holding a whole number (`7.0`: pandas writes an integer column with gaps "
        "as float64); strings of digits.",
        "fractions (`7.5`), NaN and infinities, values out of the type's range, booleans, "
        "other strings",
    ),
    Encoding(
        "bigint",
        "as `int`, up to 64 bits.",
        "as `int`",
    ),
    Encoding(
        "double",
        "any integer, float or decimal; strings holding a number.",
        "booleans and other strings (`bad_type`); NaN and infinities (`bad_value`)",
    ),
    Encoding(
        "string",
        "strings (any length, any characters); numbers, booleans, dates and timestamps as "
        "their text; binary as UTF-8.",
        "arrays, maps and structs",
    ),
)


SIGNUPS = TableContract(
    name="signups",
    description="One row per account at creation.",
    columns=(
        Column("account_id", T.StringType(), "Stable account identifier", "a000123456", False),
        Column(
            "signup_ts",
            T.TimestampType(),
            "Account creation time (UTC)",
            "2026-04-22 09:14:03",
            False,
        ),
        Column(
            "email",
            T.StringType(),
            "Email address at signup (raw PII, never published)",
            "jane.doe84@gmail.com",
        ),
        Column(
            "signup_ip",
            T.StringType(),
            "IPv4 or IPv6 address at signup (raw PII, never published)",
            "2001:db8:4a1::7",
        ),
        Column("signup_asn", T.IntegerType(), "Autonomous system of the signup IP", "7922"),
        Column("device_fingerprint", T.StringType(), "Device fingerprint hash", "d9f2c1a07be34410"),
        Column(
            "client_fingerprint",
            T.StringType(),
            "Client/TLS fingerprint (JA3-like) hash",
            "c41ab09e",
        ),
        Column("country", T.StringType(), "ISO 3166-1 alpha-2 country of signup", "US"),
    ),
    key_columns=("account_id", "signup_ts"),
    time_column="signup_ts",
    natural_key=("account_id",),
    ip_columns=("signup_ip",),
    windowed=False,
)

PAYMENTS = TableContract(
    name="payments",
    description="One row per payment attempt.",
    columns=(
        Column("account_id", T.StringType(), "Paying account", "a000123456", False),
        Column("payment_ts", T.TimestampType(), "Attempt time (UTC)", "2026-04-23 10:00:00", False),
        Column(
            "instrument_fingerprint",
            T.StringType(),
            "Processor's fingerprint of the card (same card, same value; raw card data never "
            "enters farmwatch)",
            "pi_5f0c2a9d",
            False,
        ),
        Column("card_bin", T.StringType(), "First six digits of the card (issuer BIN)", "414720"),
        Column("card_type", T.StringType(), "credit, debit, prepaid or virtual", "virtual"),
        Column("billing_postcode", T.StringType(), "Billing postcode", "94107"),
        Column("billing_country", T.StringType(), "Billing country ISO2", "US"),
        Column("amount", T.DoubleType(), "Amount in USD", "20.0"),
        Column(
            "outcome",
            T.StringType(),
            "approved, declined, chargeback or refunded",
            "approved",
            False,
        ),
    ),
    key_columns=("account_id", "payment_ts", "instrument_fingerprint", "outcome"),
    time_column="payment_ts",
    natural_key=("account_id", "payment_ts", "instrument_fingerprint"),
    allowed_values={
        "outcome": ("approved", "declined", "chargeback", "refunded"),
        "card_type": ("credit", "debit", "prepaid", "virtual"),
    },
    non_negative=("amount",),
)

IP_EVENTS = TableContract(
    name="ip_events",
    description="One row per login / API session start, with the network it came from.",
    columns=(
        Column("account_id", T.StringType(), "Account", "a000123456", False),
        Column("event_ts", T.TimestampType(), "Event time (UTC)", "2026-05-01 14:02:11", False),
        Column(
            "ip",
            T.StringType(),
            "IPv4 or IPv6 address (raw PII, never published)",
            "198.51.100.23",
            False,
        ),
        Column("asn", T.IntegerType(), "Autonomous system number", "21928"),
        Column(
            "asn_type",
            T.StringType(),
            "ASN class from the IP-intelligence feed: residential, mobile, business, "
            "education, hosting, vpn",
            "residential",
        ),
        Column("event_type", T.StringType(), "login, api_session or payment", "api_session", False),
    ),
    key_columns=("account_id", "event_ts", "ip", "event_type"),
    time_column="event_ts",
    natural_key=("account_id", "event_ts", "ip", "event_type"),
    allowed_values={
        "event_type": ("login", "api_session", "payment"),
        "asn_type": ("residential", "mobile", "business", "education", "hosting", "vpn"),
    },
    ip_columns=("ip",),
)

API_USAGE = TableContract(
    name="api_usage",
    description="One row per account and active day: the API-usage rollup.",
    columns=(
        Column("account_id", T.StringType(), "Account", "a000123456", False),
        Column("usage_date", T.DateType(), "UTC day", "2026-05-01", False),
        Column("requests", T.LongType(), "API requests that day", "26", False),
        Column("tokens", T.LongType(), "Tokens consumed that day", "48210"),
        Column(
            "prompt_signature",
            T.StringType(),
            "Hash of the dominant prompt structure that day (template shape, not content)",
            "ps_8c1d2e",
            False,
        ),
        Column(
            "active_hours_mask",
            T.IntegerType(),
            "24-bit mask of UTC hours with activity (bit h set = active in hour h)",
            "16128",
        ),
        Column(
            "client_fingerprint", T.StringType(), "Client/SDK fingerprint used that day", "c41ab09e"
        ),
    ),
    key_columns=("account_id", "usage_date", "requests", "prompt_signature"),
    time_column="usage_date",
    natural_key=("account_id", "usage_date"),
    non_negative=("requests", "tokens"),
)

LABELS = TableContract(
    name="labels",
    description="Known outcomes: confirmed fraud (1) or confirmed legitimate (0).",
    columns=(
        Column("account_id", T.StringType(), "Account", "a000123456", False),
        Column("label", T.IntegerType(), "1 = fraud (farm account), 0 = legitimate", "1", False),
        Column(
            "labelled_at",
            T.TimestampType(),
            "When the label became known (UTC)",
            "2026-05-20 00:00:00",
            False,
        ),
        Column(
            "source",
            T.StringType(),
            "chargeback, trust_review, abuse_report or verified_customer",
            "trust_review",
        ),
    ),
    key_columns=("account_id", "label", "labelled_at"),
    time_column="labelled_at",
    natural_key=("account_id",),
    allowed_values={
        "source": ("chargeback", "trust_review", "abuse_report", "verified_customer"),
    },
    windowed=False,
)

GROUND_TRUTH = TableContract(
    name="ground_truth",
    description="Synthetic worlds only: who is really a farm account (for evaluation, never "
    "for training).",
    columns=(
        Column("account_id", T.StringType(), "Account", "a000123456", False),
        Column("is_farm", T.BooleanType(), "True for farm accounts", "true", False),
        Column("operator", T.StringType(), "Farm operator id (null for legitimate)", "op_distill"),
        Column("farm_id", T.StringType(), "Planted farm id (null for legitimate)", "farm_00"),
        Column(
            "segment",
            T.StringType(),
            "Population segment: individual, family, office, university, cgnat, vpn, "
            "power_user, spike, farm",
            "cgnat",
            False,
        ),
        Column(
            "is_campaign", T.BooleanType(), "True for the distillation campaign", "false", False
        ),
        Column(
            "is_sleeper",
            T.BooleanType(),
            "Farm account that stays quiet until activation",
            "false",
            False,
        ),
    ),
    key_columns=("account_id",),
    time_column=None,
    natural_key=("account_id",),
    windowed=False,
)

INPUT_TABLES: tuple[TableContract, ...] = (SIGNUPS, PAYMENTS, IP_EVENTS, API_USAGE, LABELS)
CONTRACTS: dict[str, TableContract] = {c.name: c for c in (*INPUT_TABLES, GROUND_TRUTH)}
