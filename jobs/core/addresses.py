"""IP addresses of both families as Spark columns: one spelling per address, and its networks.

In: string columns holding IPv4 or IPv6 addresses as feeds write them. Out: column expressions
computed inside Spark (no Python UDF: no row leaves the JVM; an IPv4 address costs one regular
expression, only IPv6 text goes through the group parser):

- :func:`normalise_ip`: the one text of an address, or null when the value is no address.
  IPv4 in dotted decimal (leading zeros are refused, as Python's ``ipaddress`` refuses them: is
  ``010`` eight or ten?); IPv6 in RFC 5952 form (lower case, no leading zeros, the longest run
  of two or more zero groups written ``::``), with an IPv4-mapped address (``::ffff:1.2.3.4``)
  written as the IPv4 address it carries. Brackets (``[2001:db8::1]``) are dropped; zone ids,
  ports and prefixes (``/64``) are no address. The tests hold it equal to ``ipaddress``.
- :func:`subscriber_ip`: what one address says about who used it. An IPv4 address is itself;
  an IPv6 address is its /64, the smallest network a provider hands one subscriber's link: the
  low 64 bits change by the hour with privacy extensions, and an operator rotating through a
  /64 picks a fresh one per request, so only the /64 is stable.
- :func:`network_keys`: the networks around it that strangers share: an IPv4 /24, an IPv6 /64
  and /48. Each becomes a key with the ASN and the day (``ip24_asn_day`` entities).

Called by ingest (normalise and quarantine what is no address), the graph stage (entities) and
account features (distinct addresses).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column
from pyspark.sql import functions as F

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
# an IPv6 text whose last 32 bits are written as a dotted quad (``64:ff9b::192.0.2.1``)
_DOTTED_TAIL = rf"^(.*:){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
_HEX_GROUP = r"^[0-9a-f]{1,4}$"


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` computed once.

    A Python column used twice is two copies of its expression tree; the parser below would
    nest thousands of copies and stall Spark's optimiser. A lambda variable is a leaf.
    """
    return F.element_at(F.transform(F.array(value), body), 1)


def _octets_as_groups(text: Column) -> Column:
    """``a:b::1.2.3.4`` -> ``a:b::102:304`` (the dotted tail as two hex groups)."""

    def octet(i: int) -> Column:
        return F.regexp_extract(text, _DOTTED_TAIL, i).cast("int")

    high = F.lower(F.hex(octet(2) * 256 + octet(3)))
    low = F.lower(F.hex(octet(4) * 256 + octet(5)))
    return F.when(
        text.rlike(_DOTTED_TAIL),
        F.concat(F.regexp_extract(text, _DOTTED_TAIL, 1), high, F.lit(":"), low),
    ).otherwise(text)


def _groups(part: Column) -> Column:
    """The colon-separated groups of one side of ``::`` (none for an empty side)."""
    return F.when(part == "", F.array().cast("array<string>")).otherwise(F.split(part, ":"))


def _checked_groups(groups: Column) -> Column:
    """Eight hex groups of up to four digits, padded to four; null otherwise."""
    valid = (F.size(groups) == 8) & F.forall(groups, lambda g: g.rlike(_HEX_GROUP))
    return F.when(valid, F.transform(groups, lambda g: F.lpad(g, 4, "0")))


def _split_groups(text: Column) -> Column:
    """The groups of an IPv6 text in hex only, ``::`` filled with zero groups."""

    def from_sides(sides: Column) -> Column:
        left, right = sides.getItem(0), sides.getItem(1)
        gap = 8 - F.size(left) - F.size(right)
        return F.when(gap >= 1, F.concat(left, F.array_repeat(F.lit("0"), gap), right))

    halves = F.split(text, "::")
    return (
        F.when(F.size(halves) == 1, F.split(text, ":"))
        .when(
            F.size(halves) == 2,
            _let(F.array(_groups(halves.getItem(0)), _groups(halves.getItem(1))), from_sides),
        )
        .otherwise(F.lit(None).cast("array<string>"))
    )


def ipv6_groups(text: Column) -> Column:
    """The eight groups of an IPv6 text, each four lower-case hex digits; null if no IPv6."""
    return _let(_let(_octets_as_groups(text), _split_groups), _checked_groups)


