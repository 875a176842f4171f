"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against `ngm serve`
started as a process, with stand-in gateways on 127.0.0.1. Screenshots of the main pages are kept in
test-artifacts/dashboard/ (not committed)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Deployment, make_key
from tests.support.processes import ServerProcess, ngm_env
from tests.support.standin import StandIn
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("NGM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NGM_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
LIVE = {"health_check_interval": 0.5, "health_check_timeout": 0.4, "healthy_threshold": 1, "unhealthy_threshold": 1,
        "health_grace_period": 0}
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{workdir / 'ngm.db'}"
    env = ngm_env(workdir / "data", url)
    process = ServerProcess(env, workdir / "server.log").wait_ready()
    yield Deployment(env, process, url, workdir)
    process.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's chromium package")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Operator:
    """One browser tab signed in (or not yet) to the dashboard, recording what it requested."""

    def __init__(self, browser, server: Deployment):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, fragment: str = ""):
        self.page.goto(self.server.url + "/" + fragment)
        return self.page

    def sign_in(self, key: str):
        page = self.open()
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Gateways", exact=True).wait_for()
        return page

    def go(self, fragment: str):
        self.page.evaluate("f => { location.hash = f; }", fragment)
        return self.page

    def shot(self, name: str):
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self):
        assert not self.errors, f"script errors in the page: {self.errors}"
        self.context.close()


@pytest.fixture
def operator(browser, server):
    op = Operator(browser, server)
    yield op
    op.close()


def org_with(server: Deployment, role: str = "org_owner") -> tuple[str, str, httpx.Client]:
    org, key = server.new_org(role)
    return org, key, server.client(key)


def test_sign_in_refuses_a_bad_key_and_keeps_the_key_out_of_urls_and_storage(operator, server):
    org, key, _ = org_with(server)
    page = operator.open()
    page.get_by_label("API key").fill("ngm_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That key was not accepted").wait_for()
    assert page.get_by_role("link", name="Gateways").count() == 0  # nothing behind the sign-in is shown
    operator.shot("sign-in-refused")

    field = page.get_by_label("API key")  # by keyboard alone: type, Enter
    field.fill("")
    field.focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Gateways", exact=True).wait_for()
    assert page.get_by_text(f"{org} · test org_owner (owner)").is_visible()
    assert page.evaluate("() => sessionStorage.getItem('ngm.key')") == key
    assert page.evaluate("() => JSON.stringify(localStorage)") == "{}"
    assert page.evaluate("() => document.cookie") == ""
    assert not [u for u in operator.requested if key in u]
    assert key not in server.server.log()

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("() => sessionStorage.getItem('ngm.key')") is None


def test_create_a_gateway_see_a_field_error_then_see_it_listed_and_filtered(operator, server):
    _, key, client = org_with(server)
    page = operator.sign_in(key)
    page.get_by_role("link", name="New gateway").click()
    form = page.get_by_role("form", name="New gateway")
    form.get_by_label("Name").fill("edge-eu")
    form.get_by_label("Environment").select_option("production")
    form.get_by_label("Region").fill("eu-west-1")
    form.get_by_label("API URL").fill("ftp://gw.example.com")
    form.get_by_label("Gateway API key").fill("gw-secret-1234")
    form.get_by_role("button", name="Register gateway").click()

    api_url = form.get_by_label("API URL")
    error = page.locator("#" + api_url.get_attribute("aria-describedby").split()[-1])
    error.wait_for()
    assert error.inner_text().strip() == "must be an http:// or https:// URL"  # the server's 422 detail, by its field
    assert api_url.get_attribute("aria-invalid") == "true"
    assert form.get_by_label("Name").get_attribute("aria-invalid") is None
    operator.shot("gateway-create-field-error")
    assert client.get("/api/v1/gateways").json()["total"] == 0  # the bad input changed nothing

    api_url.fill("https://gw-eu.example.com")
    form.get_by_role("button", name="Register gateway").click()
    row = page.locator("tr", has=page.get_by_role("link", name="edge-eu"))
    row.wait_for()
    assert [c.strip() for c in row.locator("td").all_inner_texts()[:6]] == \
        ["edge-eu", "production", "shared", "eu-west-1", "active", "unknown"]
    [made] = client.get("/api/v1/gateways").json()["items"]
    assert made["api_key_set"] and "gw-secret-1234" not in page.content()
    client.post("/api/v1/gateways", json={"name": "lab", "environment": "development", "api_url": "https://lab.example.com"})
    page.reload()
    page.get_by_role("link", name="lab").wait_for()
    operator.shot("gateway-list")

    page.get_by_label("Environment").select_option("development")
    page.get_by_role("link", name="edge-eu").wait_for(state="detached")
    assert page.get_by_role("link", name="lab").is_visible()
    page.get_by_label("Status").select_option("inactive")
    page.get_by_text("No gateways match.").wait_for()


