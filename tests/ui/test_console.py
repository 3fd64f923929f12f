"""The console over HTTP: sign-in and sessions, every page and form, CSRF, escaping."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar

from app.resources import Resources
from app.ui import pages
from app.ui.sessions import Sessions
from tests.conftest import TokenFactory
from tests.ui.console import (
    HOSTILE,
    ConsoleFactory,
    assert_escaped,
    console_factory,
    csrf_of,
    story,
)


@pytest.fixture
def open_console(app: Litestar, auth: TokenFactory) -> ConsoleFactory:
    return console_factory(app, auth)


def _cookie(response: httpx.Response, name: str) -> str:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


async def test_sign_in_opens_a_server_side_session_in_a_strict_cookie(
    app: Litestar, resources: Resources, open_console: ConsoleFactory
) -> None:
    sessions: Sessions = app.state.ui_sessions
    async with open_console("auditor", "ada", signed_in=False) as console:
        form = await console.get("/ui/sign-in")
        assert form.status_code == 200
        assert 'for="token"' in form.text and "API token" in form.text
        pre = _cookie(form, "ml_sign_in").lower()
        assert "httponly" in pre and "samesite=strict" in pre and "secure" not in pre
        signed_in = await console.sign_in()
        assert signed_in.headers["location"] == "/ui"
        session = _cookie(signed_in, "ml_session")
        flags = session.lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert "secure" not in flags  # plain HTTP here; see the TLS test
        assert console.token not in session  # only a random id travels
        assert await sessions.count(resources.pool) == 1
        home = await console.get("/ui")
        assert home.status_code == 200
        assert "script-src 'self'" in home.headers["content-security-policy"]
        assert home.headers["cache-control"] == "no-store"
        assert "Signed in as <strong>ada</strong> (auditor)" in home.text


async def test_the_session_cookie_is_secure_over_tls(open_console: ConsoleFactory) -> None:
    async with open_console("ci", base_url="https://ledger.test", signed_in=False) as console:
        response = await console.sign_in()
        assert "secure" in _cookie(response, "ml_session").lower()


async def test_sign_in_refuses_a_bad_token_and_a_form_without_its_csrf_token(
    app: Litestar, resources: Resources, open_console: ConsoleFactory
) -> None:
    sessions: Sessions = app.state.ui_sessions
    async with open_console("ci", signed_in=False) as console:
        form = await console.get("/ui/sign-in")
        wrong = await console.http.post(
            "/ui/sign-in", data={"csrf_token": csrf_of(form.text), "token": "mlt_nope_nope"}
        )
        assert wrong.status_code == 401
        assert "not valid" in wrong.text
        forged = await console.http.post(
            "/ui/sign-in", data={"csrf_token": "guessed", "token": console.token}
        )
        assert forged.status_code == 403
        assert "ml_session" not in forged.headers.get("set-cookie", "")
        assert await sessions.count(resources.pool) == 0


async def test_pages_send_the_signed_out_to_sign_in_and_back(
    open_console: ConsoleFactory,
) -> None:
    async with open_console("auditor", signed_in=False) as console:
        for path in ("/ui", "/ui/verify", "/ui/models/fraud", "/ui/registry"):
            response = await console.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/ui/sign-in?next=")
        back = await console.sign_in("/ui/verify")
        assert back.headers["location"] == "/ui/verify"
        for foreign in ("https://evil.example/", "//evil.example/ui"):
            form = await console.get("/ui/sign-in", next=foreign)
            assert 'name="next" value="/ui"' in form.text


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    open_console: ConsoleFactory,
) -> None:
    async with open_console("approver") as console:
        cookie = console.http.cookies["ml_session"]
        refused = await console.post("/ui/sign-out", {}, csrf=False)
        assert refused.status_code == 403
        assert "CSRF" in refused.text
        assert (await console.get("/ui")).status_code == 200
        out = await console.post("/ui/sign-out", {})
        assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in"
        assert (await console.get("/ui")).status_code == 303
        console.http.cookies.set("ml_session", cookie, domain="ledger.test", path="/ui")
        assert (await console.get("/ui")).status_code == 303  # the old id is dead


async def test_a_session_expires_when_idle_and_after_its_lifetime(
    app: Litestar, open_console: ConsoleFactory
) -> None:
    sessions: Sessions = app.state.ui_sessions
    now = [1_000.0]
    sessions.clock = lambda: now[0]
    async with open_console("auditor") as console:
        now[0] += sessions.idle_seconds - 1
        assert (await console.get("/ui")).status_code == 200  # use restarts the idle time
        now[0] += sessions.idle_seconds + 1
        expired = await console.get("/ui")
        assert expired.status_code == 303 and "/ui/sign-in" in expired.headers["location"]
    async with open_console("auditor") as console:
        opened = now[0]
        step = sessions.idle_seconds - 1  # never idle long enough to expire that way
        while now[0] + step - opened <= sessions.max_seconds:
            now[0] += step
            assert (await console.get("/ui")).status_code == 200
        now[0] += step
        assert (await console.get("/ui")).status_code == 303


async def test_revoking_the_token_ends_its_sessions(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    open_console: ConsoleFactory,
    resources: Resources,
) -> None:
    admin = await auth("admin")
    async with open_console("auditor", "to-revoke") as console:
        assert (await console.get("/ui")).status_code == 200
        token_id = await resources.pool.fetchval(
            "SELECT token_id FROM tokens WHERE subject = 'to-revoke'"
        )
        revoked = await client.delete(
            f"/v1/tokens/{token_id}", params={"reason": "left"}, headers=admin
        )
        assert revoked.status_code in (200, 204), revoked.text
        assert (await console.get("/ui")).status_code == 303
    stored = (
        "SELECT count(*) FROM console_sessions s JOIN tokens t USING (token_sha256)"
        " WHERE t.subject = 'to-revoke'"
    )
    assert await resources.pool.fetchval(stored) == 0


async def test_models_list_shows_tier_serving_drift_and_searches_by_name_or_tag(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("scorer") as console:
        page = (await console.get("/ui")).text
        assert "2 of 2 models" in page
        assert 'href="/ui/models/fraud"' in page and 'href="/ui/models/churn"' in page
        row = page[page.index('href="/ui/models/fraud"') :]
        row = row[: row.index("</tr>")]
        assert "high" in row and "champion v1" in row and '<strong class="alert">1</strong>' in row
        by_tag = (await console.get("/ui", q="PAYMENTS")).text
        assert "1 of 2 models" in by_tag and "/ui/models/fraud" in by_tag
        assert "/ui/models/churn" not in by_tag
        assert "0 of 2 models" in (await console.get("/ui", q="nothing-like-it")).text


async def test_model_page_shows_deployments_and_versions(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("ci") as console:
        page = await console.get("/ui/models/fraud")
        assert page.status_code == 200
        text = page.text
        assert "staging" in text and "demotion" in text
        assert "v3" in text and 'href="/ui/models/fraud/versions/3"' in text
        # the timeline is for auditors and admins, as the history route is: no link for ci
        assert "/ui/models/fraud/timeline" not in text
        missing = await console.get("/ui/models/nope")
        assert missing.status_code == 404 and "no model named" in missing.text
    async with open_console("auditor") as console:
        assert "/ui/models/fraud/timeline" in (await console.get("/ui/models/fraud")).text


async def test_timeline_names_who_role_when_what_and_the_cause(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("auditor") as console:
        page = (await console.get("/ui/models/fraud/timeline")).text
        assert "model.registered" in page and "by <strong>pipeline</strong>" in page
        assert '<span class="role">(ci)</span>' in page
        demotion = page[page.index("deployment.changed") :]
        # the demotion names the alert that caused it, linked within the page
        caused = re.search(r'caused by <a href="#e(\d+)">drift.detected #(\d+)</a>', page)
        assert caused and int(caused.group(1)) == told["alert"] == int(caused.group(2))
        assert "demotion" in demotion
        only = (await console.get("/ui/models/fraud/timeline", type="drift.detected")).text
        assert only.count("<li id=") == 1
        assert '<option value="drift.detected" selected>' in only


async def test_a_long_timeline_comes_a_page_at_a_time(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    monkeypatch.setattr(pages, "TIMELINE_PAGE", 1)
    async with open_console("auditor") as console:
        newest = (await console.get("/ui/models/fraud/timeline")).text
        assert newest.count("<li id=") == 1 and "1 of 14 events" in newest
        # the demotion's cause is on an older page: the link goes there
        assert (
            f'caused by <a href="/ui/models/fraud/timeline?as_of={told["alert"]}#e{told["alert"]}"'
            in newest
        )
        older = re.search(r'href="(/ui/models/fraud/timeline\?as_of=\d+)">Older events', newest)
        assert older
        page = (await console.get(older.group(1))).text
        assert f'<li id="e{told["alert"]}">' in page and "drift.detected" in page
        first = (await console.get("/ui/models/fraud/timeline", as_of="2")).text
        assert "model.registered" in first and "Older events" not in first


async def test_version_page_shows_gates_certificate_and_approvals_that_count(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("auditor") as console:
        page = (await console.get(f"/ui/models/fraud/versions/{told['v3']}")).text
        assert "Gates for production" in page and "missing" in page
        assert "Largest difference from the artifact" in page
        assert "Approvals: 0 count, the policy needs" in page
        assert "Compared with v1, the champion in staging" in page
        assert '<tr class="change-changed"><th scope="row"><code>/artifact_sha256</code>' in page
        champion = (await console.get("/ui/models/fraud/versions/1")).text
        assert "nothing to compare with" in champion
        assert "Your decision" not in page  # only approvers decide


async def test_an_approver_decides_from_the_evidence_and_four_eyes_refusals_show(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    url = f"/ui/models/fraud/versions/{told['v3']}"
    async with open_console("approver", "bea") as console:
        page = (await console.get(url)).text
        assert "Your decision" in page and 'name="csrf_token"' in page
        head, _ = await resources.store.head()
        forged = await console.post(f"{url}/approvals", {"decision": "approve"}, csrf=False)
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert (await resources.store.head())[0] == head
        done = await console.post(f"{url}/approvals", {"decision": "approve", "comment": "ok"})
        assert done.status_code == 303, done.text
        shown = (await console.get(done.headers["location"])).text
        assert "Your decision was recorded at position" in shown
        assert "Approvals: 1 count" in shown
        assert "bea" in shown
        bad = await console.post(f"{url}/approvals", {"decision": "maybe"})
        assert bad.status_code == 422 and "choose approve or reject" in bad.text
    # four eyes: the approver who registered the version may not approve it
    async with open_console("approver", "pipeline") as console:
        refused = await console.post(f"{url}/approvals", {"decision": "approve"})
        assert refused.status_code == 403
        assert "Refused: pipeline registered or requested version" in refused.text
    api = (
        await client.get(f"/v1/models/fraud/versions/{told['v3']}", headers=await auth("auditor"))
    ).json()
    assert [(a["approver"], a["counts"]) for a in api["approvals"]] == [("bea", True)]


async def test_dossier_renders_as_tables_prints_and_downloads_as_markdown(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("auditor") as console:
        version = (await console.get("/ui/models/fraud/versions/1")).text
        assert 'href="/ui/models/fraud/versions/1/dossier"' in version
        page = (await console.get("/ui/models/fraud/versions/1/dossier")).text
        assert "<h1>Model card: fraud version 1</h1>" in page
        assert "<h2>Native build and parity certificate</h2>" in page
        assert "<h2>Deployment history</h2>" in page and "<td>demotion</td>" in page
        assert "<td>promotion</td>" in page
        download = await console.get("/ui/models/fraud/versions/1/dossier.md")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/markdown")
        assert "attachment" in download.headers["content-disposition"]
        api = await client.get(
            "/v1/models/fraud/versions/1/dossier",
            headers={**await auth("auditor"), "Accept": "text/markdown"},
        )
        # the same card as the API's, but for the instant each was built at
        strip = re.compile(r"\| As of \|.*\|")
        assert strip.sub("", download.text) == strip.sub("", api.text)
    async with open_console("ci") as console:
        assert "/dossier" not in (await console.get("/ui/models/fraud/versions/1")).text


async def test_promotion_dry_run_shows_the_gates_and_records_nothing(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("ci") as console:
        version = (await console.get(f"/ui/models/fraud/versions/{told['v3']}")).text
        assert "Dry-run a promotion to" in version
        head, _ = await resources.store.head()
        plan = await console.get(
            f"/ui/models/fraud/versions/{told['v3']}/plan", environment="production"
        )
        assert plan.status_code == 200
        assert "A promotion now would be refused" in plan.text
        assert re.search(r"approvals</th><td><span class=\"bad\">fails</span>", plan.text)
        staging = await console.get(
            f"/ui/models/fraud/versions/{told['v3']}/plan", environment="staging"
        )
        assert "Every gate passes" in staging.text
        assert (await resources.store.head())[0] == head
        missing = await console.get("/ui/models/nope/versions/1/plan")
        assert missing.status_code == 404
    async with open_console("auditor") as console:
        assert "Dry-run" not in (await console.get(f"/ui/models/fraud/versions/{told['v3']}")).text


async def test_verify_page_shows_head_checkpoint_witness_and_verifies_now(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await story(client, resources, await auth("ci", "pipeline"))
    await resources.checkpointer.sign_head()
    await resources.checkpointer.drain()
    async with open_console("auditor") as console:
        page = (await console.get("/ui/verify")).text
        head, head_hash = await resources.store.head()
        assert f'position {head}, hash <code class="hash">{head_hash.hex()}</code>' in page
        assert "#1 at position" in page
        assert f"model-ledger verify --expect-head {head}:{head_hash.hex()}" in page
        assert "model-ledger verify audit.jsonl --public-key " in page
        assert "Chain status" not in page
        ran = (await console.get("/ui/verify", run="true")).text
        assert 'Chain status: <span class="ok">intact</span>' in ran
        assert f"<dd>{head}</dd>" in ran  # events checked


async def test_time_travel_shows_the_registry_before_the_alert_and_the_diff(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    told = await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("scorer") as console:
        before = (await console.get("/ui/registry", as_of=str(told["before_alert"]))).text
        assert f"As of position <strong>{told['before_alert']}</strong>" in before
        assert "challenger v2 (canary, 10.0 %)" in before
        now = (await console.get("/ui/registry")).text
        assert "challenger v2" not in now
        diff = (await console.get("/ui/registry/diff", **{"from": str(told["before_alert"])})).text
        row = '<tr class="change-changed"><th scope="row"><code>'
        assert f"{row}/fraud/deployments/staging/challenger</code>" in diff
        assert "<del>2</del>" in diff and "<ins>null</ins>" in diff
        one = (
            await console.get("/ui/registry", model="fraud", as_of=str(told["before_alert"]))
        ).text
        assert "<h1>fraud as it was</h1>" in one and "challenger v2" in one
        assert "/ui/models/churn" not in one
        assert 'type="range"' in one and f'value="{told["before_alert"]}"' in one
        unknown = await console.get("/ui/registry", model="nope")
        assert unknown.status_code == 404 and "no model named" in unknown.text
        bad = await console.get("/ui/registry", as_of="yesterday")
        assert bad.status_code == 422 and "RFC 3339" in bad.text


async def test_hostile_text_comes_back_escaped_everywhere(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    # subjects and model names are restricted to safe characters; the rest is free text
    told = await story(client, resources, await auth("ci", "pipeline"), text=HOSTILE)
    version = f"/ui/models/fraud/versions/{told['v3']}"
    async with open_console("approver", "bea") as console:
        done = await console.post(
            f"{version}/approvals", {"decision": "reject", "comment": HOSTILE}
        )
        assert done.status_code == 303, done.text
        assert_escaped((await console.get(version)).text)
    async with open_console("admin") as console:
        for url, params in [
            ("/ui", {}),
            ("/ui", {"q": HOSTILE}),
            ("/ui/models/fraud", {}),
            ("/ui/models/fraud/timeline", {}),
            ("/ui/registry", {}),
            ("/ui/registry/diff", {"from": "1"}),
            (f"{version}/dossier", {}),
        ]:
            response = await console.get(url, **params)
            assert response.status_code == 200, (url, response.status_code)
            assert_escaped(response.text, url)
        unknown_type = await console.get("/ui/models/fraud/timeline", type=HOSTILE)
        assert "<script>alert" not in unknown_type.text
        assert "No events of this type." in unknown_type.text
        plan = await console.get(f"{version}/plan", environment=HOSTILE)
        assert "<script>" not in plan.text
        refused = await console.get("/ui/registry", as_of=HOSTILE)
        assert "<script>alert" not in refused.text
        nul = await console.post(
            f"{version}/approvals", {"decision": "approve", "comment": "a\x00b"}
        )
        assert nul.status_code in (400, 403, 422) and "<script>" not in nul.text


async def test_every_console_link_leads_somewhere_and_static_files_are_vendored(
    client: httpx.AsyncClient,
    auth: TokenFactory,
    resources: Resources,
    open_console: ConsoleFactory,
) -> None:
    await story(client, resources, await auth("ci", "pipeline"))
    async with open_console("admin") as console:
        seen: set[str] = set()
        todo = ["/ui"]
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            response = await console.get(url)
            assert response.status_code == 200, (url, response.status_code)
            for ref in re.findall(r'(?:href|src)="(/ui[^"#]*)"', response.text):
                path = urlsplit(ref.replace("&amp;", "&"))
                if path.path.startswith("/ui/static/"):
                    seen.add(ref)
                    static = await console.http.get(path.path)
                    assert static.status_code == 200, ref
                else:
                    todo.append(ref.replace("&amp;", "&"))
        assert {"/ui/verify", "/ui/registry", "/ui/models/fraud/timeline"} <= seen
    anonymous = await client.get("/ui/static/vendor/htmx-2.0.11/LICENSE")
    assert anonymous.status_code == 200 and "Zero-Clause BSD" in anonymous.text
    charts = await client.get("/ui/static/vendor/chart.js-4.6.2/LICENSE.md")
    assert charts.status_code == 200 and "MIT License" in charts.text
    assert "/ui/static/charts.js" in seen and "/ui/models/fraud/scores" in seen
