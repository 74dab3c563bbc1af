"""The dashboard in a real browser: Playwright driving Debian's chromium (headless) against a
real server process (granian, DEBUG off, static files collected), as tests/e2e/test_console.py
does, with its own SQLite database and model store.

Flows: the status by threshold, client and server errors apart, the time ranges and the
auto-refresh (which keeps the range), an alias move drawn on the charts; and the page on a
390 px phone and a 1366 px screen with the sidebar open, without sideways scrolling.
Screenshots go to tests/e2e/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from registry.demo import build_iris_onnx
from tests import granian_server
from tests.e2e.test_console import ADMIN_PASSWORD, ADMIN_USER, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.e2e.test_name_page import DRIFT_AND_TRIP

pytestmark = pytest.mark.e2e

GOOD = {"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}
BAD = {"input_data": {"X": [[5.1, 3.5]]}}  # the wrong shape: a client error


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A production-like server with an admin user, an API key and two iris names; health is
    judged from the first request (MONITOR_MIN_REQUESTS=1), so a handful of requests shows it."""
    workdir = tmp_path_factory.mktemp("dashboard")
    port = granian_server.free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "dashboard-e2e-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(workdir / "models"),
        "JOB_STORAGE_PATH": str(workdir / "jobs"),
        "STATIC_ROOT": str(workdir / "static"),
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "SERVING_STATS_FLUSH_SECONDS": "0.5",
        "MONITOR_MIN_REQUESTS": "1",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    granian_server.manage(env, "migrate", "--noinput", "-v0")
    granian_server.manage(env, "collectstatic", "--noinput", "-v0")
    granian_server.manage(env, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "ops@example.com")
    source = workdir / "source"
    for name, version in (("iris", "1.0.0"), ("iris", "1.1.0"), ("flaky-iris", "1.0.0")):
        folder = source / name / version
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(build_iris_onnx())
    granian_server.manage(env, "import_models", str(source))
    key = granian_server.manage(env, "create_api_key", "--name", "dash-e2e", "--scopes", "read,predict,manage")
    process = granian_server.start(env, workdir / "server.log", port=port, ready_path="/api/v1/live")
    try:
        yield {"base": f"http://127.0.0.1:{port}", "key": key.stdout.strip(), "env": env}
    finally:
        granian_server.stop(process, timeout=30)