def test_the_lists_page_from_the_server_instead_of_loading_every_gateway(operator, server):
    """An organization of tens of thousands of gateways must not be loaded whole: the list shows 50 at a time
    (keyset cursors), the health view the counts per state and tiles a page at a time."""
    _, key, client = org_with(server)
    for i in range(120):
        assert client.post("/api/v1/gateways", json={
            "name": f"pg-{i:03d}", "environment": "staging", "api_url": "http://127.0.0.1:9",
            "status": "inactive"}).status_code == 201  # inactive: the monitor leaves them alone
    page = operator.sign_in(key)
    page.get_by_text("1–50 of 120").wait_for()
    assert page.locator("#gateway-list tbody tr").count() == 50
    page.get_by_role("button", name="Next").click()
    page.get_by_text("51–100 of 120").wait_for()
    assert page.get_by_role("link", name="pg-050").is_visible()
    page.get_by_role("button", name="Next").click()
    page.get_by_text("101–120 of 120").wait_for()
    assert page.get_by_role("button", name="Next").is_disabled()
    page.get_by_role("button", name="Previous").click()
    page.get_by_text("51–100 of 120").wait_for()

    operator.go("#/health")
    page.locator(".counts", has_text="120").wait_for()
    assert page.locator("article.tile").count() == 100
    page.get_by_role("button", name="More gateways").click()
    page.locator("article[data-gateway-id]").nth(119).wait_for()
    assert page.get_by_role("button", name="More gateways").is_hidden()
    listed = [u for u in operator.requested if "/api/v1/gateways?" in u]
    assert listed and not [u for u in listed if "limit=500" in u], listed  # never the whole list


