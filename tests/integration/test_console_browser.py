"""The web console in a real browser: Debian's chromium driven by Playwright, headless.

One walk through the console against the real platform (registry, gateway, deployer,
invoker, log-ingest, scheduler on real Kafka, PostgreSQL and Docker): sign in, create a
function from a template, edit it in the code editor (toolbelt completion), deploy a
broken version and see its line marked, deploy a working one with progress, test-invoke
it, find the call's log line in Logs and follow it to its invocation, schedule it, add a
domain and a secret, and see Home's plot fill. Screenshots of every page are saved to
$FNBUS_CONSOLE_SCREENSHOTS when set (`FNBUS_CONSOLE_SCREENSHOTS=docs/console` refreshes
the ones README.md shows), else to a temporary directory, so a test run leaves the
tree as it found it.

Needs the built bundle (services/gateway/console/dist/, `make up` / `make test` build it)
and /usr/bin/chromium (deploy/local/install.sh installs it).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import wait_deployed
from tests.integration.mgmt_support import Account, create_account

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("FNBUS_CONSOLE_SCREENSHOTS")
             or tempfile.mkdtemp(prefix="fnbus-console-shots-"))
SHOTS.mkdir(parents=True, exist_ok=True)
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = ROOT / "services" / "gateway" / "console" / "dist" / "console.js"

playwright_api = pytest.importorskip("playwright.async_api")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium (deploy/local/install.sh)", allow_module_level=True)
if not BUNDLE.exists():
    pytest.skip("needs the console bundle (deploy/stack.sh console_build)", allow_module_level=True)

expect = playwright_api.expect

BROKEN = """// a syntax error on line 3
function lambda(input, callback) {
  const x = ;
  callback(null, x);
}
"""


def working(marker: str) -> str:
    return f"""// edited in the browser
