"""Column names that cross stage boundaries, named once (as graphframes names ``ID``, ``SRC``).

In: nothing. Out: constants. Called by the stages that write or join on these columns.
"""

from __future__ import annotations

ACCOUNT_ID = "account_id"
COMPONENT_ID = "component_id"  # connected component: its smallest account id
COMMUNITY_ID = "community_id"  # community after refinement: its smallest account id
FARM_ID = "farm_id"  # a community of graph.min_farm_size or more accounts: a farm candidate
ENTITY_TYPE = "entity_type"
ENTITY_ID = "entity_id"  # a keyed hash, never the raw value
SCORE = "score"  # the combined model's score
ACCOUNT_SCORE = "account_score"  # the account model's score: the account's own evidence
ACTION = "action"  # ban | review | watch
REASONS = "reasons"

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
