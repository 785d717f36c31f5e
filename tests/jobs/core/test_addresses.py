"""IP addresses in Spark agree with Python's ``ipaddress``, spelling for spelling.

Hypothesis draws addresses of both families (IPv6 ones rich in zero runs, IPv4-mapped ones,
ones with an IPv4 tail) and writes each the ways feeds do: compressed, exploded, upper case,
in brackets, with spaces. :func:`normalise_ip` must give ``ipaddress``'s text (the IPv4 address
of a mapped one), and null exactly where ``ipaddress`` refuses the text. A Spark job per address
would be slow, so each example is a batch checked with one collect.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from jobs.core.addresses import network_keys, normalise_ip, subscriber_ip

GROUP = st.one_of(st.just(0), st.just(0), st.integers(0, 0xFFFF))


def _ipv6_int(groups: list[int]) -> int:
    return sum(g << (16 * (7 - i)) for i, g in enumerate(groups))


IPV6 = st.lists(GROUP, min_size=8, max_size=8).map(lambda g: ipaddress.IPv6Address(_ipv6_int(g)))
IPV4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
MAPPED = IPV4.map(lambda a: ipaddress.IPv6Address(0xFFFF00000000 + int(a)))


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy:
    texts = [str(address)]
    if address.version == 6:
        texts += [address.exploded, address.exploded.upper(), f"[{address.compressed}]"]
        if address.ipv4_mapped is not None:
            texts.append(f"::ffff:{address.ipv4_mapped}")
        head = address.exploded.rsplit(":", 2)[0]
        tail = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        texts.append(f"{head}:{tail}")
    texts.append(f"  {texts[0]} ")
    return st.sampled_from(texts)


def _expected(text: str) -> str | None:
    text = text.strip(" ")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:  # a zone id names a link on the host that logged it: no address for us
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


JUNK = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
    st.sampled_from(
        [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1::2::3",
            ":::",
            "1:2:3:4:5:6:7:8:9",
            "12345::",
            "fe80::1%eth0",
            "2001:db8::/64",
            "1.2.3.4:80",
            "::ffff:01.2.3.4",
            "1.2.3.4::",
            "gggg::1",
        ]
    ),
)
TEXTS = st.one_of(
    st.one_of(IPV6, IPV4, MAPPED).flatmap(_spellings),
    JUNK,
)


# a batch shrinks slowly, so no shrinking: the failure message lists every wrong address
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(texts=st.lists(TEXTS, min_size=40, max_size=120))
def test_normalise_agrees_with_ipaddress(spark, texts):
    df = spark.createDataFrame([(t,) for t in texts], "text string")
    got = [r[0] for r in df.select(normalise_ip(F.col("text"))).collect()]
    wrong = [(t, g, _expected(t)) for t, g in zip(texts, got, strict=True) if g != _expected(t)]
    assert not wrong, f"(text, farmwatch, ipaddress): {wrong}"


def test_networks_of_each_family(spark):
    rows = [
        ("198.51.100.23",),
        ("2001:db8:aa:bb:1:2:3:4",),
        ("2001:db8:aa:bb:ffff:0:0:1",),
        ("2001:db8::1",),
        ("::ffff:198.51.100.99",),
    ]
    df = spark.createDataFrame(rows, "ip string").select(normalise_ip(F.col("ip")).alias("ip"))
    got = df.select("ip", subscriber_ip(F.col("ip")), network_keys(F.col("ip"))).collect()
    assert [tuple(r) for r in got] == [
        ("198.51.100.23", "198.51.100.23", ["198.51.100"]),
        (
            "2001:db8:aa:bb:1:2:3:4",
            "2001:db8:aa:bb::/64",
            ["2001:db8:aa:bb::/64", "2001:db8:aa::/48"],
        ),
        (
            "2001:db8:aa:bb:ffff::1",
            "2001:db8:aa:bb::/64",
            ["2001:db8:aa:bb::/64", "2001:db8:aa::/48"],
        ),
        ("2001:db8::1", "2001:db8::/64", ["2001:db8::/64", "2001:db8::/48"]),
        ("198.51.100.99", "198.51.100.99", ["198.51.100"]),
    ]