function lambda(input, callback) {{
  console.info('{marker} got ' + JSON.stringify(input.payload));
  callback(null, {{ greeting: 'hello from the console' }});
}}
"""


@pytest.fixture
async def page(platform: dict[str, str]) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = await browser.new_context(viewport={"width": 1360, "height": 900})
        pg = await context.new_page()
        problems: list[str] = []
        # Report every CSP violation with where it came from (a style or script the policy blocks).
        await context.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) => console.error("
            "'CSP violation', e.violatedDirective, e.sourceFile, e.lineNumber, e.columnNumber, e.sample))")
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        yield pg
        await browser.close()
        # No script errors and no CSP violations (the gateway's policy: only console.js, console.css).
        assert not [p for p in problems
                    if "CSP violation" in p or "Content Security Policy" in p or "Uncaught" in p], problems


async def shot(pg: object, name: str) -> None:
    await pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)  # type: ignore[attr-defined]


async def replace_code(pg: object, code: str) -> None:
    editor = pg.locator(".cm-content")  # type: ignore[attr-defined]
    await editor.click()
    await pg.keyboard.press("Control+A")  # type: ignore[attr-defined]
    await pg.keyboard.press("Delete")  # type: ignore[attr-defined]
    await pg.keyboard.insert_text(code)  # type: ignore[attr-defined]


async def test_console_walkthrough(page: object, platform: dict[str, str], scheduler_url: str,
                                   settings: Settings, run_id: str) -> None:
    pg = page
    account: Account = await create_account(settings, platform["gateway"], f"console{run_id}")
    marker = f"marker-{run_id}"

    # Sign in: the key is kept in sessionStorage, never in the URL or localStorage.
    await pg.goto(f"{platform['gateway']}/console/")
    await pg.get_by_label("Account id").fill(account.id)
    await pg.get_by_label("API key").fill("wrong-key")
    await pg.get_by_role("button", name="Sign in").click()
    await expect(pg.get_by_role("alert")).to_be_visible()  # the API's error, in place
    await pg.get_by_label("API key").fill(account.admin_key)
    await pg.get_by_label("API key").press("Enter")  # keyboard submits
    await expect(pg.get_by_role("heading", name="Home")).to_be_visible()
    assert await pg.evaluate("Object.keys(localStorage).length") == 0

    # Create from a template: template -> event -> name and description -> domains.
    await pg.get_by_role("link", name="Functions").click()
    await pg.get_by_role("link", name="Create function").click()
    await pg.get_by_role("button", name=re.compile(r"^Hello World nodejs")).click()
    await pg.get_by_role("button", name="Next").click()
    await pg.get_by_label("Name").fill("greeter")
    await pg.get_by_label("Description").fill("made in the browser test")
    await shot(pg, "functions-wizard")
    await pg.get_by_role("button", name="Next").click()
    await pg.get_by_label(re.compile("Domains to allowlist")).fill("api.example.com")
    await pg.get_by_role("button", name="Create function").click()
    await expect(pg.get_by_role("heading", name=re.compile("greeter"))).to_be_visible()
    await expect(pg.locator(".cm-content")).to_contain_text("function lambda")

    # A broken version: the deploy fails and the editor marks the line it names.
    await replace_code(pg, BROKEN)
    await pg.get_by_role("button", name="Save and deploy").click()
    await expect(pg.get_by_test_id("deploy-progress")).to_contain_text("Failed", timeout=90_000)
    await expect(pg.locator(".cm-failure-line")).to_have_count(1)
    await expect(pg.locator(".cm-failure-line")).to_contain_text("const x = ;")

    # The working version; Toolbelt completion comes from the typings.
    await replace_code(pg, working(marker))
    await pg.keyboard.type("// Toolbelt.Sec")
    completion = pg.locator(".cm-tooltip-autocomplete")
    await expect(completion).to_contain_text("SecretClient")
    await pg.keyboard.press("Escape")
    await pg.get_by_role("button", name="Save and deploy").click()
    await expect(pg.get_by_test_id("deploy-progress")).to_contain_text("Deploying")
    await expect(pg.get_by_test_id("deploy-progress")).to_contain_text("Deployed", timeout=120_000)
    await expect(pg.locator(".cm-failure-line")).to_have_count(0)

    # Test panel: the payload is prefilled with the template's sample.
    payload = pg.get_by_label("Payload (JSON)")
    await expect(payload).not_to_have_value("")
    await payload.fill('{"who": "browser"}')
    await pg.get_by_role("button", name="Run test").click()
    result = pg.get_by_test_id("test-result")
    await expect(result).to_contain_text("SUCCEEDED", timeout=60_000)
    await expect(result).to_contain_text("hello from the console")
    await expect(result.locator(".log-lines")).to_contain_text(f'{marker} got {{"who":"browser"}}')
    await shot(pg, "functions-editor")

    # Logs: search by text (log-ingest stores lines a moment later), then follow the
    # line's link to its invocation.
    await pg.get_by_role("link", name="Logs", exact=True).click()
    await pg.get_by_label("Text").fill(marker)
    results = pg.get_by_test_id("results")
    for _ in range(40):
        await pg.get_by_role("button", name="Search").click()
        if await results.get_by_text(marker).count():
            break
        await pg.wait_for_timeout(500)
    await expect(results).to_contain_text(marker)
    await shot(pg, "logs")
    await results.get_by_role("link", name="invocation").first.click()
    assert "activation_id=" in pg.url
    await expect(pg.get_by_label("Invocation")).not_to_have_value("")
    await expect(results).to_contain_text(marker)
    # Live tail: a call made elsewhere shows up while the page is open.
    await pg.get_by_label("Invocation").fill("")
    await pg.get_by_role("button", name="Live tail").click()
    await pg.wait_for_timeout(500)
    async with account.client() as c:
        listed = (await c.get("/lambdas")).json()
        greeter = next(x for x in listed if x["name"] == "greeter")
        r = await c.post(f"/lambdas/{greeter['id']}/test", json={"payload": {"tail": True}})
        assert r.status_code == 200, r.text
    await expect(pg.get_by_test_id("tail")).to_contain_text(f'{marker} got {{"tail":true}}', timeout=15_000)
    await pg.get_by_role("button", name="Stop live tail").click()

    # Schedules: productive-function picker, cron preview in local time.
    await pg.get_by_role("link", name="Schedules").click()
    await pg.get_by_label(re.compile("^Function")).select_option(label="greeter")
    await pg.get_by_label(re.compile("^Cron expression")).fill("61 * * * *")
    await expect(pg.get_by_role("alert")).to_be_visible()
    await expect(pg.get_by_text("Valid examples")).to_be_visible()
    await pg.get_by_label(re.compile("^Cron expression")).fill("*/5 * * * *")
    await expect(pg.get_by_test_id("cron-next").locator("li")).to_have_count(5)
    await pg.get_by_label("Payload (JSON)").fill('{"from": "schedule"}')
    await pg.get_by_role("button", name="Create schedule").click()
    await expect(pg.locator("tbody tr")).to_contain_text("greeter")
    await expect(pg.locator("tbody tr")).to_contain_text("*/5 * * * *")
    await shot(pg, "schedules")

    # Deployments: version and state; roll back to the version deployed before the last.
    async with account.client() as c:  # another change deployed from elsewhere (version 4)
        r = await c.patch(f"/lambdas/{greeter['id']}", json={"code": working("second")})
        assert r.status_code == 200, r.text
        assert (await c.post(f"/lambdas/{greeter['id']}/deployments")).status_code == 202
        await wait_deployed(c, greeter["id"])
    await pg.get_by_role("link", name="Deployments").click()
    row = pg.locator("tbody tr", has_text="greeter")
    await expect(row).to_contain_text("Deployed")
    await expect(row.locator("td").nth(1)).to_have_text("4")
    await shot(pg, "deployments")
    await row.get_by_label("Roll back greeter").select_option(value="3")  # "version 3 (…)"
    await expect(row.locator("td").nth(1)).to_have_text("5", timeout=90_000)
    await expect(row).to_contain_text("Deployed")
    async with account.client() as c:
        assert marker in (await c.get(f"/lambdas/{greeter['id']}")).json()["code"]

    # Settings: domain allowlist is the default tab (the wizard's domain is there).
    await pg.get_by_role("link", name="Settings").click()
    domains = pg.get_by_test_id("domains")
    await expect(domains).to_contain_text("api.example.com")
    domain = pg.get_by_role("textbox", name="Domain")
    await domain.fill("*.example.org")
    await domain.press("Enter")
    await expect(domains).to_contain_text("*.example.org")
    await shot(pg, "settings-domains")
    await pg.get_by_role("link", name="Secrets").click()
    await pg.get_by_label("Key", exact=True).fill("crm-token")
    await pg.get_by_label("Value", exact=True).fill("s3cret-value")
    await pg.get_by_role("button", name="Add").click()
    secrets = pg.get_by_test_id("secrets")
    await expect(secrets).to_contain_text("crm-token")
    assert "s3cret-value" not in await pg.content()
    await shot(pg, "settings-secrets")
    await pg.get_by_role("link", name="Users and permissions").click()
    await pg.get_by_role("button", name="New API key").first.click()
    await expect(pg.locator(".notice")).to_contain_text("shown once")
    await shot(pg, "settings-users")
    await pg.get_by_role("link", name="Email reports").click()
    await pg.get_by_label("Recipients").fill("ops@example.com")
    await pg.get_by_label("Frequency").select_option("weekly")
    await pg.get_by_role("button", name="Save").click()
    await expect(pg.get_by_label("Frequency")).to_have_value("weekly")
    async with account.client() as c:
        assert (await c.get("/reports/settings")).json()["frequency"] == "weekly"

    # Home: the invocations reach the metrics rollup a moment later.
    for _ in range(40):
        await pg.get_by_role("link", name="Home").click()
        await pg.reload()
        total = pg.get_by_test_id("total-invocations")
        await expect(total).to_be_visible()
        if int(await total.inner_text()) >= 1:
            break
        await pg.wait_for_timeout(500)
    assert int(await pg.get_by_test_id("total-invocations").inner_text()) >= 1
    await expect(pg.locator(".plot canvas")).to_have_count(2)
    await expect(pg.get_by_text(re.compile(r"greeter — \d"))).to_be_visible()
    await shot(pg, "home")
    await pg.get_by_role("tab", name="Last 7d").click()
    await expect(pg.get_by_text("in the last 7d")).to_be_visible()
    await expect(pg.locator(".plot canvas")).to_have_count(2)
