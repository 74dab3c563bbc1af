"""The page of a model name in a real browser: Playwright driving Debian's chromium against a
real server process (tests/e2e/test_console.py's server: granian, DEBUG off, SQLite, iris
1.0.0 and 1.1.0 imported). From the models list to the name page, the next version uploaded
with its lineage, promote and roll back through the confirmation page, the serving figures
side by side, who may do what, the page at 1366 px (sidebar open) and 390 px, and the model
page's Try it within a few Tab presses. Screenshots go to tests/e2e/artifacts/ (git-ignored).
"""

# The server and browser fixtures are test_console's (imported: the same server set-up, a
# server of this module's own); ruff reads each test's use of them as a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest

from registry.demo import build_iris_onnx
from tests.e2e.test_console import (  # noqa: F401 (fixtures)
    ADMIN_PASSWORD,
    ADMIN_USER,
    TIMEOUT_MS,
    api,
    browser,
    server,
    shot,
)

pytestmark = pytest.mark.e2e

VALIDATION_BOUND_MS = 120_000
NAME_PAGE = "/admin/registry/mlmodel/name/iris/"
VIEWER, VIEWER_PASSWORD = "looker", "name-page-viewer-password-1"
RUN = "https://mlflow.example.com/#/experiments/3/runs/7f3a9c"
COMMIT = "4f2c9e1d0b7a6c5e4f3a2b1c0d9e8f7a6b5c4d3e"
# A staff user who may read the registry and nothing more (no alias permission).
CREATE_VIEWER = f"""
from django.contrib.auth.models import Permission, User
user = User.objects.create_user("{VIEWER}", password="{VIEWER_PASSWORD}", is_staff=True)
user.user_permissions.set(Permission.objects.filter(content_type__app_label="registry", codename="view_mlmodel"))
"""
NO_SIDEWAYS_SCROLL = "document.scrollingElement.scrollWidth <= window.innerWidth"