def _ipv4_of_mapped(groups: Column) -> Column:
    """``::ffff:a.b.c.d`` as ``a.b.c.d`` (null unless the groups are IPv4-mapped)."""
    high = F.conv(groups.getItem(6), 16, 10).cast("int")
    low = F.conv(groups.getItem(7), 16, 10).cast("int")
    octets = [
        F.shiftright(high, 8),
        high.bitwiseAND(255),
        F.shiftright(low, 8),
        low.bitwiseAND(255),
    ]
    mapped = F.array_join(F.slice(groups, 1, 6), ":") == "0000:0000:0000:0000:0000:ffff"
    return F.when(mapped, F.concat_ws(".", *[o.cast("string") for o in octets]))


def _unframed(text: Column) -> Column:
    """Drop the framing colons of ``:...:``, unless one is half of the ``::``."""
    text = F.when(text.startswith("::"), text).otherwise(text.substr(F.lit(2), F.length(text)))
    return F.when(text.endswith("::"), text).otherwise(text.substr(F.lit(1), F.length(text) - 1))


def _zero_run_compressed(framed: Column) -> Column:
    """``:a:0:0:b:`` -> ``:a::b:``: the first longest run of two or more zero groups."""
    text = framed
    for run in range(2, 9):  # the longest run wins: its ``when`` is the outermost
        text = F.when(
            F.instr(framed, ":0" * run + ":") > 0,
            F.regexp_replace(framed, "^(.*?)" + "(?::0)" * run + ":", "$1::"),
        ).otherwise(text)
    return text


def ipv6_text(groups: Column) -> Column:
    """RFC 5952 text of eight four-digit groups: the first longest run of 2+ zeros as ``::``."""
    short = F.transform(groups, lambda g: F.regexp_replace(g, "^0{1,3}", ""))
    framed = F.concat(F.lit(":"), F.array_join(short, ":"), F.lit(":"))
    return _let(_let(framed, _zero_run_compressed), _unframed)


def _ipv6_normalised(text: Column) -> Column:
    return _let(
        ipv6_groups(text), lambda groups: F.coalesce(_ipv4_of_mapped(groups), ipv6_text(groups))
    )


def normalise_ip(value: Column) -> Column:
    """The one text of an IPv4 or IPv6 address (see the module), or null for no address."""
    text = F.regexp_replace(F.lower(F.trim(value)), r"^\[(.*)\]$", "$1")
    return (
        # most feeds write IPv4 already in its one text: one regular expression, not the three
        # string passes that trim, lower case and unbracket it (the same result, as the pattern
        # admits no space, letter or bracket)
        F.when(value.rlike(IPV4_PATTERN), value)
        .when(text.rlike(IPV4_PATTERN), text)
        .when(text.contains(":"), _let(text, _ipv6_normalised))
        .otherwise(F.lit(None).cast("string"))
    )


def _prefix(groups: Column, groups_kept: int) -> Column:
    """The ``/(16 * groups_kept)`` network of eight groups, as ``2001:db8::/48``."""
    kept = F.concat(F.slice(groups, 1, groups_kept), F.array_repeat(F.lit("0000"), 8 - groups_kept))
    return F.concat(ipv6_text(kept), F.lit(f"/{16 * groups_kept}"))


def is_ipv6(address: Column) -> Column:
    """True for a normalised IPv6 address (IPv4 text has no colon)."""
    return address.contains(":")


def subscriber_ip(address: Column) -> Column:
    """A normalised address as one subscriber: IPv4 itself, IPv6 its /64."""
    return F.when(
        is_ipv6(address), _let(ipv6_groups(address), lambda groups: _prefix(groups, 4))
    ).otherwise(address)


def network_keys(address: Column) -> Column:
    """The shared networks of a normalised address: ``[/24]`` for IPv4, ``[/64, /48]`` for IPv6.

    An IPv4 /24 is written as its first three octets (``198.51.100``), as it always was, so the
    keyed hashes of IPv4 networks, and the lists that publish them, do not change.
    """
    return F.when(
        is_ipv6(address),
        _let(ipv6_groups(address), lambda groups: F.array(_prefix(groups, 4), _prefix(groups, 3))),
    ).when(address.isNotNull(), F.array(F.substring_index(address, ".", 3)))
