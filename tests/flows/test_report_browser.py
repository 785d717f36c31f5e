"""The run report in a real browser: Debian's headless Chromium driven by Playwright.

The page is the shared ``small_world``'s report (3,000 accounts, published by its nightly run;
the demo's 20,000-account world draws the same sections with more members sampled per graph).
The browser runs with a fresh profile, no network (every request other than the report's own
file is aborted and recorded), and the test checks that each farm graph drew its nodes as SVG
points, that the other charts drew, that the console and the page raised no error, and that
no email or IP address is in the page's text or data. A screenshot of the page and one of the
first farm are kept under the test's temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, sync_playwright

from jobs.core.sections import ReportSettings
from jobs.report.html import page_data_text, pii_found

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Visit:
    """One page opened in the browser, with what it logged and tried to fetch."""

    def __init__(self, context: BrowserContext, url: str) -> None:
        self.errors: list[str] = []
        self.fetched: list[str] = []
        self.page: Page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._only_the_file(url))
        self.page.goto(url, wait_until="load")

    def _only_the_file(self, url: str):
        def handle(route) -> None:
            if route.request.url == url:
                route.continue_()
            else:
                self.fetched.append(route.request.url)
                route.abort()

        return handle

    def pii(self, source: Path) -> list[str]:
        """Emails and IP addresses in the rendered text and in the page file's own data."""
        text = self.page.inner_text("body")
        return pii_found(text) + pii_found(page_data_text(source.read_text()))


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium package")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 900},
            offline=True,
        )
        try:
            yield context
        finally:
            context.close()


def _report(home: Path) -> Path:
    (report,) = list((home / "bucket").glob("banlists/dt=*/run=*/report.html"))
    return report


def test_the_run_report_draws_every_farm_graph_without_errors_or_pii(
    small_world, browser_context, tmp_path
):
    report = _report(small_world.home)
    visit = Visit(browser_context, report.as_uri())
    page = visit.page
    page.wait_for_selector("#farm-graph-0 .scatterlayer path.point", timeout=30_000)
    farms = pd.read_parquet(report.parent / "farms.parquet")
    graphs = page.locator(".farm-graph .js-plotly-plot")
    assert graphs.count() == min(len(farms), ReportSettings().max_farms_drawn) > 1
    for index in range(graphs.count()):
        graph = page.locator(f"#farm-graph-{index}")
        nodes = graph.locator(".scatterlayer .trace path.point")
        assert nodes.count() >= 3, f"farm graph {index} drew {nodes.count()} nodes"
        legend = [t.strip() for t in graph.locator(".legendtext").all_text_contents()]
        assert "shared entity (keyed hash)" in legend, legend
        assert any(t.startswith("account: ") for t in legend), legend
    # the farm with the most bans comes first, its banned accounts drawn in the ban colour
    first = page.locator("#farm-graph-0")
    assert "account: ban" in first.locator(".legendtext").all_text_contents()
    for chart in ("actions-by-farm", "score-distribution", "bans-by-farm-age"):
        assert page.locator(f"#{chart} .main-svg").count() >= 1, chart
    assert page.locator("#actions-by-farm .barlayer path").count() >= 1
    assert visit.errors == []
    assert visit.fetched == []
    assert visit.pii(report) == []
    text = page.inner_text("body")
    assert "No drift alert" in text  # the first night has nothing to compare with
    assert "Entities that bind it" in text
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    farm = tmp_path / "farm.png"
    page.locator(".farm").first.screenshot(path=str(farm))
    # a 256-colour copy of the first farm, small enough for the README (docs/img/report.png)
    Image.open(farm).convert("RGB").quantize(256).save(farm, optimize=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert 10_000 < farm.stat().st_size < 300_000
    print(f"screenshots: {tmp_path / 'report.png'} {tmp_path / 'farm.png'}")


def test_the_browser_check_finds_an_ip_and_an_email_on_a_page(browser_context, tmp_path):
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        "<html><body><p>shares an IP with 12 accounts</p>"
        "<script>document.body.insertAdjacentHTML('beforeend',"
        " '<p>from 198.51.100.23 as ops' + '@' + 'example.org</p>')</script></body></html>"
    )
    visit = Visit(browser_context, leaky.as_uri())
    found = visit.pii(leaky)
    assert "ipv4: 198.51.100.23" in found
    assert "email: ops@example.org" in found
    assert visit.errors == []


def test_banlist_report_prints_where_the_report_is(small_world, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(small_world.home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    assert main(["banlist", "report"]) == 0
    assert capsys.readouterr().out.strip() == str(_report(small_world.home).resolve())
    assert main(["banlist", "report", "--run", small_world.run_id.removeprefix("run=")]) == 0
    assert capsys.readouterr().out.strip() == str(_report(small_world.home).resolve())
    assert main(["banlist", "report", "--run", "nosuchrun"]) == 1
    assert "no run 'nosuchrun'" in capsys.readouterr().err