def test_edit_rotate_deactivate_set_limits_and_delete_with_the_409_explained(operator, server):
    _, key, client = org_with(server)
    gw = client.post("/api/v1/gateways", json={"name": "core", "environment": "staging", "api_key": "old-key-0001",
                                               "api_url": "https://core.example.com"}).json()
    client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bot", "agent_version": "v1"})
    page = operator.sign_in(key)
    page.get_by_role("link", name="core").click()
    config = page.get_by_role("form", name="Configuration")
    config.get_by_label("Region").fill("us-east-1")
    config.get_by_label("Interval (s)").fill("15")
    config.get_by_label("Unhealthy after (failures)").fill("0")  # out of range: the server says so, nothing changes
    config.get_by_role("button", name="Save changes").click()
    page.locator("[data-error-for=unhealthy_threshold]").get_by_text("greater than or equal to 1").wait_for()
    assert client.get(f"/api/v1/gateways/{gw['id']}").json()["region"] is None
    config.get_by_label("Unhealthy after (failures)").fill("4")
    config.get_by_role("button", name="Save changes").click()
    page.get_by_text("Gateway saved.").wait_for()
    saved = client.get(f"/api/v1/gateways/{gw['id']}").json()
    assert (saved["region"], saved["health_check_interval"], saved["unhealthy_threshold"]) == ("us-east-1", 15, 4)

    limits = page.get_by_role("form", name="Rate limits")
    limits.get_by_label("Per user (API key)").fill("60")
    limits.get_by_label("Algorithm").select_option("token_bucket")
    limits.get_by_role("button", name="Save limits").click()
    page.get_by_text("Rate limits saved").wait_for()
    saved = client.get(f"/api/v1/gateways/{gw['id']}").json()
    assert (saved["per_user_rate_limit"], saved["rate_limit_algorithm"]) == (60, "token_bucket")

    rotate = page.get_by_role("form", name="Rotate API key")
    rotate.get_by_label("New gateway API key").fill("new-key-9876")
    rotate.get_by_role("button", name="Replace key").click()
    page.locator("#key-state").get_by_text("…9876").wait_for()
    assert client.get(f"/api/v1/gateways/{gw['id']}").json()["api_key_last4"] == "9876"
    assert rotate.get_by_label("New gateway API key").input_value() == ""

    page.get_by_role("button", name="Deactivate").click()
    page.get_by_role("button", name="Activate", exact=True).wait_for()  # not "Deactivate"
    assert client.get(f"/api/v1/gateways/{gw['id']}").json()["status"] == "inactive"
    operator.shot("gateway-configuration")

    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_text("still has 1 active deployment").wait_for()
    operator.shot("gateway-delete-409")
    assert client.get(f"/api/v1/gateways/{gw['id']}").status_code == 200
    dialog.get_by_role("button", name="Delete with its deployments…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete with deployments").click()
    page.get_by_role("heading", name="Gateways", exact=True).wait_for()
    assert client.get(f"/api/v1/gateways/{gw['id']}").status_code == 404


def test_assign_two_deployments_at_90_10_and_watch_the_percentages_as_you_type(operator, server):
    _, key, client = org_with(server)
    client.post("/api/v1/gateways", json={"name": "gw-a", "environment": "production", "region": "eu-west-1",
                                          "api_url": "https://a.example.com"})
    client.post("/api/v1/gateways", json={"name": "gw-b", "environment": "production", "region": "us-east-1",
                                          "api_url": "https://b.example.com"})
    client.post("/api/v1/gateways", json={"name": "gw-dev", "environment": "development",
                                          "api_url": "https://dev.example.com"})
    page = operator.sign_in(key)
    page.get_by_role("link", name="Agents & traffic").click()
    opener = page.get_by_role("form", name="Open an agent")
    opener.get_by_label("Agent id").fill("support-bot")
    opener.get_by_label("Environment").select_option("production")
    opener.get_by_role("button", name="Open").click()
    page.get_by_text("support-bot has no deployment in production.").wait_for()

    assign = page.get_by_role("form", name="Assign a version")
    options = assign.get_by_label("Gateway").locator("option").all_inner_texts()
    assert [o for o in options if o != "—"] == ["gw-a (eu-west-1)", "gw-b (us-east-1)"]  # this environment only
    for gateway, version, weight in (("gw-a (eu-west-1)", "v1", "90"), ("gw-b (us-east-1)", "v2", "10")):
        assign.get_by_label("Gateway").select_option(label=gateway)
        assign.get_by_label("Version").fill(version)
        assign.get_by_label("Weight").fill(weight)
        assign.get_by_role("button", name="Assign").click()
        page.locator("[data-deployment-id]", has_text=version).wait_for()
    listed = client.get("/api/v1/deployments", params={"agent_id": "support-bot"}).json()["items"]
    deployments = {d["agent_version"]: d for d in listed}
    assert {v: d["weight"] for v, d in deployments.items()} == {"v1": 90, "v2": 10}
    share = {v: page.locator(f"[data-share-for='{d['id']}']") for v, d in deployments.items()}
    assert (share["v1"].inner_text(), share["v2"].inner_text()) == ("90.0%", "10.0%")

    page.locator(f"[data-weight-for='{deployments['v2']['id']}']").fill("30")  # as typed, before saving
    assert (share["v1"].inner_text(), share["v2"].inner_text()) == ("75.0%", "25.0%")
    assert client.get(f"/api/v1/deployments/{deployments['v2']['id']}").json()["weight"] == 10
    operator.shot("agent-weights-typed")
    page.get_by_role("button", name="Save weights").click()
    page.get_by_text("Weights saved").wait_for()
    assert client.get(f"/api/v1/deployments/{deployments['v2']['id']}").json()["weight"] == 30

    policy = page.get_by_role("form", name="Routing policy")
    policy.get_by_label("Strategy").select_option("geographic")
    policy.get_by_label("Sticky: keep a user on one deployment").check()
    policy.get_by_role("button", name="Save policy").click()
    page.get_by_text("Routing policy saved.").wait_for()
    saved = client.get("/api/v1/routing/policy", params={"agent_id": "support-bot", "environment": "production"}).json()
    assert (saved["strategy"], saved["sticky"]) == ("geographic", True)

    explain = page.get_by_role("form", name="Why this gateway")
    explain.get_by_label("Caller's region (optional)").fill("us-east-1")
    explain.get_by_role("button", name="Explain").click()
    page.locator(".verdict").get_by_text("gw-b").wait_for()

    row = page.locator(f"[data-deployment-id='{deployments['v1']['id']}']")
    row.get_by_role("button", name="Drain").click()
    row.get_by_text("draining").or_(row.get_by_text("inactive")).first.wait_for()
    assert client.get(f"/api/v1/deployments/{deployments['v1']['id']}").json()["status"] in ("draining", "inactive")
    assert page.locator(f"[data-share-for='{deployments['v2']['id']}']").inner_text() == "100.0%"
    operator.shot("agent-assignment")


