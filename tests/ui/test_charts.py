"""The console's charts and their tables: the numbers behind each (per-group rates, PSI over
drift checks, score histograms, experiment looks), open alerts, roles, and escaping."""

from __future__ import annotations

import re

import httpx
import pytest
from litestar import Litestar

from app.resources import Resources
from app.services.monitoring import SIGNAL_EVENTS, Monitoring, compliance_rates, histogram
from domain import events as ev
from domain.decide import model_stream
from tests.conftest import TokenFactory
from tests.http.governance_helpers import record_compliance
from tests.ui.console import ConsoleFactory, assert_escaped, console_factory
from tests.ui.monitored import WORKER, monitored, report


@pytest.fixture
def open_console(app: Litestar, auth: TokenFactory) -> ConsoleFactory:
    return console_factory(app, auth)


def test_rates_per_group_come_from_the_report_with_the_policys_ratio_floor() -> None:
    rates = compliance_rates(report())
    assert rates.rows == 8 and rates.decision_threshold == 0.5 and not rates.passed
    assert rates.min_parity_ratio == 0.8
    (region,) = rates.features
    shown = {g.group: (g.rows, g.selection_rate, g.true_positive_rate) for g in region.groups}
    assert shown["A"] == (4, 0.5, pytest.approx(2 / 3))
    assert shown["B"] == (4, 0.25, 0.5)
    assert region.ratio_floor == pytest.approx(0.4)  # 0.8 x the highest group's 0.5
    assert region.parity_difference == pytest.approx(0.25)
    assert region.parity_ratio == pytest.approx(0.5)


def test_a_histogram_puts_every_row_in_its_bin() -> None:
    rows = [
        {"version": 1, "lo": 0.0, "hi": 1.0, "bin": 0, "rows": 3},
        {"version": 1, "lo": 0.0, "hi": 1.0, "bin": 3, "rows": 1},
        {"version": 2, "lo": 0.0, "hi": 1.0, "bin": 3, "rows": 5},
    ]
    found = histogram("prod", {1: "champion v1", 2: "challenger v2"}, rows, 4)
    assert found.edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert found.arms == {"champion v1": [3, 0, 0, 1], "challenger v2": [0, 0, 0, 5]}
    assert found.rows == {"champion v1": 4, "challenger v2": 5}
    same = histogram("prod", {1: "champion v1"}, [{**rows[0], "hi": 0.0, "bin": 3}], 4)
    assert same.edges == [0.0, 0.0] and same.arms == {"champion v1": [3]}
    assert histogram("prod", {1: "champion v1"}, [], 4).arms == {}


def _table(html: str, caption: str) -> list[list[str]]:
    """The rows of the table whose caption starts so: each row's header, then its cells'
    data-value (or text when the cell has none)."""
    start = html.index(f"<caption>{caption}")
    body = html[html.index("<tbody>", start) : html.index("</tbody>", start)]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        head = re.search(r"<th[^>]*>(.*?)</th>", row, re.S)
        cells = re.findall(r'<td(?: data-value="([^"]*)")?>(.*?)</td>', row, re.S)
        rows.append([head.group(1) if head else "", *[v or t for v, t in cells]])
    return rows


async def test_score_distribution_bins_the_newest_numeric_scores_of_each_arm(
    client: httpx.AsyncClient, auth: TokenFactory, resources: Resources
) -> None:
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    model, _ = await resources.registry.model_state("fraud")
    found = await Monitoring(resources.pool).scores(model, "staging", resources.clock())
    assert found is not None
    assert found.edges[0] == pytest.approx(0.05) and found.edges[-1] == pytest.approx(0.95)
    champion, challenger = f"champion v{told['v1']}", f"challenger v{told['v3']}"
    assert found.rows == {champion: 4, challenger: 2}
    bins = {arm: {i: n for i, n in enumerate(c) if n} for arm, c in found.arms.items()}
    # (score - 0.05) / 0.9 * 20: 0.05 -> 0, 0.15 -> 2, 0.55 -> 11, 0.95 -> the last bin
    assert bins == {champion: {0: 1, 2: 2, 19: 1}, challenger: {11: 1, 19: 1}}
    assert await Monitoring(resources.pool).scores(model, "production", resources.clock()) is None