def api(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 (our own loopback server)
        server["base"] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def traffic(server):
    """iris 1.0.0: 3 answered, 2 refused (bad input); flaky-iris: 1 answered, then 3 refused for
    load (a 1 µs batching timeout: 503, server errors); production moved 1.0.0 -> 1.1.0."""
    for body, expected in ((GOOD, 200), (GOOD, 200), (GOOD, 200), (BAD, 400), (BAD, 400)):
        status, _ = api(server, "POST", "/api/v1/models/by-name/iris/predict?version=1.0.0", body)
        assert status == expected
    status, flaky = api(server, "POST", "/api/v1/models/by-name/flaky-iris/predict", GOOD)
    assert status == 200
    batching = {"batching": {"enabled": True, "default_timeout_microseconds": 1}}
    assert api(server, "PATCH", f"/api/v1/models/{flaky['model_id']}", batching)[0] == 200
    for _ in range(3):
        body = {**GOOD, "skip_cache": True}
        assert api(server, "POST", "/api/v1/models/by-name/flaky-iris/predict", body)[0] == 503
    for version in ("1.0.0", "1.1.0"):
        assert api(server, "PUT", "/api/v1/models/by-name/iris/aliases/production", {"version": version})[0] in (
            200,
            201,
        )
    return {"flaky": flaky["model_id"]}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def signed_in(browser, server, *, width: int, height: int):
    context = browser.new_context(base_url=server["base"], viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    return page


@pytest.fixture
def page(browser, server):
    page = signed_in(browser, server, width=1280, height=900)
    yield page
    page.context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def at(page, suffix: str) -> None:
    """Wait until the page is at this address (query string included, exactly)."""
    page.wait_for_url(lambda url: url.endswith(suffix))


def open_dashboard_once_recorded(page, query: str, total: int) -> None:
    """The statistics are written every SERVING_STATS_FLUSH_SECONDS: the page set to reload
    every 10 s shows them within a reload or two; this waits for the total, not for a time."""
    from playwright.sync_api import expect

    page.goto(f"/admin/dashboard/{query}")
    expect(page.locator("#mf-total-requests")).to_have_text(str(total), timeout=60_000)


def test_status_errors_ranges_refresh_and_markers(page, server, traffic):
    from playwright.sync_api import expect

    # From the index: the dashboard is in the app list (and the sidebar of every other page).
    page.get_by_role("link", name="Dashboard").click()
    at(page, "/admin/dashboard/")
    page.get_by_role("link", name="10 s").click()  # auto-refresh: the page reloads itself
    at(page, "/admin/dashboard/?refresh=10")
    open_dashboard_once_recorded(page, "?refresh=10", total=9)

    # Status at the top, worst first, in words and colour: flaky-iris's 503s make it red.
    levels = page.locator("#mf-health li")
    expect(levels.first).to_contain_text("Red")
    expect(levels.first).to_contain_text("flaky-iris 1.0.0")
    expect(levels.first).to_contain_text("server-error rate 75.0% ≥ 5.0%")
    expect(levels.nth(1)).to_contain_text("iris 1.0.0")  # by name after the worst
    expect(levels.nth(1).locator(".mf-status")).to_have_text("Green")
    # Client errors and server errors apart, in the totals and per version.
    expect(page.locator("#mf-total-client-errors")).to_have_text("2")
    expect(page.locator("#mf-total-server-errors")).to_have_text("3")
    flaky = page.locator(f'#mf-serving-table tr[data-model-id="{traffic["flaky"]}"]')
    expect(flaky.locator('td[data-label="Server errors (5xx)"]')).to_have_text("3 (75%)")
    expect(flaky.locator('td[data-label="Client errors (4xx)"]')).to_have_text("0")
    expect(page.locator("svg.mf-chart")).to_have_count(5)
    shot(page, "dashboard-01-status-24h")

    # 1 hour: minute periods; the refresh setting is kept by the range's link.
    page.locator("#mf-range").get_by_role("link", name="1 h").click()
    at(page, "/admin/dashboard/?range=1h&refresh=10")
    expect(page.locator("#mf-charts h2")).to_contain_text("the last 1 hour, per minute")
    expect(page.locator("#mf-refreshing")).to_have_text("(reloads every 10 s)")
    # The alias moves of the hour, drawn on each of the four time charts and listed by number.
    expect(page.locator("#mf-markers li")).to_have_count(2)
    expect(page.locator("#mf-markers li").last).to_contain_text("iris@production moved: 1.0.0 → 1.1.0")
    expect(page.locator("g.mf-marker")).to_have_count(8)
    shot(page, "dashboard-02-1h-markers")

    # The page reloads itself (no click) and keeps the range: a new request appears.
    assert api(server, "POST", "/api/v1/models/by-name/iris/predict?version=1.0.0", GOOD)[0] == 200
    expect(page.locator("#mf-total-requests")).to_have_text("10", timeout=60_000)
    assert page.url.endswith("/admin/dashboard/?range=1h&refresh=10")
    expect(page.locator("#mf-charts h2")).to_contain_text("per minute")

    # 7 days, hourly; refresh off; one version's charts keep both.
    page.locator("#mf-range").get_by_role("link", name="7 d").click()
    at(page, "/admin/dashboard/?range=7d&refresh=10")
    page.locator("#mf-refresh").get_by_role("link", name="off").click()
    at(page, "/admin/dashboard/?range=7d")
    expect(page.locator("#mf-refreshing")).to_have_count(0)
    expect(page.locator("#mf-charts h2")).to_contain_text("the last 7 days, per hour")
    flaky.get_by_role("link", name="show").click()
    at(page, f"/admin/dashboard/?range=7d&model={traffic['flaky']}")
    expect(page.locator("#mf-charts h2")).to_contain_text("flaky-iris 1.0.0")
    expect(page.locator("#mf-charts")).to_contain_text("this model's amber and red thresholds")
    shot(page, "dashboard-03-7d-one-model")

    # "Edit thresholds" opens the name's thresholds in the admin.
    flaky.get_by_role("link", name="thresholds").click()
    expect(page.get_by_label("Name")).to_have_value("flaky-iris")
    shot(page, "dashboard-04-thresholds-form")


def test_drift_and_a_guard_trip_at_the_top(page, server, traffic):
    """Production's version drifted (red, X[0]) and the guard of its rollout tripped: the trip is
    a notice above the status; the status says serving and drift apart; drift links to the name
    page's chart. (Before the 390 px check below, which then runs with both shown.)"""
    from playwright.sync_api import expect

    primary, candidate = granian_server.manage(
        server["env"], "shell", "--no-imports", "-c", DRIFT_AND_TRIP
    ).stdout.split()[-2:]
    page.goto("/admin/dashboard/")
    notice = page.locator("#mf-guard-trips li")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(f"Rollout guard tripped on iris@production: candidate {candidate} set to 0 % at")
    expect(notice).to_contain_text("candidate p95 80.0 ms exceeds the primary's 20.0 ms")
    status = page.locator("#mf-health li", has_text=f"iris {primary} ")
    # Production's version took no request (the traffic went to 1.0.0 by number): serving idle.
    expect(status).to_contain_text("serving: Idle no requests in the range")
    expect(status).to_contain_text("drift: Red (X[0])")
    expect(page.locator("#mf-rollouts")).to_contain_text(f"iris@production: {primary} → {candidate} at 0 %")
    shot(page, "dashboard-06-drift-and-guard-trip")
    status.get_by_role("link", name="Red").click()
    page.wait_for_url(f"**/admin/registry/mlmodel/name/iris/#mf-drift-{primary.replace('.', '-')}")
    expect(page.get_by_role("img", name="X[0]: red, the window (1h) against the reference")).to_be_visible()


def no_sideways_scroll(page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")


@pytest.mark.parametrize(
    ("width", "height", "name"),
    [(390, 844, "phone-390"), (1366, 768, "laptop-1366-sidebar")],
)
def test_the_dashboard_fits_without_sideways_scrolling(browser, server, traffic, width, height, name):
    from playwright.sync_api import expect

    page = signed_in(browser, server, width=width, height=height)
    try:
        for query in ("?refresh=10", "?range=1h&refresh=10", "?range=7d&refresh=10"):
            page.goto(f"/admin/dashboard/{query}")
            # The statistics are written every half second; the page reloads until they show.
            expect(page.locator("#mf-serving-table")).to_be_visible(timeout=60_000)
            if width >= 1024:
                expect(page.locator("#nav-sidebar")).to_be_visible()  # the sidebar is open
                expect(page.locator("#nav-sidebar").get_by_role("link", name="Dashboard")).to_be_visible()
            scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
            assert scroll_width <= inner_width, (query, scroll_width, inner_width)
            # The columns that matter are shown, within the width of the screen.
            row = page.locator("#mf-serving-table tbody tr").first
            for label in (
                "Model",
                "Version",
                "Requests",
                "Status",
                "Server errors (5xx)",
                "Client errors (4xx)",
                "p95 ms",
            ):
                cell = row.locator(f'td[data-label="{label}"]')
                expect(cell).to_be_visible()
                box = cell.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= inner_width, (label, box)
            shot(page, f"dashboard-05-{name}-{query.split('&')[0].strip('?').replace('=', '-')}")
    finally:
        page.context.close()