def test_the_health_view_follows_a_gateway_going_down_without_a_reload(operator, server):
    _, key, client = org_with(server)
    standin = StandIn("healthy")
    try:
        gw = client.post("/api/v1/gateways", json={"name": "flaky", "environment": "production",
                                                   "api_url": standin.url, **LIVE}).json()
        wait_for(lambda: client.get(f"/api/v1/gateways/{gw['id']}").json()["health_status"] == "healthy", 10,
                 "the monitor to find the stand-in healthy")
        page = operator.sign_in(key)
        page.get_by_role("link", name="Health").click()
        tile = page.locator(f"article[data-gateway-id='{gw['id']}']")
        tile.locator(".badge-healthy").wait_for()
        page.get_by_text("● live").wait_for()
        page.evaluate("() => { window.notReloaded = true; }")
        mark = len(operator.requested)
        operator.shot("health-healthy")

        standin.mode = "error"
        tile.locator(".badge-unhealthy").wait_for(timeout=10_000)
        page.locator(".feed li", has_text="flaky").wait_for()
        assert page.evaluate("() => window.notReloaded") is True  # the same page, updated in place
        assert not [u for u in operator.requested[mark:] if "/api/v1/gateways" in u]  # the event stream carried it
        operator.shot("health-unhealthy")

        operator.go("#/gateways")  # the list follows too
        row = page.locator(f"tr[data-gateway-id='{gw['id']}']")
        row.locator(".badge-unhealthy").wait_for()
        page.evaluate("() => { window.stillTheList = true; }")
        standin.mode = "healthy"
        row.locator(".badge-healthy").wait_for(timeout=10_000)
        assert page.evaluate("() => window.stillTheList") is True

        operator.go("#/health")
        tile.get_by_role("link", name="flaky").click()
        page.locator("svg.timeline rect.strip.fail").first.wait_for()
        page.locator("svg.timeline rect.strip.ok").first.wait_for()
        uptime = page.locator("#uptime").inner_text()
        assert 0 < float(uptime.rstrip("%")) < 100, uptime
        transitions = page.get_by_role("table").filter(has_text="Newest first")
        transitions.get_by_text("unhealthy").first.wait_for()
        operator.shot("gateway-health-timeline")
    finally:
        standin.stop()


