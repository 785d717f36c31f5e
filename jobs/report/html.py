"""The run report: one self-contained HTML page a trust team opens in a browser.

In: a :class:`ReportData` (pandas tables and dicts the publish stage already holds: the run's
identity and counts, its ban list and farm summary, the sampled farm graphs of
:mod:`jobs.report.farm_graphs`, the diff against the list in force, the ingest counts, the
quantile profiles and the drift of :mod:`jobs.report.drift`). Out: ``report.html`` as bytes:
Plotly charts with plotly.js inlined once, styles inline, nothing fetched at view time. It shows
the summary and alerts, actions by farm, the score distribution against the last runs, each
drawn farm as a graph of accounts and the hashed entities that bind them (coloured by action)
with its reasons, the diff, quarantine counts per table and the drift. Entities appear only as
keyed hashes and accounts only by id, as on the ban list; :func:`pii_found` is the check the
tests (and the stage, before publishing) run on the page. Called by the publish stage
(:mod:`jobs.banlists.stage`), which publishes the page beside the list, and the tests.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import igraph
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from jobs.core.sections import ReportSettings

REPORT_FILE = "report.html"
ACTION_COLOURS = {
    "ban": "#c0392b",
    "review": "#e67e22",
    "watch": "#f1c40f",
    "not listed": "#95a5a6",
}
ENTITY_COLOUR = "#2c6fbb"
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# What raw personal data looks like on a page: an email address, an IPv4 address, an IPv6
# address (full or compressed). Keyed hashes are bare hex and match none of these.
_PII_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "ipv4": re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w.])"),
    "ipv6": re.compile(
        r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?(?![\w:])"
    ),
}


class ReportPiiError(ValueError):
    """The rendered report contains something shaped like an email or IP address."""


def pii_found(text: str) -> list[str]:
    """Every substring of ``text`` that looks like an email, IPv4 or IPv6 address."""
    return [
        f"{kind}: {m.group(0)}" for kind, rx in _PII_PATTERNS.items() for m in rx.finditer(text)
    ]


def page_data_text(page: str) -> str:
    """The page without the inlined plotly.js library: the text and data a run put into it."""
    return page.replace(get_plotlyjs(), "")


@dataclass(frozen=True)
class ReportData:
    """Everything one run's report shows (small tables: the stage samples before collecting)."""

    run: dict[str, Any]
    """run_date, run_id, status, message, model_version, accounts_scored, farm_candidates,
    breaker_reason, allowlisted."""
    banlist: pd.DataFrame
    farms: pd.DataFrame
    members: pd.DataFrame
    """farm_id, account_id, score, farm_size: the drawn members."""
    edges: pd.DataFrame
    """farm_id, account_id, entity_type, entity_id: drawn member -> shared entity."""
    diff_summary: dict[str, Any]
    ingest: dict[str, Any]
    profile: dict[str, Any]
    trailing: list[dict[str, Any]]
    drift: dict[str, Any]
    farm_loss: pd.DataFrame
    bans_by_age: pd.DataFrame
    settings: ReportSettings = field(default_factory=ReportSettings)


