"""What the synthetic accounts do: API usage, IP events, labels, broken rows, ground truth.

In: the account rows of :meth:`jobs.world.generate.WorldGenerator.accounts`. Out: the
``api_usage``, ``ip_events``, ``labels`` and ``ground_truth`` tables, and a seeded share of rows
broken the way real feeds break. A mixin of :class:`jobs.world.generate.WorldGenerator`.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.world.draws import (
    pick,
)


class ActivityTables:
    """Usage, events, labels and ground truth of the world (needs ``spec`` and ``draw``)."""

    def _active_days(self, accounts: DataFrame) -> DataFrame:
        """Account x day rows for days with API activity."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        seg = F.col("segment")
        days = accounts.withColumn(
            "day", F.explode(F.sequence(F.lit(0), F.lit(spec.window_days - 1)))
        )
        p_active = (
            F.when(
                F.col("is_sleeper"),
                F.when(
                    F.col("day") >= spec.window_days - F.col("sleeper_active_days"), 1.0
                ).otherwise(0.0),
            )
            .when(seg == "farm", F.col("active_day_share"))
            .when(seg == "power_user", 0.9)
            .otherwise(pop.active_day_share * (0.3 + 1.4 * d.u("activity", "idx")))
        )
        return days.where(d.u("active", "idx", "day") < p_active)

    def _hours_mask(self, start: Column, length: Column) -> Column:
        """24-bit mask with ``length`` consecutive hours set from ``start`` (wrapping)."""
        start = F.pmod(start, 24)
        base = (F.pow(F.lit(2), length) - 1).cast("long")
        left = base * F.pow(F.lit(2), start).cast("long")
        right = F.floor(base / F.pow(F.lit(2), 24 - start)).cast("long")
        return left.bitwiseOR(right).bitwiseAND(0xFFFFFF).cast("int")

    def api_usage(self, accounts: DataFrame) -> DataFrame:
        """The ``api_usage`` table: one row per account and active day after signup."""
        d, pop = self.draw, self.spec.population
        seg = F.col("segment")
        is_farm = seg == "farm"
        signed = accounts.withColumn("signup_day", self._signup_day())
        days = self._active_days(signed).where(F.col("day") >= F.col("signup_day"))
        legit_req = F.exp(
            math.log(pop.individual_requests_per_day) + 0.9 * d.normal("req", "idx", "day")
        )
        power_req = pop.power_user_requests_per_day * (0.9 + 0.2 * d.u("preq", "idx", "day"))
        farm_req = F.col("requests_per_day") * (
            1 + F.col("requests_jitter") * (2 * d.u("freq", "idx", "day") - 1)
        )
        # a blending farm account behaves like an ordinary user on a share of its days
        blends = {
            knob: is_farm & (d.u(knob, "idx", "day") < F.col(knob))
            for knob in ("volume_blend", "prompt_blend", "schedule_blend")
        }
        requests = F.greatest(
            F.lit(1),
            F.round(
                F.when(is_farm & ~blends["volume_blend"], farm_req)
                .when(seg == "power_user", power_req)
                .otherwise(legit_req)
            ),
        ).cast("long")
        per_token = F.when(is_farm, 2400 + 200 * d.u("tok", "idx", "day")).otherwise(
            600 + 2400 * d.u("tok", "idx", "day")
        )
        shape = lambda u: F.floor(pop.n_prompt_shapes * F.pow(u, 3))  # noqa: E731
        legit_sig = F.when(
            d.u("fav_pick", "idx", "day") < 0.7, shape(d.u("fav", "idx", F.pmod(F.col("day"), 2)))
        )
        legit_sig = legit_sig.otherwise(shape(d.u("sig", "idx", "day")))
        template = F.floor(d.u("tmpl", "idx", "day") * F.col("n_prompt_templates"))
        signature = F.when(
            is_farm
            & ~blends["prompt_blend"]
            & (d.u("use_tmpl", "idx", "day") < F.col("template_share")),
            d.token("ps_", "template", "operator", template),
        ).otherwise(d.token("ps_", "shape", legit_sig.cast("long")))
        farm_start = F.col("schedule_start_hour") + F.when(
            d.u("jit", "idx", "day") < F.col("schedule_jitter"),
            F.when(d.u("jdir", "idx", "day") < 0.5, -1).otherwise(1),
        ).otherwise(0)
        legit_start = (
            F.col("tz_start")
            + F.floor(d.u("hstart", "idx") * 6)
            + F.floor(d.u("hday", "idx", "day") * 5)
            - 2
        )
        legit_len = 2 + F.floor(d.u("hlen", "idx") * 8) + F.floor(d.u("hlen", "idx", "day") * 3)
        mask = (
            F.when(
                is_farm & ~blends["schedule_blend"],
                self._hours_mask(farm_start.cast("int"), F.col("schedule_hours").cast("int")),
            )
            .when((seg == "power_user") & (d.u("ci", "idx") < 0.6), F.lit(0xFFFFFF))
            .otherwise(self._hours_mask(legit_start.cast("int"), legit_len.cast("int")))
        )
        usage_date = F.date_add(F.lit(self.window_start.date()), F.col("day"))
        return days.select(
            "account_id",
            usage_date.alias("usage_date"),
            requests.alias("requests"),
            F.round(requests * per_token).cast("long").alias("tokens"),
            signature.alias("prompt_signature"),
            mask.alias("active_hours_mask"),
            self._client(F.col("day")).alias("client_fingerprint"),
        )

    def ip_events(self, accounts: DataFrame) -> DataFrame:
        """The ``ip_events`` table: logins and API sessions with their network."""
        d, spec = self.draw, self.spec
        seg = F.col("segment")
        is_farm = seg == "farm"
        signed = accounts.withColumn("signup_day", self._signup_day())
        farm_days = F.when(F.col("is_sleeper"), F.col("sleeper_active_days")).otherwise(
            F.least(
                F.lit(spec.window_days),
                spec.window_days - F.greatest(F.col("signup_day"), F.lit(0)),
            )
            * F.col("active_day_share")
        )
        n_events = (
            F.when(is_farm, F.greatest(F.lit(1), F.round(farm_days * F.col("proxy_ips_per_day"))))
            .otherwise(1 + F.floor(d.u("n_ev", "idx") * 6))
            .cast("int")
        )
        events = signed.withColumn("ev", F.explode(F.sequence(F.lit(0), n_events - 1)))
        first_day = F.greatest(F.col("signup_day"), F.lit(0))
        first_day = F.when(
            F.col("is_sleeper"), spec.window_days - F.col("sleeper_active_days")
        ).otherwise(first_day)
        span = F.greatest(F.lit(1), spec.window_days - first_day)
        day = first_day + F.floor(d.u("ev_day", "idx", "ev") * span)
        blended = d.u("schedule_blend", "idx", "ev") < F.col("schedule_blend")
        hour = F.when(
            is_farm & ~blended,
            F.col("schedule_start_hour")
            + F.floor(d.u("ev_h", "idx", "ev") * F.col("schedule_hours")),
        ).otherwise(F.col("tz_start") + F.floor(d.u("ev_h", "idx", "ev") * 10))
        ws_s = int(self.window_start.timestamp())
        ts = ws_s + day * 86400 + F.pmod(hour, 24) * 3600 + F.floor(d.u("ev_s", "idx", "ev") * 3600)
        ip, asn, asn_type = self._network(self._network_kind(d.u("ev_net", "idx", "ev")), "ev", "e")
        event_type = pick(
            d.u("ev_type", "idx", "ev"), ["api_session", "login", "payment"], [0.7, 0.25, 0.05]
        )
        return events.select(
            "account_id",
            F.timestamp_seconds(F.floor(ts)).alias("event_ts"),
            ip.alias("ip"),
            asn.alias("asn"),
            asn_type.alias("asn_type"),
            event_type.alias("event_type"),
        )

    def labels(self, accounts: DataFrame) -> DataFrame:
        """The ``labels`` table: some farm accounts confirmed fraud, some customers verified."""
        d, spec, pop = self.draw, self.spec, self.spec.population
        is_farm = F.col("segment") == "farm"
        labelled = F.when(is_farm, d.u("label", "idx") < F.col("label_share")).otherwise(
            d.u("label", "idx") < pop.label_share
        )
        ws_s = int(self.window_start.timestamp())
        frac = F.when(F.col("is_campaign"), 0.7 + 0.3 * d.u("lab_t", "idx")).otherwise(
            F.when(is_farm, 0.2 + 0.8 * d.u("lab_t", "idx")).otherwise(d.u("lab_t", "idx"))
        )
        source = (
            F.when(F.col("is_campaign"), F.lit("abuse_report"))
            .when(
                is_farm,
                pick(
                    d.u("lab_src", "idx"),
                    ["chargeback", "trust_review", "abuse_report"],
                    [0.3, 0.5, 0.2],
                ),
            )
            .otherwise(F.lit("verified_customer"))
        )
        return accounts.where(labelled).select(
            "account_id",
            F.when(is_farm, 1).otherwise(0).cast("int").alias("label"),
            F.timestamp_seconds(F.floor(ws_s + frac * (spec.window_days - 1) * 86400)).alias(
                "labelled_at"
            ),
            source.alias("source"),
        )

    def _inject_malformed(self, table: DataFrame, name: str) -> DataFrame:
        """Break a small, seeded share of rows the way real feeds break.

        A picked row gets one of: a null ``account_id``, a 1970 timestamp, an out-of-contract
        value (negative ``requests`` or an unknown ``event_type``), or a duplicate copy. Ingest
        must quarantine all of them; ``WorldSpec.malformed_share = 0`` turns this off.
        """
        share = self.spec.malformed_share
        if share <= 0:
            return table
        d = self.draw
        row_key = F.concat_ws("|", *[F.col(c).cast("string") for c in table.columns])
        # one pass: -1 = untouched, 0..2 = broken in place, 3 = emitted twice
        bad = F.when(
            d.u(f"bad_{name}", row_key) < share, F.floor(d.u(f"bad_kind_{name}", row_key) * 4)
        ).otherwise(-1)
        time_col = "usage_date" if name == "api_usage" else "event_ts"
        epoch = F.lit("1970-01-01").cast(table.schema[time_col].dataType)
        marked = table.withColumn("_bad", bad).withColumn(
            "_copy",
            F.explode(
                F.when(F.col("_bad") == 3, F.array(F.lit(0), F.lit(1))).otherwise(F.array(F.lit(0)))
            ),
        )
        broken = marked.withColumn(
            "account_id", F.when(F.col("_bad") == 0, F.lit(None)).otherwise(F.col("account_id"))
        ).withColumn(time_col, F.when(F.col("_bad") == 1, epoch).otherwise(F.col(time_col)))
        if name == "api_usage":
            broken = broken.withColumn(
                "requests", F.when(F.col("_bad") == 2, F.lit(-5)).otherwise(F.col("requests"))
            )
        else:
            broken = broken.withColumn(
                "event_type",
                F.when(F.col("_bad") == 2, F.lit("teleport")).otherwise(F.col("event_type")),
            )
        return broken.drop("_bad", "_copy")

    def ground_truth(self, accounts: DataFrame) -> DataFrame:
        """The ``ground_truth`` table (evaluation only)."""
        return accounts.select(
            "account_id",
            F.col("is_farm"),
            F.col("operator"),
            F.when(F.col("is_farm"), F.concat(F.lit("farm_"), F.col("operator"))).alias("farm_id"),
            "segment",
            F.coalesce(F.col("is_campaign"), F.lit(False)).alias("is_campaign"),
            F.coalesce(F.col("is_sleeper"), F.lit(False)).alias("is_sleeper"),
        )