def test_the_observed_split_after_routed_requests(operator, server):
    _, key, client = org_with(server)
    agent = f"bot-{uuid.uuid4().hex[:6]}"
    standins = [StandIn("healthy"), StandIn("healthy")]
    try:
        ids = []
        for standin, weight in zip(standins, (90, 10)):
            gw = client.post("/api/v1/gateways", json={"name": f"gw-{weight}", "environment": "production",
                                                       "api_url": standin.url}).json()
            dep = client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": agent,
                                                           "agent_version": f"w{weight}", "weight": weight})
            ids.append(dep.json()["id"])
        page = operator.sign_in(key)
        operator.go(f"#/agents/{agent}/production")
        observed = [page.locator(f"[data-observed-for='{i}']") for i in ids]
        observed[0].wait_for()
        assert [o.inner_text() for o in observed] == ["0.0%", "0.0%"]
        for _ in range(100):
            assert client.get(f"/api/v1/agents/{agent}/invoke/workflows/chat/execute").status_code == 200
        wait_for(lambda: [o.inner_text() for o in observed] == ["90.0%", "10.0%"], 8,
                 "the observed split to update on the page")
        assert page.locator("svg.split").get_attribute("aria-label") == \
            "gw-90 w90: configured 90.0%, observed 90.0%; gw-10 w10: configured 10.0%, observed 10.0%"
        row = page.locator("tr", has=observed[0])
        assert row.locator("td").nth(3).inner_text() == "90"  # requests
        operator.shot("traffic-split")
    finally:
        for s in standins:
            s.stop()


def test_a_viewer_sees_no_edit_controls_and_cannot_change_anything(operator, server):
    org, owner_key, client = org_with(server)
    viewer = make_key(server.database_url, org, "org_viewer")
    gw = client.post("/api/v1/gateways", json={"name": "prod-1", "environment": "production",
                                               "api_url": "https://p1.example.com"}).json()
    dep = client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bot",
                                                   "agent_version": "v1"}).json()
    page = operator.sign_in(viewer)
    assert page.get_by_text("read-only").is_visible()
    assert page.get_by_role("link", name="New gateway").count() == 0

    page.get_by_role("link", name="prod-1").click()
    page.get_by_role("heading", name="Configuration").wait_for()
    for name in ("Save changes", "Save limits", "Replace key", "Delete…", "Deactivate", "Check now"):
        assert page.get_by_role("button", name=name).count() == 0, name
    assert page.get_by_role("form", name="Configuration").get_by_label("Name").is_disabled()
    operator.shot("viewer-gateway")

    operator.go("#/agents/bot/production")
    page.locator(f"[data-deployment-id='{dep['id']}']").wait_for()
    assert page.locator("[data-weight-for]").count() == 0
    for name in ("Drain", "Save weights", "Assign", "Save policy"):
        assert page.get_by_role("button", name=name).count() == 0, name
    assert page.get_by_role("button", name="Explain").count() == 1  # reading is allowed

    # The server refuses regardless of what the page shows: the viewer's own key, from the page.
    status = page.evaluate("""async ([id]) => (await fetch('/api/v1/gateways/' + id, {method: 'PUT',
        headers: {'X-API-Key': sessionStorage.getItem('ngm.key'), 'Content-Type': 'application/json'},
        body: JSON.stringify({name: 'hijacked'})})).status""", [gw["id"]])
    assert status == 403
    assert client.get(f"/api/v1/gateways/{gw['id']}").json()["name"] == "prod-1"