def render(data: ReportData) -> bytes:
    """The report page as UTF-8 bytes; refuses a page with anything shaped like raw PII."""
    run = data.run
    sections = [
        _header(data),
        _alerts(data.drift),
        _section("Summary", _summary_table(data)),
        _section("Actions by farm", _figure(_actions_by_farm(data.banlist), "actions-by-farm")),
        _section(
            "Score distribution against the last runs",
            _figure(_score_curves(data.profile, data.trailing, run), "score-distribution"),
        ),
        _section("Farms", _farm_sections(data)),
        _section("Changes against the list in force", _diff(data.diff_summary)),
        _section("Quarantine per input table", _quarantine(data.ingest)),
        _section("Drift and adversary watch", _drift(data)),
    ]
    title = f"farmwatch run {run['run_date']} ({run['run_id']})"
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
    leaks = pii_found(page_data_text(page))
    if leaks:
        raise ReportPiiError(f"the run report would show raw personal data: {leaks[:3]}")
    return page.encode()


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1rem 1.5rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{margin-bottom:.3rem} table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;font-size:.9rem}
th{background:#f0f0f0} .muted{color:#666;font-size:.9rem}
.alert{background:#fdecea;border-left:4px solid #c0392b;padding:.5rem 1rem;margin:1rem 0}
.ok{background:#eafaf1;border-left:4px solid #27ae60;padding:.5rem 1rem;margin:1rem 0}
.farm{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
code{font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: go.Figure, div_id: str, css_class: str = "chart") -> str:
    fig.update_layout(margin={"l": 40, "r": 20, "t": 40, "b": 40}, template="plotly_white")
    chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG)
    return f"<div class='{css_class}'>{chart}</div>"


def _header(data: ReportData) -> str:
    run = data.run
    return (
        f"<h1>farmwatch run {_e(run['run_date'])}</h1>"
        f"<p class='muted'>run <code>{_e(run['run_id'])}</code> &middot; status "
        f"<b>{_e(run['status'])}</b> &middot; model version "
        f"{_e(run['model_version'])} &middot; circuit breaker: {_e(run.get('breaker_reason', ''))}"
        "</p><p class='muted'>Accounts are shown by id and entities (cards, devices, IPs, "
        "emails) only by keyed hash, as on the ban list: this page holds no raw personal data."
        "</p>"
    )


def _alerts(drift: dict[str, Any]) -> str:
    alerts = drift.get("alerts") or []
    if not alerts:
        compared = len(drift.get("compared_runs") or [])
        return (
            f"<div class='ok' id='drift-status'>No drift alert (compared with {compared} "
            "published run(s)).</div>"
        )
    items = "".join(f"<li>{_e(a)}</li>" for a in alerts)
    return f"<div class='alert' id='drift-status'><b>Drift alert</b><ul>{items}</ul></div>"


def _summary_table(data: ReportData) -> str:
    run = data.run
    counts = data.banlist["action"].value_counts().to_dict() if len(data.banlist) else {}
    banned = data.banlist[data.banlist["action"] == "ban"]
    rows = [
        ("accounts scored", f"{run.get('accounts_scored', 0):,}"),
        ("farm candidates", f"{run.get('farm_candidates', 0):,}"),
        ("farms with bans", f"{banned['farm_id'].nunique():,}"),
        ("ban", f"{counts.get('ban', 0):,}"),
        ("review", f"{counts.get('review', 0):,}"),
        ("watch", f"{counts.get('watch', 0):,}"),
        ("allowlisted would-be bans kept off", f"{run.get('allowlisted', 0):,}"),
    ]
    return _table(rows, ("figure", "value"))


def _actions_by_farm(banlist: pd.DataFrame) -> go.Figure:
    listed = banlist.assign(farm=banlist["farm_id"].fillna("(no farm)"))
    counts = listed.groupby(["farm", "action"]).size().unstack(fill_value=0)
    order = counts.sum(axis=1).sort_values(ascending=False).index
    fig = go.Figure()
    for action in ("ban", "review", "watch"):
        if action in counts.columns:
            fig.add_bar(
                name=action,
                x=[str(f) for f in order],
                y=counts.loc[order, action].tolist(),
                marker_color=ACTION_COLOURS[action],
            )
    fig.update_layout(
        barmode="stack", height=360, xaxis_title="farm", yaxis_title="accounts listed"
    )
    return fig


def _score_curves(
    profile: dict[str, Any], trailing: list[dict[str, Any]], run: dict[str, Any]
) -> go.Figure:
    """Share of accounts scoring at least x, one line per run (log scale: farms are the tail)."""
    above = [100 - i for i in range(100)]  # the 100% quantile has no share above it to plot
    fig = go.Figure()
    for earlier in trailing:
        fig.add_scatter(
            x=earlier["score"][:100],
            y=above,
            mode="lines",
            line_shape="hv",
            name=f"{earlier.get('run_date', '')} ({earlier['run_id']})",
            line={"color": "#bbbbbb", "width": 1},
        )
    fig.add_scatter(
        x=profile["score"][:100],
        y=above,
        mode="lines",
        line_shape="hv",
        name=f"this run {run['run_date']}",
        line={"color": "#c0392b", "width": 3},
    )
    fig.update_layout(
        height=360,
        xaxis_title="score",
        yaxis_title="% of accounts scoring at least",
        xaxis_range=[0, 1],
        yaxis_type="log",
    )
    return fig


def _farm_sections(data: ReportData) -> str:
    drawn = list(dict.fromkeys(data.members["farm_id"])) if len(data.members) else []
    if not drawn:
        return "<p>No farm candidate is on this list.</p>"
    farms = data.farms.set_index("farm_id") if len(data.farms) else pd.DataFrame()
    limit = data.settings.max_farms_drawn
    intro = (
        f"<p class='muted'>{len(drawn)} farm(s) with the most bans drawn (at most {limit}). Each "
        f"graph shows up to {data.settings.max_members_per_farm} members (highest scores first) "
        f"and up to {data.settings.max_entities_per_farm} hashed entities that two or more of "
        "them share; hover a node for its id, score and action.</p>"
    )
    parts = [intro]
    for index, farm_id in enumerate(drawn):
        members = data.members[data.members["farm_id"] == farm_id]
        edges = data.edges[data.edges["farm_id"] == farm_id]
        farm = farms.loc[farm_id] if farm_id in farms.index else None
        parts.append(_farm_section(index, farm_id, members, edges, farm, data.banlist))
    return "".join(parts)


def _farm_section(
    index: int,
    farm_id: str,
    members: pd.DataFrame,
    edges: pd.DataFrame,
    farm: pd.Series | None,
    banlist: pd.DataFrame,
) -> str:
    listed = banlist[banlist["farm_id"] == farm_id]
    counts = listed["action"].value_counts().to_dict()
    size = int(members["farm_size"].iloc[0])
    drawn = len(members)
    sampled = (
        f"showing {drawn} of its {size:,} members" if drawn < size else f"all {size:,} members"
    )
    entities = edges[["entity_type", "entity_id"]].drop_duplicates()
    head = (
        f"<h3>farm {_e(farm_id)}</h3><p class='muted'>{size:,} members: ban "
        f"{counts.get('ban', 0):,}, review {counts.get('review', 0):,}, watch "
        f"{counts.get('watch', 0):,}; graph {sampled} and {len(entities)} shared entities.</p>"
    )
    figure = _figure(
        _farm_graph(members, edges, banlist), f"farm-graph-{index}", css_class="farm-graph"
    )
    return (
        f"<div class='farm' data-farm='{_e(farm_id)}'>{head}{figure}{_reasons(farm, listed)}</div>"
    )


def _farm_graph(members: pd.DataFrame, edges: pd.DataFrame, banlist: pd.DataFrame) -> go.Figure:
    """Accounts (coloured by action) and the hashed entities that bind them, laid out by force."""
    actions = banlist.set_index("account_id")["action"]
    accounts = members.assign(
        action=members["account_id"].map(actions).fillna("not listed")
    ).reset_index(drop=True)
    entity_keys = list(dict.fromkeys(edges["entity_type"] + ":" + edges["entity_id"]))
    names = list(accounts["account_id"]) + entity_keys
    position = {name: i for i, name in enumerate(names)}
    links = [
        (position[a], position[f"{t}:{e}"])
        for a, t, e in zip(
            edges["account_id"], edges["entity_type"], edges["entity_id"], strict=True
        )
    ]
    graph = igraph.Graph(n=len(names), edges=links)
    coords = graph.layout_fruchterman_reingold(seed=graph.layout_circle().coords, niter=300).coords
    xs = [c[0] for c in coords]
    ys = [c[1] for c in coords]
    fig = go.Figure()
    line_x: list[float | None] = []
    line_y: list[float | None] = []
    for a, b in links:
        line_x += [xs[a], xs[b], None]
        line_y += [ys[a], ys[b], None]
    fig.add_scatter(
        x=line_x,
        y=line_y,
        mode="lines",
        line={"color": "#cccccc", "width": 0.7},
        hoverinfo="skip",
        showlegend=False,
    )
    entity_index = [position[k] for k in entity_keys]
    fig.add_scatter(
        x=[xs[i] for i in entity_index],
        y=[ys[i] for i in entity_index],
        mode="markers",
        name="shared entity (keyed hash)",
        marker={"symbol": "diamond", "size": 9, "color": ENTITY_COLOUR},
        text=entity_keys,
        hovertemplate="%{text}<extra></extra>",
    )
    for action, colour in ACTION_COLOURS.items():
        group = accounts[accounts["action"] == action]
        if group.empty:
            continue
        fig.add_scatter(
            x=[xs[i] for i in group.index],
            y=[ys[i] for i in group.index],
            mode="markers",
            name=f"account: {action}",
            marker={"size": 8, "color": colour, "line": {"width": 0.5, "color": "#333"}},
            text=[
                f"{a} score {s:.3f}"
                for a, s in zip(group["account_id"], group["score"].fillna(0), strict=True)
            ],
            hovertemplate="%{text}<extra></extra>",
        )
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False}
    fig.update_layout(height=460, xaxis=axis, yaxis=axis, legend={"orientation": "h"})
    return fig


def _list_of(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [str(v) for v in list(value)]


def _reasons(farm: pd.Series | None, listed: pd.DataFrame) -> str:
    group = _list_of(farm.get("group_evidence")) if farm is not None else []
    binding = _list_of(farm.get("binding_entities")) if farm is not None else []
    common = Counter(r for reasons in listed["reasons"] for r in _list_of(reasons)).most_common(5)
    parts = []
    if group:
        items = "".join(f"<li>{_e(r)}</li>" for r in group)
        parts.append(f"<p><b>What the group does that random groups do not</b></p><ul>{items}</ul>")
    if binding:
        items = "".join(f"<li><code>{_e(b)}</code></li>" for b in binding)
        parts.append(f"<p><b>Entities that bind it</b></p><ul>{items}</ul>")
    if common:
        items = "".join(
            f"<li>{_e(r)} <span class='muted'>({n} accounts)</span></li>" for r, n in common
        )
        parts.append(f"<p><b>Its members' most frequent reasons</b></p><ul>{items}</ul>")
    return "".join(parts) or "<p class='muted'>No reasons recorded.</p>"


def _diff(summary: dict[str, Any]) -> str:
    previous = summary.get("previous_run") or "none (first list)"
    accounts = summary.get("accounts", {})
    farms = summary.get("farms_with_bans", {})
    rows = [(f"accounts {k}", f"{v:,}") for k, v in accounts.items()]
    rows += [(f"farms with bans {k}", f"{v:,}") for k, v in farms.items()]
    key = summary.get("entity_hash_key") or {}
    note = f"<p class='alert'>{_e(key['note'])}</p>" if key.get("changed") else ""
    return f"<p class='muted'>against <code>{_e(previous)}</code></p>{note}" + _table(
        rows, ("change", "count")
    )


def _quarantine(ingest: dict[str, Any]) -> str:
    rows = [
        (
            table,
            f"{c.get('read', 0):,}",
            f"{c.get('accepted', 0):,}",
            f"{c.get('quarantined', 0):,}",
            f"{c.get('out_of_window', 0):,}",
        )
        for table, c in sorted(ingest.items())
        if isinstance(c, dict)
    ]
    if not rows:
        return "<p class='muted'>No ingest counts were recorded for this run.</p>"
    return _table(rows, ("table", "read", "accepted", "quarantined", "out of window"))


def _drift(data: ReportData) -> str:
    drift, settings = data.drift, data.settings
    compared = drift.get("compared_runs") or []
    parts = [
        f"<p class='muted'>Population stability index (PSI) of each model feature and of the "
        f"score against the pooled profiles of the last {len(compared)} published run(s) "
        f"(alert above {settings.feature_psi_alert} for a feature, {settings.score_psi_alert} "
        f"for the score). Farms lost: farms banned in the list in force whose banned accounts "
        f"are no longer banned (vanished) or fewer than {settings.farm_shrink_ratio:.0%} of them "
        f"are (shrank); alert above {settings.farm_loss_alert:.0%} of them.</p>"
    ]
    features = drift.get("features") or {}
    if features:
        top = list(features.items())[:20]
        fig = go.Figure(
            go.Bar(
                x=[v for _, v in top][::-1],
                y=[k for k, _ in top][::-1],
                orientation="h",
                marker_color=[
                    "#c0392b" if v > settings.feature_psi_alert else "#7f8c8d" for _, v in top
                ][::-1],
            )
        )
        fig.update_layout(height=max(300, 22 * len(top)), xaxis_title="PSI")
        parts.append(_figure(fig, "feature-drift"))
        parts.append(f"<p>Score PSI: <b>{drift.get('score_psi', 0):.4f}</b></p>")
    else:
        parts.append("<p>No earlier published run with a profile to compare with yet.</p>")
    farms = drift.get("farms") or {}
    parts.append(
        _table(
            [
                ("farms banned in the list in force", farms.get("banned_before", 0)),
                ("vanished", farms.get("vanished", 0)),
                ("shrank sharply", farms.get("shrank", 0)),
                ("share lost", f"{farms.get('share_lost', 0):.0%}"),
            ],
            ("farms since last night", "count"),
        )
    )
    lost = data.farm_loss[data.farm_loss["status"] != "kept"] if len(data.farm_loss) else None
    if lost is not None and len(lost):
        rows = [tuple(r) for r in lost.head(20).itertuples(index=False)]
        parts.append(_table(rows, ("farm", "banned before", "still banned", "status")))
    ages = data.bans_by_age
    fig = go.Figure(go.Bar(x=list(ages["band"]), y=list(ages["banned"]), marker_color="#c0392b"))
    fig.update_layout(height=300, xaxis_title="farm age (days since its first member signed up)")
    fig.update_yaxes(title_text="accounts banned")
    parts.append("<h3>Bans by farm age</h3>" + _figure(fig, "bans-by-farm-age"))
    return "".join(parts)