@contextmanager
def signed_in(browser, server, *, width: int = 1366, height: int = 900, user=ADMIN_USER, password=ADMIN_PASSWORD):
    context = browser.new_context(base_url=server.base, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    try:
        yield page
    finally:
        context.close()


def production_version(server) -> str | None:
    return api(server, "GET", "/api/v1/models/by-name/iris/aliases")["default_version"]


def test_the_models_list_leads_to_the_name_page(browser, server):
    from playwright.sync_api import expect

    with signed_in(browser, server) as page:
        page.goto("/admin/registry/mlmodel/")
        row = page.locator("#result_list tbody tr", has_text="1.1.0").filter(has_text="iris").first
        row.get_by_role("link", name="iris", exact=True).click()
        page.wait_for_url(f"**{NAME_PAGE}")
        expect(page.locator("#mf-version-table tbody tr")).to_have_count(2)
        expect(page.locator("#mf-summary")).to_contain_text("Production: no production alias")
        shot(page, "20-name-page")
        # A version opens from its row; its page lists its siblings and links back.
        page.locator("#mf-version-table").get_by_role("link", name="1.0.0", exact=True).click()
        expect(page.locator("#mf-siblings")).to_contain_text("1.0.0 (this version)")
        page.locator("#mf-name-page-link").click()
        page.wait_for_url(f"**{NAME_PAGE}")


def test_upload_the_next_version_with_its_lineage(browser, server, tmp_path):
    from playwright.sync_api import expect

    model_file = tmp_path / "next.onnx"
    model_file.write_bytes(build_iris_onnx())
    with signed_in(browser, server) as page:
        page.goto(NAME_PAGE)
        panel = page.locator("#mf-new-version")
        expect(panel.get_by_label("Version")).to_have_value("1.1.1")  # the next patch of the highest
        panel.get_by_label("ONNX model file").set_input_files(str(model_file))
        panel.locator("summary").click()
        panel.get_by_label("Source run URL (http or https)").fill(RUN)
        panel.get_by_label("Code commit (7-64 hexadecimal characters)").fill(COMMIT)
        panel.get_by_label("Dataset").fill("iris-v4")
        panel.get_by_label("Metrics (JSON object of name → number)").fill('{"accuracy": 0.97, "f1": 0.95}')
        shot(page, "21-name-page-upload")
        panel.get_by_role("button", name="Upload and validate").click()
        expect(page.locator(".messagelist")).to_contain_text("iris 1.1.1 is being validated in the background")
        expect(page.locator("#mf-status h2")).to_have_text("Status: Ready", timeout=VALIDATION_BOUND_MS)

        page.goto(NAME_PAGE)
        lineage = page.locator('#mf-lineage-table tr[data-version="1.1.1"]')
        expect(lineage).to_contain_text("0.97")
        expect(lineage).to_contain_text(COMMIT[:12])
        expect(lineage.get_by_role("link", name=RUN)).to_have_attribute("href", RUN)
        shot(page, "22-name-page-lineage")
    shown = api(server, "GET", "/api/v1/models/by-name/iris/latest")
    assert (shown["version"], shown["metrics"], shown["code_commit"]) == (
        "1.1.1",
        {"accuracy": 0.97, "f1": 0.95},
        COMMIT,
    )


def test_promote_and_roll_back_with_the_confirmation(browser, server):
    from playwright.sync_api import expect

    with signed_in(browser, server) as page:
        page.goto(NAME_PAGE)
        # Creating production: the page that asks first says what requests without a version get.
        page.locator('#mf-version-table tr[data-version="1.1.0"]').get_by_role("button").click()
        expect(page.locator("#mf-confirm")).to_contain_text("iris@production")
        page.locator("#mf-confirm-button").click()
        expect(page.locator(".messagelist")).to_contain_text("iris@production now points at 1.1.0.")
        assert production_version(server) == "1.1.0"

        # Traffic on production, counted and shown side by side with the other versions.
        for _ in range(3):
            api(server, "POST", "/api/v1/models/by-name/iris/predict", {"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}})
        requests = page.locator('#mf-serving-table tr[data-version="1.1.0"] td').first
        deadline = time.monotonic() + 30
        while True:
            page.goto(NAME_PAGE)
            if requests.inner_text() == "3":
                break
            assert time.monotonic() < deadline, "the name page did not show the three requests"
            time.sleep(0.5)
        shot(page, "23-name-page-serving")

        # Promote 1.1.1: from -> to and the traffic production carries, before anything moves.
        page.get_by_label("Promote version").select_option("1.1.1")
        page.get_by_label("to the alias").fill("production")
        page.get_by_role("button", name="Promote…").click()
        confirmation = page.locator("#mf-confirm")
        expect(confirmation).to_contain_text(
            "iris@production: 1.1.0 → 1.1.1; 1.1.0 answered 3 requests in the last 24 h."
        )
        shot(page, "24-promote-confirmation")
        assert production_version(server) == "1.1.0"  # nothing moved yet
        page.locator("#mf-confirm-button").click()
        expect(page.locator(".messagelist")).to_contain_text("iris@production now points at 1.1.1 (was 1.1.0).")
        expect(page.locator("#mf-production-version")).to_have_text("1.1.1")
        assert production_version(server) == "1.1.1"

        # Roll back: to the version production pointed at before, confirmed the same way.
        alias_row = page.locator('#mf-alias-table tr[data-alias="production"]')
        alias_row.get_by_role("button", name="Roll back to 1.1.0").click()
        expect(page.locator("#mf-confirm")).to_contain_text("iris@production: 1.1.1 → 1.1.0")
        shot(page, "25-rollback-confirmation")
        page.locator("#mf-confirm-button").click()
        expect(page.locator(".messagelist")).to_contain_text("iris@production now points at 1.1.0 (was 1.1.1).")
        assert production_version(server) == "1.1.0"
        # The audit trail has both moves, by the signed-in user; the alias's own page is linked.
        page.locator("#mf-aliases details summary").click()
        expect(page.locator("#mf-alias-history tbody tr").first).to_contain_text("1.1.1 → 1.1.0")
        expect(page.locator("#mf-alias-history tbody tr").first).to_contain_text(ADMIN_USER)
        expect(alias_row.get_by_role("link", name="@production", exact=True)).to_be_visible()
        shot(page, "26-rolled-back")

        # The models list shows each name's production version.
        page.goto("/admin/registry/mlmodel/?name__exact=iris")
        expect(page.locator("#result_list .mf-production")).to_have_text("1.1.0 (this version)")


def test_a_viewer_sees_the_page_without_promote_and_is_refused_the_act(browser, server):
    from playwright.sync_api import expect

    server.manage("shell", "--no-imports", "-c", CREATE_VIEWER)
    with signed_in(browser, server, user=VIEWER, password=VIEWER_PASSWORD) as page:
        page.goto(NAME_PAGE)
        expect(page.locator("#mf-version-table")).to_be_visible()
        expect(page.locator(".mf-promote-form")).to_have_count(0)
        expect(page.get_by_role("button", name="Roll back to 1.1.1")).to_have_count(0)
        # A forged POST, with a valid CSRF token (the header's log-out form has one), is refused.
        token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
        response = page.request.post(
            NAME_PAGE + "promote/",
            form={"version": "1.1.1", "alias": "production", "post": "yes", "csrfmiddlewaretoken": token},
            headers={"Referer": server.base + NAME_PAGE},
        )
        assert response.status == 403
    assert production_version(server) == "1.1.0"


@pytest.mark.parametrize(("width", "sidebar"), [(1366, True), (390, False)])
def test_the_name_page_fits_the_screen(browser, server, width, sidebar):
    from playwright.sync_api import expect

    with signed_in(browser, server, width=width, height=900) as page:
        page.goto(NAME_PAGE)
        if sidebar:
            expect(page.locator("#nav-sidebar")).to_be_visible()
        assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        expect(page.locator("#mf-serving-table")).to_be_visible()
        shot(page, f"27-name-page-{width}px")


def tab_presses_to(page, element_id: str, *, bound: int) -> int:
    presses = 0
    while page.evaluate("document.activeElement && document.activeElement.id") != element_id:
        page.keyboard.press("Tab")
        presses += 1
        assert presses <= bound, f"#{element_id} is not within {bound} Tab presses"
    return presses


def test_try_it_is_the_first_field_of_the_model_page(browser, server):
    """Before, Try it sat below the change form's Save and Delete (62 Tab presses to its input).
    Now it is the content's first field: after the header and the sidebar's links, or right
    after the "Skip to main content" link."""
    with signed_in(browser, server) as page:
        model_id = api(server, "GET", "/api/v1/models/by-name/iris/latest")["id"]
        page.goto(f"/admin/registry/mlmodel/{model_id}/change/")
        # The sidebar's links come first and grow with the apps a user may see (a superuser here):
        # the bound is "fewer than before", and the skip link below is the short way.
        presses = tab_presses_to(page, "mf-try-input", bound=61)
        print(f"Try it's input after {presses} Tab presses, sidebar open")
        shot(page, "28-model-page-try-it-focused")
        assert json.loads(page.locator("#mf-try-input").input_value()) == {"X": [[0.0, 0.0, 0.0, 0.0]]}

        page.reload()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to main content"
        page.keyboard.press("Enter")
        tab_presses_to(page, "mf-try-input", bound=1)


# A red drift on production's version (X[0]; X[1] green) and a rollout on iris@production whose
# guard tripped, written as the monitoring run and registry.rollouts write them. Prints the
# production version and the candidate.
DRIFT_AND_TRIP = """
from datetime import timedelta
from django.utils import timezone
from monitoring.models import DriftResult
from registry import rollouts, services
from registry.models import MLModel, ModelAlias
if not ModelAlias.objects.filter(name="iris", alias="production").exists():
    newest = MLModel.objects.named("iris").ready().newest_first().first()
    services.alias_set(name="iris", alias="production", version=newest.version)
alias = ModelAlias.objects.select_related("model").get(name="iris", alias="production")
candidate = MLModel.objects.named("iris").ready().exclude(pk=alias.model_id).newest_first().first()
now = timezone.now()
red = dict(name="X[0]", source="input", kind="numeric", level="red", psi=0.62, p_value=1e-12, test="ks", rows=400,
           bin_edges=[4.3, 4.8, 5.0, 5.4, 5.8, 6.3, 7.9], reference_counts=[170, 160, 170, 170, 160, 170],
           window_counts=[2, 5, 10, 40, 120, 223])
green = dict(red, name="X[1]", level="green", psi=0.01, p_value=0.6, window_counts=[68, 64, 68, 68, 64, 68])
DriftResult.objects.update_or_create(model=alias.model, window="1h", defaults=dict(
    window_start=now - timedelta(hours=1), window_end=now, predictions=40, rows=400, level="red", state="red",
    features=[red, green], computed_at=now))
change = rollouts.rollout_set(name="iris", alias="production", candidate=candidate.version, weight=20,
                              guard={"guard_enabled": True})
reason = "candidate p95 80.0 ms exceeds the primary's 20.0 ms by more than 50%"
rollouts.rollout_trip(rollout_id=change.rollout.pk, reason=reason)
print(alias.model.version, candidate.version)
"""


def test_drift_and_a_tripped_rollout_on_the_name_page(browser, server):
    from playwright.sync_api import expect

    primary, candidate = server.manage("shell", "--no-imports", "-c", DRIFT_AND_TRIP).split()[-2:]
    anchor = "mf-drift-" + primary.replace(".", "-")
    for width in (1366, 390):
        with signed_in(browser, server, width=width, height=900) as page:
            page.goto(NAME_PAGE)
            # The versions table: production's version drifted (red, X[0]); the candidate is marked.
            row = page.locator(f'#mf-version-table tr[data-version="{primary}"]')
            expect(row.get_by_role("link", name="red", exact=True)).to_be_visible()
            expect(page.locator(f'#mf-version-table tr[data-version="{candidate}"]')).to_contain_text(
                "candidate of @production (0 %)"
            )
            # The alias: its rollout, the guard's trip and why.
            alias_row = page.locator('#mf-alias-table tr[data-alias="production"]')
            expect(alias_row).to_contain_text(f"{primary} → {candidate} at 0 %")
            expect(alias_row).to_contain_text("guard tripped")
            expect(alias_row).to_contain_text("p95 80.0 ms exceeds the primary's 20.0 ms")
            # The drift section: the red feature's chart, described in words.
            row.get_by_role("link", name="red", exact=True).click()
            section = page.locator(f"#{anchor}")
            expect(section).to_contain_text("drift red")
            chart = section.get_by_role("img", name="X[0]: red, the window (1h) against the reference")
            expect(chart).to_be_visible()
            assert "X[0] is red (PSI 0.62" in chart.locator("desc").text_content()
            expect(section.locator("svg.mf-drift-chart")).to_have_count(1)  # X[1] is green: not charted
            # (A visually hidden column label once escaped its scroller: the page scrolled sideways.)
            assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate(
                "[document.scrollingElement.scrollWidth, innerWidth]"
            )
            shot(page, f"29-name-page-drift-{width}px")
            page.goto(NAME_PAGE + "#mf-aliases")
            shot(page, f"30-name-page-rollout-{width}px")
            # "Rollout…" opens the alias's rollout panel.
            alias_row.get_by_role("link", name="Rollout of @production").click()
            page.wait_for_url("**/admin/registry/modelalias/*/rollout/")
            expect(page.locator("h1")).to_contain_text("Rollout of iris@production")