def test_the_dashboard_needs_nothing_from_another_origin(operator, server):
    _, key, _ = org_with(server)
    page = operator.sign_in(key)
    for fragment, heading in (("#/health", "Live transitions"), ("#/agents", "Open an agent"),
                              ("#/agents/x/production", "Why this gateway"), ("#/gateways/new", "New gateway")):
        operator.go(fragment)
        page.get_by_role("heading", name=heading).wait_for()
    assert operator.requested and all(u.startswith(server.url) for u in operator.requested)
    headers = httpx.get(server.url + "/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert httpx.get(server.url + "/static/js/app.js").status_code == 200


# WCAG 2 contrast of every visible text element against the first opaque background behind it.
CONTRAST = """() => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => v / 255)
    .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const worst = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest('svg')) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const what = `${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 30)}"`;
    if (ratio < 4.5) worst.push(`${what} ${ratio.toFixed(2)}`);
  }
  return worst;
}"""

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, output')]
  .filter(el => el.getClientRects().length)
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
  .map(el => el.outerHTML.slice(0, 80))"""


def test_every_page_has_labelled_controls_and_readable_contrast(operator, server):
    _, key, client = org_with(server)
    gw = client.post("/api/v1/gateways", json={"name": "a11y", "environment": "production",
                                               "api_url": "https://a11y.example.com"}).json()
    client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bot", "agent_version": "v1"})
    page = operator.open()
    assert page.evaluate(UNLABELLED) == [] and page.evaluate(CONTRAST) == []
    operator.sign_in(key)
    for fragment, heading in (("#/gateways", "Gateways"), ("#/gateways/new", "New gateway"),
                              (f"#/gateways/{gw['id']}", "Configuration"), ("#/health", "Live transitions"),
                              ("#/agents", "Open an agent"), ("#/agents/bot/production", "Why this gateway")):
        operator.go(fragment)
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        page.locator(".loading").wait_for(state="detached")
        assert page.evaluate(UNLABELLED) == [], fragment
        assert page.evaluate(CONTRAST) == [], fragment
    # After each navigation focus is on the content: Tab reaches its first control, Shift+Tab the navigation.
    operator.go("#/gateways")
    page.get_by_role("heading", name="Gateways", exact=True).wait_for()
    # the view has finished rendering (focus on <main> alone may still be the previous view's)
    page.wait_for_function("() => document.getElementById('main').dataset.shown === '#/gateways' "
                           "&& document.activeElement.id === 'main'")
    active = "() => document.activeElement.textContent.trim()"
    page.keyboard.press("Tab")
    assert page.evaluate(active) == "New gateway"
    backwards = []
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
        backwards.append(page.evaluate(active))
    assert backwards == ["Sign out", "Agents & traffic", "Health", "Gateways"], backwards
    page.keyboard.press("Enter")  # on "Gateways"; then to Health by keyboard
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Live transitions").wait_for()


def test_a_view_left_before_its_data_came_does_not_take_the_page_back(operator, server):
    """The operator leaves an agent's page while its traffic figures are still on their way (held back here):
    when they come, the page the operator went to stays shown, focused and in charge."""
    _, key, client = org_with(server)
    gw = client.post("/api/v1/gateways", json={"name": "late", "environment": "production",
                                               "api_url": "https://late.example.com"}).json()
    client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bot", "agent_version": "v1"})
    page = operator.sign_in(key)
    held = []
    page.route("**/api/v1/agents/bot/traffic*", lambda route: held.append(route))
    operator.go("#/agents/bot/production")
    page.get_by_role("heading", name="Why this gateway", exact=True).wait_for()
    # (Playwright hands the held request over only while it runs: each look lets it run a moment)
    wait_for(lambda: page.wait_for_timeout(20) or held, 10, what="the agent page's traffic request, held back")
    operator.go("#/gateways")
    page.wait_for_function("() => document.getElementById('main').dataset.shown === '#/gateways'")
    with page.expect_response("**/api/v1/agents/bot/traffic*"):  # now the late figures come
        for route in held:
            route.continue_()
    page.evaluate("() => new Promise(done => setTimeout(done, 200))")  # the agent page's loading has ended
    assert page.evaluate("() => document.getElementById('main').dataset.shown") == "#/gateways"
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.get_by_role("heading", name="Gateways", exact=True).is_visible()
    assert page.get_by_role("heading", name="Why this gateway").count() == 0
