"""Who the synthetic accounts are: networks, signups, emails, devices, clients, payments.

In: the account rows of :meth:`jobs.world.generate.WorldGenerator.accounts` (segment, group,
household, operator knobs). Out: the ``signups`` and ``payments`` tables. A mixin of
:class:`jobs.world.generate.WorldGenerator`, which holds the spec, the draws and the segment
ranges these methods read.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.world.draws import (
    EDU_ASN,
    FIRST,
    FREE_DOMAINS,
    HOSTING_ASNS,
    LAST,
    MOBILE_ASNS,
    OFFICE_ASN,
    RESIDENTIAL_ASNS,
    VPN_ASN,
    ip_string,
    ipv6_string,
    pick,
)


class IdentityTables:
    """Signups and payments of the world (needs ``spec``, ``draw``, ranges and pools)."""

    # -------------------------------------------------------------- networks
    def _network(self, kind: Column, key: str, salt: str) -> tuple[Column, Column, Column]:
        """IPv4 int, ASN and ASN class for a network kind, keyed on an account row."""
        d = self.draw
        household = F.col("household")
        indiv_lo, indiv_hi = self.segment_ranges["individual"]
        proxy_k = F.floor(d.u(f"proxy{salt}", "idx", key) * self.proxy_pool)
        proxy_household = indiv_lo + F.pmod(proxy_k * 7919, F.lit(indiv_hi - indiv_lo))

        def residential(hh: Column) -> tuple[Column, Column]:
            asn_i = F.pmod(d.hash("res_asn", hh), len(RESIDENTIAL_ASNS))
            ip = 0x18000000 + asn_i * (1 << 20) + F.pmod(d.hash("res_ip", hh), 1 << 20)
            return ip, pick(asn_i.cast("double") / len(RESIDENTIAL_ASNS), RESIDENTIAL_ASNS)

        home_ip, home_asn = residential(household)
        proxy_ip, proxy_asn = residential(proxy_household)
        carrier = F.pmod(d.hash("carrier", "idx"), 3)
        mobile_ip = (
            0xAC380000
            + carrier * (1 << 16)
            + F.pmod(d.hash(f"mob{salt}", "idx", key), self.mobile_pool)
        )
        mobile_asn = pick(carrier.cast("double") / 3, MOBILE_ASNS)
        office_ip = (
            0x40000000
            + F.coalesce(F.col("grp"), F.lit(0)) * 8
            + F.pmod(d.hash(f"off{salt}", "idx", key), 2)
        )
        uni_ip = (
            0x80000000
            + F.coalesce(F.col("grp"), F.lit(0)) * 16
            + F.pmod(d.hash(f"uni{salt}", "idx", key), 4)
        )
        vpn_ip = 0xB9000000 + F.pmod(d.hash(f"vpn{salt}", "idx", key), 2000)
        host_i = F.pmod(d.hash("host_asn", "idx"), len(HOSTING_ASNS))
        hosting_ip = (
            0x03000000
            + host_i * (1 << 20)
            + F.pmod(
                d.hash("host_ip", "idx", F.floor(d.u(f"hostk{salt}", "idx", key) * 3)), 1 << 20
            )
        )
        hosting_asn = pick(host_i.cast("double") / len(HOSTING_ASNS), HOSTING_ASNS)
        table = {
            "home": (home_ip, home_asn, "residential"),
            "proxy": (proxy_ip, proxy_asn, "residential"),
            "mobile": (mobile_ip, mobile_asn, "mobile"),
            "office": (office_ip, F.lit(OFFICE_ASN), "business"),
            "university": (uni_ip, F.lit(EDU_ASN), "education"),
            "vpn": (vpn_ip, F.lit(VPN_ASN), "vpn"),
            "hosting": (hosting_ip, hosting_asn, "hosting"),
        }
        ip, asn, asn_type = F.lit(None).cast("long"), F.lit(None).cast("int"), F.lit(None)
        for name, (k_ip, k_asn, k_type) in table.items():
            ip = F.when(kind == name, k_ip).otherwise(ip)
            asn = F.when(kind == name, k_asn).otherwise(asn)
            asn_type = F.when(kind == name, F.lit(k_type)).otherwise(asn_type)
        ipv4 = ip_string(ip.cast("long"))
        if not self._any_ipv6():
            return ipv4, asn.cast("int"), asn_type
        v6 = self._ipv6_address(kind, key, salt, proxy_household, host_i, carrier)
        return self._address_text(ipv4, v6, key, salt), asn.cast("int"), asn_type

    def _any_ipv6(self) -> bool:
        pop = self.spec.population
        ops = self.spec.operators
        return pop.ipv6_share > 0 or pop.ipv4_mapped_share > 0 or any(o.ipv6_share for o in ops)

    def _address_text(self, ipv4: Column, ipv6: Column, key: str, salt: str) -> Column:
        """What a session's log line shows: IPv6 for a share, some IPv4 as IPv4-mapped IPv6."""
        d, pop = self.draw, self.spec.population
        share = F.when(F.col("segment") == "farm", F.coalesce(F.col("ipv6_share"), F.lit(0.0)))
        share = share.otherwise(pop.ipv6_share)
        mapped = d.u(f"v4m{salt}", "idx", key) < pop.ipv4_mapped_share
        return (
            F.when(d.u(f"v6{salt}", "idx", key) < share, ipv6)
            .when(mapped, F.concat(F.lit("::ffff:"), ipv4))
            .otherwise(ipv4)
        )

    def _ipv6_address(
        self, kind: Column, key: str, salt: str, proxy_hh: Column, host_i: Column, carrier: Column
    ) -> Column:
        """The IPv6 address of a session on a network kind (see :mod:`jobs.world.spec`).

        A household, office, university, VPN exit and rented server each hold a /64; mobile
        sessions get a fresh /64 from a few carrier /48s shared by hundreds (IPv6 needs no
        CGNAT). Privacy addresses and proxies pick new low 64 bits per session, so a farm on
        residential proxies or its own servers rotates through each /64 it reaches.
        """
        d = self.draw

        def g(name: str, *cols: Column | str) -> Column:
            return d.hash(f"{name}{salt}", *cols)

        zero = F.lit(0)
        server = F.floor(d.u(f"hostk{salt}", "idx", key) * 3)
        household, grp = F.col("household"), F.coalesce(F.col("grp"), zero)
        prefixes = {  # the /64 of each kind, four groups
            "home": [F.lit(0x2A02), d.hash("res6a", household), d.hash("res6b", household), zero],
            "proxy": [F.lit(0x2A02), d.hash("res6a", proxy_hh), d.hash("res6b", proxy_hh), zero],
            "mobile": [0x2600 + carrier, g("mob6", "idx", key) % self.mobile_pool]
            + [g("mob6b", "idx", key), g("mob6c", "idx", key)],
            "office": [F.lit(0x2620), grp, zero, zero],
            "university": [F.lit(0x2607), grp, g("uni6", "idx", key) % 4, zero],
            "vpn": [F.lit(0x2A0E), F.lit(0x97), g("vpn", "idx", key) % 2000, zero],
            "hosting": [0x2A01 + host_i, d.hash("host6a", "idx", server)]
            + [d.hash("host6b", "idx", server), zero],
        }
        prefix = F.lit(None).cast("string")
        for name, groups in prefixes.items():
            prefix = F.when(kind == name, ipv6_string(groups)).otherwise(prefix)
        fresh = ipv6_string([g(f"iid{k}", "idx", key) for k in range(4)])  # per session
        stable = ipv6_string([d.hash(f"iid{k}", "idx") for k in range(4)])  # per account
        rotating = kind.isin("home", "proxy", "mobile") | (
            (kind == "hosting") & (F.col("segment") == "farm")
        )
        interface = F.when(rotating, fresh).when(kind == "vpn", F.lit("0:0:0:1")).otherwise(stable)
        return F.concat(prefix, F.lit(":"), interface)

    def _network_kind(self, u: Column) -> Column:
        seg = F.col("segment")
        mixes = {
            "farm": (("proxy", "hosting"), (0.95, 0.05)),
            "family": (("home", "mobile"), (0.9, 0.1)),
            "office": (("office", "home"), (0.75, 0.25)),
            "university": (("university", "mobile"), (0.85, 0.15)),
            "cgnat": (("mobile", "home"), (0.95, 0.05)),
            "vpn": (("vpn", "proxy", "home"), (0.5, 0.4, 0.1)),
            "power_user": (("hosting", "home"), (0.7, 0.3)),
        }
        kind = pick(u, ("home", "mobile"), (0.85, 0.15))
        for name, (kinds, weights) in mixes.items():
            kind = F.when(seg == name, pick(u, kinds, weights)).otherwise(kind)
        return kind

    # ----------------------------------------------------------------- tables
    def _signup_seconds(self) -> Column:
        """Signup time in epoch seconds, as a pure function of the account row."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        end_s = int(self.end.timestamp())
        ws_s = int(self.window_start.timestamp())
        day = 86400
        seg = F.col("segment")
        legit_ts = end_s - d.u("signup", "idx") * spec.history_days * day
        uni_ts = (
            end_s
            - d.u("uni_term", "grp") * spec.history_days * day
            + d.u("signup", "idx") * 7 * day
        )
        spike_ts = (end_s - 30 * day + 15 * 3600) + d.u("signup", "idx") * pop.spike_minutes * 60
        burst = F.floor(d.u("burst", "idx") * F.col("n_signup_bursts"))
        burst_start = ws_s - 20 * day + d.u("burst_start", "operator", burst) * 30 * day
        farm_burst_ts = burst_start + d.u("signup", "idx") * F.col("burst_minutes") * 60
        farm_drip_ts = ws_s - 7 * day + d.u("signup", "idx") * F.col("signup_spread_days") * day
        sleeper_ts = ws_s - 60 * day + d.u("signup", "idx") * 30 * day
        return F.floor(
            F.least(
                F.lit(end_s - 1),
                F.when(F.col("is_sleeper"), sleeper_ts)
                .when((seg == "farm") & (F.col("signup_mode") == "burst"), farm_burst_ts)
                .when(seg == "farm", farm_drip_ts)
                .when(seg == "university", uni_ts)
                .when(seg == "spike", spike_ts)
                .otherwise(legit_ts),
            )
        )

    def _signup_day(self) -> Column:
        """Window day index of the signup (negative if before the window); mirrors signups."""
        window_start_s = int(self.window_start.timestamp())
        return F.floor((self._signup_seconds() - window_start_s) / 86400).cast("int")

    def signups(self, accounts: DataFrame) -> DataFrame:
        """The ``signups`` table."""
        d = self.draw
        signup_s = self._signup_seconds()
        accounts = accounts.withColumn("net_kind", self._network_kind(d.u("signup_net", "idx")))
        ip, asn, _ = self._network(F.col("net_kind"), "idx", "s")
        return accounts.select(
            "account_id",
            F.timestamp_seconds(F.floor(signup_s)).alias("signup_ts"),
            self._email().alias("email"),
            ip.alias("signup_ip"),
            asn.alias("signup_asn"),
            self._device().alias("device_fingerprint"),
            self._client(F.lit(0)).alias("client_fingerprint"),
            "country",
        )

    def _email(self) -> Column:
        d, pop = self.draw, self.spec.population
        first = pick(d.u("first", "idx"), FIRST)
        last = pick(d.u("last", "idx"), LAST)
        digits = F.pmod(F.col("acct_num"), 1_000_000).cast("string")
        style = d.u("email_style", "idx")
        legit_local = (
            F.when(style < 0.4, F.concat(first, F.lit("."), last, digits))
            .when(style < 0.7, F.concat(first, last, F.substring(digits, 1, 4)))
            .otherwise(F.concat(F.substring(first, 1, 3), F.lit("_"), last, F.lit("_"), digits))
        )
        free = pick(
            d.u("free_dom", "idx"), [x[0] for x in FREE_DOMAINS], [x[1] for x in FREE_DOMAINS]
        )
        seg = F.col("segment")
        legit_domain = (
            F.when(seg == "office", F.concat(F.lit("corp"), F.col("grp"), F.lit(".com")))
            .when(seg == "university", F.concat(F.lit("uni"), F.col("grp"), F.lit(".edu")))
            .when(d.u("own_dom", "idx") < pop.free_email_share, free)
            .otherwise(F.concat(last, F.pmod(d.hash("dom", "idx"), 100000), F.lit(".net")))
        )
        farm_domain_k = F.floor(d.u("farm_dom", "idx") * F.col("n_email_domains"))
        farm_domain = F.when(d.u("farm_free", "idx") < F.col("free_email_share"), free).otherwise(
            F.concat(
                F.lower(F.hex(F.pmod(d.hash("fdom", "operator", farm_domain_k), 1 << 24))),
                pick(d.u("tld", "operator", farm_domain_k), [".xyz", ".site", ".online", ".top"]),
            )
        )
        farm_local = F.concat(
            first, last, F.lpad(F.pmod(d.hash("fd", "idx"), 10000).cast("string"), 4, "0")
        )
        return F.when(seg == "farm", F.concat(farm_local, F.lit("@"), farm_domain)).otherwise(
            F.concat(legit_local, F.lit("@"), legit_domain)
        )

    def _device(self) -> Column:
        d = self.draw
        seg = F.col("segment")
        farm_device = F.when(
            d.u("dev_rand", "idx") < F.col("device_randomised_share"), d.token("", "dev", "idx")
        ).otherwise(
            d.token("", "fdev", "operator", F.floor(d.u("fdev_k", "idx") * F.col("n_devices")))
        )
        return (
            F.when(seg == "farm", farm_device)
            .when(
                (seg == "family") & (d.u("fam_dev", "idx") < 0.5), d.token("", "hdev", "household")
            )
            .otherwise(d.token("", "dev", "idx"))
        )

    def _client(self, day: Column) -> Column:
        d, pop = self.draw, self.spec.population
        popular = d.token("cf_", "client", F.floor(pop.n_clients * F.pow(d.u("client", "idx"), 2)))
        farm = F.when(d.u("cli_rand", "idx") < F.col("client_randomised_share"), popular).otherwise(
            d.token("cf_", "fclient", "operator", F.pmod(d.hash("fcl", "idx"), 2))
        )
        sdk = d.token("cf_", "sdk", F.pmod(d.hash("sdk", "idx"), 5))
        seg = F.col("segment")
        return F.when(seg == "farm", farm).when(seg == "power_user", sdk).otherwise(popular)

    def payments(self, accounts: DataFrame) -> DataFrame:
        """The ``payments`` table (1-2 attempts per paying account in the window)."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        seg = F.col("segment")
        is_farm = seg == "farm"
        pays = is_farm | (d.u("pays", "idx") < pop.paying_share)
        n_pay = 1 + F.floor(d.u("n_pay", "idx") * 2).cast("int")
        rows = accounts.where(pays).withColumn("k", F.explode(F.sequence(F.lit(0), n_pay - 1)))
        farm_card = F.floor(
            d.u("fcard", "idx", F.when(d.u("switch", "idx", "k") < 0.3, F.col("k")).otherwise(0))
            * F.col("n_cards")
        )
        # an operator buying a card per account (virtual cards by the thousand) never reuses one
        farm_card = F.when(F.col("accounts_per_card") <= 1, F.col("idx")).otherwise(farm_card)
        card_key = (
            F.when(is_farm, F.concat(F.lit("f"), F.col("operator"), F.lit("_"), farm_card))
            .when(
                (seg == "family") & (d.u("famcard", "idx") < 0.7),
                F.concat(F.lit("h"), F.col("household")),
            )
            .when(
                (seg == "office") & (d.u("teamcard", "idx") < 0.3),
                F.concat(F.lit("o"), F.col("grp"), F.lit("_"), F.pmod(d.hash("team", "idx"), 12)),
            )
            .otherwise(F.concat(F.lit("p"), F.col("idx")))
        )
        rows = rows.withColumn("card_key", card_key)
        bin_code, postcode = self._card_origin(is_farm)
        card_type = F.when(
            is_farm,
            F.when(d.u("virt", "card_key") < F.col("virtual_card_share"), "virtual").otherwise(
                "prepaid"
            ),
        ).otherwise(
            pick(d.u("ctype", "card_key"), ["credit", "debit", "prepaid"], [0.6, 0.35, 0.05])
        )
        outcome_u = d.u("outcome", "idx", "k")
        outcome = F.when(
            is_farm, pick(outcome_u, ["approved", "declined", "chargeback"], [0.8, 0.17, 0.03])
        ).otherwise(pick(outcome_u, ["approved", "declined", "refunded"], [0.96, 0.03, 0.01]))
        ws_s = int(self.window_start.timestamp())
        pay_s = ws_s + d.u("pay_ts", "idx", "k") * spec.window_days * 86400
        return rows.select(
            "account_id",
            F.timestamp_seconds(F.floor(pay_s)).alias("payment_ts"),
            d.token("pi_", "instrument", "card_key").alias("instrument_fingerprint"),
            bin_code.alias("card_bin"),
            card_type.alias("card_type"),
            postcode.alias("billing_postcode"),
            F.when(is_farm, F.lit("US")).otherwise(F.col("country")).alias("billing_country"),
            F.when(is_farm, 20.0)
            .otherwise(pick(d.u("amt", "idx"), [20.0, 200.0, 5.0], [0.8, 0.1, 0.1]))
            .alias("amount"),
            outcome.alias("outcome"),
        )

    def _card_origin(self, is_farm: Column) -> tuple[Column, Column]:
        """Card BIN and billing postcode of a ``card_key`` row.

        Ordinary cards spread over popular BINs and postcodes, a farm's over its operator's few.
        """
        d = self.draw
        legit_bin = F.concat(
            F.lit("4"),
            F.lpad(
                F.pmod(
                    d.hash("bin", F.floor(300 * F.pow(d.u("bin_k", "card_key"), 2))), 100000
                ).cast("string"),
                5,
                "0",
            ),
        )
        farm_bin = F.concat(
            F.lit("5"),
            F.lpad(
                F.pmod(
                    d.hash("fbin", "operator", F.pmod(d.hash("fb", "card_key"), F.col("n_bins"))),
                    100000,
                ).cast("string"),
                5,
                "0",
            ),
        )
        legit_post = F.lpad(
            F.pmod(
                d.hash("post", F.floor(3000 * F.pow(d.u("post_k", "card_key"), 1.5))), 100000
            ).cast("string"),
            5,
            "0",
        )
        farm_post = F.lpad(
            F.pmod(
                d.hash("fpost", "operator", F.pmod(d.hash("fp", "card_key"), F.col("n_postcodes"))),
                100000,
            ).cast("string"),
            5,
            "0",
        )
        return (
            F.when(is_farm, farm_bin).otherwise(legit_bin),
            F.when(is_farm, farm_post).otherwise(legit_post),
        )