async def test_model_page_charts_come_with_tables_of_their_numbers(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    async with open_console("scorer") as console:
        page = (await console.get("/ui/models/fraud")).text
        scores_page = (await console.get("/ui/models/fraud/scores")).text
    assert "/ui/static/vendor/chart.js-4.6.2/chart.umd.min.js" in page
    assert page.count('data-chart="') == 2  # looks, PSI; the scores load after the page
    assert 'hx-get="/ui/models/fraud/scores" hx-trigger="load"' in page
    assert scores_page.count('data-chart="') == 1
    psi = _table(page, "Population stability index")
    assert [r[1:4] for r in psi] == [[f"v{told['v1']}", "staging", s] for s in ("info", "warning")]
    # features sorted: the hostile name sorts first ("<" before "a")
    assert [r[4:] for r in psi] == [["0.3", "0.05"], ["—", "0.12"]]
    assert 'data-limit="0.1"' in page and 'data-limit2="0.25"' in page  # the policy's PSI limits
    scores = _table(scores_page, "Scores in staging")
    dash = "\N{EN DASH}"
    assert scores[0][0] == f"0.05{dash}0.095" and scores[-1][0] == f"0.905{dash}0.95"
    assert scores[0][1:] == ["0.25", "0.0"] and scores[2][1:] == ["0.5", "0.0"]
    assert scores[11][1:] == ["0.0", "0.5"] and scores[19][1:] == ["0.25", "0.5"]
    assert "2 (50.0 %)" in scores_page
    looks = _table(page, f"Effect of v{told['v3']} against v{told['v1']}")
    assert [r[:4] for r in looks] == [
        ["1", "0.1", "unbounded", "unbounded"],
        ["2", "0.05", "-0.01", "0.11"],
    ]
    assert "always-valid 95 % interval" in page
    # the experiment's settings and latest look, beside the chart
    assert "champion v1, challenger v3" in page and "20.0 %" in page
    assert "0.05 [-0.01, 0.11], p 0.2" in page and "running" in page
    # open alerts: v1's auc (its latest performance check); not the null rate a later clean
    # check closed, nor v2's (no longer serving)
    alerts = page[page.index('id="alerts"') : page.index("<h2>Experiments")]
    assert "auc" in alerts and "0.61" in alerts
    assert "null_rate" not in alerts and "brier" not in alerts
    assert '<a class="alert" href="#alerts">1</a>' in page


async def test_models_list_counts_open_performance_and_data_quality_alerts(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await monitored(client, resources, await auth("ci", "pipeline"))
    async with open_console("auditor") as console:
        page = (await console.get("/ui")).text
    fraud = page[page.index('href="/ui/models/fraud"') :]
    fraud = fraud[: fraud.index("</tr>")]
    assert '<a class="alert" href="/ui/models/fraud#alerts">1</a>' in fraud
    churn = page[page.index('href="/ui/models/churn"') :]
    assert "#alerts" not in churn[: churn.index("</tr>")]


async def test_an_open_alert_older_than_the_charts_window_is_still_listed(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    """The model page reads its newest SIGNAL_EVENTS monitoring events for its charts; an
    open alert older than those (drift checks since, no performance check) stays listed, as
    the models list counts it (the page once took its alerts from the window only)."""
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    checks = [
        ev.DriftChecked(
            name="fraud",
            version=told["v1"],
            severity="info",
            features={"amount": {"psi": 0.01}},
            environment="staging",
            rows=300,
            report_sha256="d" * 64,
            source="log",
        )
        for _ in range(SIGNAL_EVENTS)
    ]
    await resources.store.append(model_stream("fraud"), checks, meta=WORKER, expected_version=None)
    await resources.projector.catch_up()
    async with open_console("auditor") as console:
        page = (await console.get("/ui/models/fraud")).text
        listed = (await console.get("/ui")).text
    alerts = page[page.index('id="alerts"') : page.index("<h2>Experiments")]
    assert "auc" in alerts and "0.61" in alerts
    assert '<a class="alert" href="#alerts">1</a>' in page
    assert '<a class="alert" href="/ui/models/fraud#alerts">1</a>' in listed


async def test_version_page_charts_rates_per_group_for_the_roles_that_read_reports(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    url = f"/ui/models/fraud/versions/{told['v3']}"
    async with open_console("approver") as console:
        page = (await console.get(url)).text
    rates = _table(page, "Selection rate and true positive rate per group of region")
    by_group = {r[0]: r[1:] for r in rates}
    assert by_group == {
        "A": ["4", "0.5", "0.6666666666666666"],
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;": ["4", "0.25", "0.5"],
    }
    assert 'data-limit="0.4"' in page  # 0.8 x 0.5: the lowest selection rate allowed
    assert_escaped(page)
    await record_compliance(resources, "fraud", told["v1"], passed=True)  # never stored
    async with open_console("auditor") as console:
        missing = (await console.get(f"/ui/models/fraud/versions/{told['v1']}")).text
    assert f"Rates per group cannot be shown: no artifact with sha256 {'c' * 64}." in missing
    async with open_console("scorer") as console:
        scorer = (await console.get(url)).text
    assert "Selection rate and true positive rate" not in scorer
    assert "shown to the roles that may read reports" in scorer


async def test_hostile_feature_group_metric_and_reason_come_back_escaped(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    async with open_console("admin") as console:
        for url in ("/ui/models/fraud", f"/ui/models/fraud/versions/{told['v3']}"):
            response = await console.get(url)
            assert response.status_code == 200, url
            assert_escaped(response.text, url)
            # never inside an attribute or script either: charts read the table's text
            assert 'alert("x")' not in response.text, url
