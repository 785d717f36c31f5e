"""Synthetic world: knobs for the legitimate population and for farm operators.

In: a scenario name, an account count and optional JSON overrides. Out: a frozen :class:`WorldSpec`
that :mod:`jobs.world.generate` turns into the five input tables and ground truth. Called by the
``farmwatch generate`` command, the tests and the benchmarks.

The legitimate population carries the confounders that cause false bans in real life (families
sharing a card or device, offices and universities behind one IP, mobile-carrier CGNAT, free email
providers, VPN users on the same residential proxies that farms rent, automated power users,
organic signup spikes). Each farm operator has a knob for every evasion tactic of the threat
model. The ``distillation-campaign`` scenario plants a campaign shaped like the one reported in
June 2026: about 25,000 accounts per 1,000,000, about 26 requests a day each, residential proxy
rotation, many email domains and cards, a shared schedule and templated prompts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OperatorSpec:
    """One farm operator and its evasion tactics (every field is a knob)."""

    operator: str
    accounts_per_million: int
    min_accounts: int = 20
    is_campaign: bool = False
    requests_per_day: float = 26.0  # under the per-account abuse threshold
    requests_jitter: float = 0.25
    accounts_per_card: float = 8.0  # cards reused across accounts
    virtual_card_share: float = 0.7
    n_bins: int = 3  # cards share a few BINs...
    n_postcodes: int = 4  # ...and billing postcodes
    accounts_per_device: float = 30.0  # reused device fingerprints
    device_randomised_share: float = 0.2  # lightly randomised fingerprints
    client_randomised_share: float = 0.2
    n_email_domains: int = 40  # many cheap domains
    free_email_share: float = 0.3  # the rest of the emails on gmail & co
    proxy_ips_per_day: float = 1.0  # residential proxy rotation
    signup_mode: str = "burst"  # burst | drip
    signup_spread_days: int = 21  # drip: signups spread over weeks
    n_signup_bursts: int = 6
    burst_minutes: int = 90
    schedule_start_hour: int = 1  # loosely synchronised schedule (UTC)
    schedule_hours: int = 9
    schedule_jitter: float = 0.3  # share of days shifted by one hour
    n_prompt_templates: int = 12  # templated prompts
    template_share: float = 0.85  # share of days on a template
    active_day_share: float = 0.9
    sleeper_share: float = 0.1  # quiet until activated near the end of the window
    sleeper_active_days: int = 3
    label_share: float = 0.4  # share of accounts labelled fraud before the run
    # Blending towards ordinary users (0 = the farm's own pattern, 1 = like an individual):
    # the share of account-days that follow an ordinary user's schedule, volume and prompts.
    schedule_blend: float = 0.0
    volume_blend: float = 0.0
    prompt_blend: float = 0.0
    # Share of sessions over IPv6: its proxies and servers give it a /64 each, and it picks new
    # low 64 bits for every session (the cheapest rotation there is).
    ipv6_share: float = 0.0


@dataclass(frozen=True)
class PopulationSpec:
    """Shares of the legitimate population (the rest are ordinary individuals)."""

    family_share: float = 0.06
    family_size: int = 3
    office_share: float = 0.05
    office_size: int = 60
    university_share: float = 0.03
    university_size: int = 600
    cgnat_share: float = 0.15
    cgnat_accounts_per_ip: int = 400
    vpn_share: float = 0.03
    power_user_share: float = 0.01
    spike_share: float = 0.02
    spike_minutes: int = 180
    free_email_share: float = 0.75
    paying_share: float = 0.6
    active_day_share: float = 0.12
    power_user_requests_per_day: float = 900.0
    individual_requests_per_day: float = 14.0
    n_prompt_shapes: int = 5000
    n_clients: int = 60
    label_share: float = 0.03  # verified customers labelled legitimate
    proxy_pool_per_million: int = 60_000  # residential IPs rented out as proxies
    # Share of sessions over IPv6 (dual-stack users; mobile IPv6 needs no CGNAT), and of the
    # IPv4 ones logged as IPv4-mapped IPv6 (``::ffff:198.51.100.7``). The IPv4-only scenarios
    # keep 0, so their tables are the ones measured before IPv6 existed, byte for byte.
    ipv6_share: float = 0.0
    ipv4_mapped_share: float = 0.0


@dataclass(frozen=True)
class WorldSpec:
    """Everything needed to generate one world deterministically."""

    scenario: str
    accounts: int
    seed: int
    end_date: str = "2026-06-05"
    window_days: int = 44
    history_days: int = 540
    malformed_share: float = 0.0005  # rows of ip_events / api_usage broken on purpose
    population: PopulationSpec = field(default_factory=PopulationSpec)
    operators: tuple[OperatorSpec, ...] = ()

    def operator_sizes(self) -> dict[str, int]:
        """Accounts per operator at this world size (campaign: 25,000 per million, capped)."""
        sizes = {}
        for op in self.operators:
            scaled = round(op.accounts_per_million * min(self.accounts, 1_000_000) / 1_000_000)
            if self.accounts > 1_000_000 and not op.is_campaign:
                scaled = round(op.accounts_per_million * self.accounts / 1_000_000)
            sizes[op.operator] = max(op.min_accounts, scaled)
        return sizes

    def to_json(self) -> str:
        """Serialise for the world's ``_world.json`` and MLflow."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


