"""The console in a real browser: the system's Chromium, driven by Playwright, against the
app served over TCP. Asserts on what a person sees; screenshots go to the test's folder
(and, with MODEL_LEDGER_SCREENSHOTS=DIR, to DIR as well: docs/screenshots is made so)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from litestar import Litestar

from app.resources import Resources
from tests.conftest import TokenFactory
from tests.ui.monitored import monitored

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no system Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
async def base_url(app: Litestar) -> AsyncIterator[str]:
    """The running app served on a free loopback port by uvicorn, in this event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", ws="none", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server stopped before it started"
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_an_auditor_and_an_approver_walk_the_console_in_chromium(
    base_url: str,
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    tmp_path: Path,
) -> None:
    from playwright.async_api import Page, async_playwright, expect

    # the console's story, monitored: drift checks, alerts, an experiment, predictions, and a
    # compliance report whose group and feature names are hostile
    told = await monitored(client, resources, await auth("ci", "pipeline"))
    await resources.checkpointer.sign_head()
    auditor = _token(await auth("auditor", "ada"))
    approver = _token(await auth("approver", "bea"))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    publish = os.environ.get("MODEL_LEDGER_SCREENSHOTS")

    async def shot(page: Page, name: str) -> None:
        path = shots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        if publish:
            shutil.copy(path, Path(publish) / path.name)

    async def sign_in(page: Page, token: str) -> None:
        await page.goto(f"{base_url}/ui")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            page = await (await browser.new_context(viewport=DESKTOP)).new_page()
            # a Content-Security-Policy violation (or any script error) is logged as an error
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            # a hostile name that ran as script would open a dialog
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            await sign_in(page, auditor)
            await expect(page.get_by_role("heading", name="Models")).to_be_visible()
            await expect(page.get_by_text("Signed in as ada (auditor)")).to_be_visible()
            fraud = page.get_by_role("row").filter(has_text="fraud")
            await expect(fraud).to_contain_text("champion v1")
            await shot(page, "models")

            await page.get_by_role("link", name="fraud", exact=True).click()
            # a chart: Chart.js drew on a canvas beside its table, whose numbers it plotted
            psi = page.locator("figure.chart").filter(has_text="PSI of each drift check")
            await expect(psi.locator("canvas")).to_be_visible()
            box = await psi.locator("canvas").bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 150, box
            table = psi.locator("table")
            cells = await table.locator("tbody tr").first.locator("td").all_text_contents()
            assert cells[-2:] == ["0.3000", "0.0500"], cells
            # the table stays reachable (folded under its summary once the chart is drawn)
            await psi.get_by_text("PSI of each drift check as a table").click()
            await expect(table).to_be_visible()
            await expect(table.locator("tbody tr").nth(1)).to_contain_text("0.1200")
            scores = page.locator("figure.chart").filter(has_text="Score distribution in staging")
            await expect(scores.locator("canvas")).to_be_visible()
            await shot(page, "model")

            await page.get_by_role("link", name="Timeline of every event").click()
            await expect(page.get_by_role("heading", name="Timeline of fraud")).to_be_visible()
            demotion = page.locator(f"li:has-text('caused by drift.detected #{told['alert']}')")
            await expect(demotion).to_contain_text("demotion")
            await shot(page, "timeline")

            await page.get_by_role("link", name="fraud", exact=True).click()
            await page.get_by_role("link", name="This model at another instant").click()
            await expect(page.get_by_role("heading", name="fraud as it was")).to_be_visible()
            # the slider: htmx fetches the instant as it moves (and puts it in the address)
            await page.get_by_label("Or slide through the log").fill(str(told["before_alert"]))
            await expect(page.get_by_text("challenger v2 (canary, 10.0 %)")).to_be_visible()
            assert f"as_of={told['before_alert']}" in page.url, page.url
            await shot(page, "time-travel")
            await page.get_by_role("link", name="What changed since then").click()
            await expect(
                page.get_by_role("row").filter(has_text="/fraud/deployments/staging/challenger")
            ).to_contain_text("changed")
            await shot(page, "diff")

            await page.goto(f"{base_url}/ui/models/fraud/versions/{told['v1']}")
            await page.get_by_role("link", name="Dossier (model card)").click()
            await expect(
                page.get_by_role("heading", name="Model card: fraud version 1")
            ).to_be_visible()
            await expect(page.get_by_role("link", name="Download as Markdown")).to_be_visible()
            await page.emulate_media(media="print")
            await expect(page.get_by_role("link", name="Time travel")).to_be_hidden()
            await page.emulate_media(media="screen")
            await shot(page, "dossier")

            await page.get_by_role("link", name="Verify").click()
            await expect(page.get_by_text("Latest signed checkpoint")).to_be_visible()
            await page.get_by_role("button", name="Verify now").click()
            await expect(page.get_by_role("heading", name="Chain status: intact")).to_be_visible()
            # htmx swapped the report in: no navigation to the form's URL
            assert page.url == f"{base_url}/ui/verify", page.url
            await expect(page.get_by_text("model-ledger verify --expect-head")).to_be_visible()
            await shot(page, "verify")
            assert not errors, errors
            assert not dialogs, dialogs

            phone = await (await browser.new_context(viewport=PHONE)).new_page()
            await sign_in(phone, approver)
            await phone.goto(f"{base_url}/ui/models/fraud/versions/{told['v3']}")
            await expect(phone.get_by_text("Approvals: 0 count")).to_be_visible()
            rates = phone.locator("figure.chart").filter(has_text="per group of region")
            await expect(rates.locator("canvas")).to_be_visible()
            await phone.get_by_label("Approve").check()
            await phone.get_by_label("Comment (recorded in the log)").fill("evidence reviewed")
            await phone.get_by_role("button", name="Record decision").click()
            await expect(phone.get_by_text("Your decision was recorded")).to_be_visible()
            await expect(phone.get_by_text("Approvals: 1 count")).to_be_visible()
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the version page scrolls sideways: {width}px"
            await shot(phone, "approve-phone")
        finally:
            await browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "approve-phone.png",
        "diff.png",
        "dossier.png",
        "model.png",
        "models.png",
        "time-travel.png",
        "timeline.png",
        "verify.png",
    ]