CAMPAIGN = OperatorSpec(
    operator="op_distill",
    accounts_per_million=25_000,
    min_accounts=60,
    is_campaign=True,
    requests_per_day=26.0,
    accounts_per_card=10.0,
    n_email_domains=120,
    free_email_share=0.35,
    proxy_ips_per_day=1.5,
    signup_mode="drip",
    signup_spread_days=40,
    n_prompt_templates=40,
    schedule_start_hour=13,
    schedule_hours=10,
    sleeper_share=0.1,
    label_share=0.02,
)

_DISTILLATION_OPERATORS = (
    CAMPAIGN,
    OperatorSpec(
        "op_alpha",
        8_000,
        signup_mode="burst",
        accounts_per_card=6.0,
        schedule_start_hour=2,
        n_prompt_templates=8,
    ),
    OperatorSpec(
        "op_bravo",
        2_500,
        signup_mode="drip",
        accounts_per_device=15.0,
        requests_per_day=40.0,
        schedule_start_hour=6,
        virtual_card_share=0.2,
    ),
    OperatorSpec(
        "op_charlie",
        600,
        signup_mode="burst",
        proxy_ips_per_day=2.0,
        schedule_start_hour=20,
        n_email_domains=8,
    ),
    OperatorSpec(
        "op_delta",
        60,
        min_accounts=12,
        signup_mode="burst",
        accounts_per_card=3.0,
        schedule_start_hour=9,
        n_prompt_templates=3,
    ),
)

_MIXED_OPERATORS = (
    OperatorSpec(
        "op_echo",
        12_000,
        signup_mode="drip",
        accounts_per_card=12.0,
        schedule_start_hour=16,
        n_prompt_templates=25,
        proxy_ips_per_day=1.2,
    ),
    OperatorSpec(
        "op_foxtrot",
        5_000,
        signup_mode="burst",
        accounts_per_device=50.0,
        schedule_start_hour=4,
        requests_per_day=20.0,
    ),
    OperatorSpec(
        "op_golf",
        1_500,
        signup_mode="drip",
        device_randomised_share=0.6,
        schedule_start_hour=11,
        free_email_share=0.6,
    ),
    OperatorSpec(
        "op_hotel",
        300,
        signup_mode="burst",
        accounts_per_card=4.0,
        schedule_start_hour=22,
        n_prompt_templates=5,
    ),
    OperatorSpec(
        "op_india",
        40,
        min_accounts=12,
        signup_mode="drip",
        schedule_start_hour=7,
        n_email_domains=4,
    ),
)

# The campaign after a detector exists (threat model, "How operators adapt"): one virtual card,
# one device, one client fingerprint and one fresh email domain per account. Only behaviour,
# payment BINs and the network infrastructure still tie its accounts together.
EVASIVE_CAMPAIGN = dataclasses.replace(
    CAMPAIGN,
    accounts_per_card=1.0,
    virtual_card_share=1.0,
    device_randomised_share=1.0,
    client_randomised_share=1.0,
    n_email_domains=10_000_000,
    free_email_share=0.0,
)
# ...and one that also blends its schedule, volumes and prompts towards ordinary users, at the
# price of slower extraction.
BLENDED_CAMPAIGN = dataclasses.replace(
    EVASIVE_CAMPAIGN,
    schedule_blend=0.8,
    volume_blend=0.8,
    prompt_blend=0.8,
    active_day_share=0.5,
)

# The campaign run a second time over IPv6 by the same operator (the IPv4 one keeps its
# residential IPv4 proxies): the same knobs, each session from a fresh address of a /64.
IPV6_CAMPAIGN = dataclasses.replace(CAMPAIGN, operator="op_distill6", ipv6_share=1.0)
DUAL_STACK_POPULATION = {"ipv6_share": 0.45, "ipv4_mapped_share": 0.05}

SCENARIOS: dict[str, tuple[OperatorSpec, ...]] = {
    "distillation-campaign": _DISTILLATION_OPERATORS,
    "dual-stack-campaign": (CAMPAIGN, IPV6_CAMPAIGN, *_DISTILLATION_OPERATORS[1:]),
    "evasive-campaign": (EVASIVE_CAMPAIGN, *_DISTILLATION_OPERATORS[1:]),
    "blended-campaign": (BLENDED_CAMPAIGN, *_DISTILLATION_OPERATORS[1:]),
    "mixed-operators": _MIXED_OPERATORS,
    "clean": (),
}


def _merge(obj: Any, overrides: dict[str, Any]) -> Any:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(obj)}
    if unknown:
        raise ValueError(f"unknown world knob(s) for {type(obj).__name__}: {sorted(unknown)}")
    return dataclasses.replace(obj, **overrides)


def build_spec(
    scenario: str,
    accounts: int,
    seed: int,
    overrides: dict[str, Any] | None = None,
) -> WorldSpec:
    """Build the spec for a named scenario, optionally overriding knobs.

    Args:
        scenario: a name of :data:`SCENARIOS` (``distillation-campaign``,
            ``dual-stack-campaign``, ``evasive-campaign``, ``blended-campaign``,
            ``mixed-operators``, ``clean``).
        accounts: total accounts in the world.
        seed: generator seed; same seed and spec give the same bytes.
        overrides: ``{"end_date": ..., "population": {...}, "operators": {"op_x": {...}}}``.

    Returns:
        The world spec.

    Raises:
        ValueError: unknown scenario or knob, or a world too small for its farms.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    if accounts < 1_000:
        raise ValueError(f"a world needs at least 1,000 accounts, got {accounts}")
    overrides = dict(overrides or {})
    base_population = DUAL_STACK_POPULATION if scenario == "dual-stack-campaign" else {}
    population = _merge(PopulationSpec(), {**base_population, **overrides.pop("population", {})})
    op_overrides = overrides.pop("operators", {})
    operators = []
    for op in SCENARIOS[scenario]:
        operators.append(_merge(op, op_overrides.pop(op.operator, {})))
    if op_overrides:
        raise ValueError(f"overrides for operators not in {scenario}: {sorted(op_overrides)}")
    spec = WorldSpec(
        scenario=scenario,
        accounts=accounts,
        seed=seed,
        population=population,
        operators=tuple(operators),
    )
    spec = _merge(spec, overrides)
    farm_total = sum(spec.operator_sizes().values())
    if farm_total > 0.2 * accounts:
        raise ValueError(f"farms would be {farm_total} of {accounts} accounts; grow the world")
    return spec


def load_overrides(path: str | Path | None) -> dict[str, Any]:
    """Read a JSON file of knob overrides (see :func:`build_spec`)."""
    if path is None:
        return {}
    return json.loads(Path(path).read_text())
