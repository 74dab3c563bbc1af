"""The alias admin's rollout panel in a real browser: start a rollout from the alias's page,
confirm the split before and after, see it live, abort it (the console's server and browser:
tests/e2e/test_console.py). Screenshots to tests/e2e/artifacts/rollout-*.png."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.test_console import api, browser, page, server, shot  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.e2e


def predict(server, routing_key: str) -> str:  # noqa: F811
    request = urllib.request.Request(  # noqa: S310 (our own loopback server)
        f"{server.base}/api/v1/models/by-name/iris/predict",
        data=json.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}).encode(),
        headers={
            "Authorization": f"Bearer {server.key}",
            "Content-Type": "application/json",
            "X-Routing-Key": routing_key,
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.headers["X-Model-Version"]


def test_start_a_rollout_from_the_alias_page_confirm_the_split_and_abort(page, server):  # noqa: F811
    from playwright.sync_api import expect

    api(server, "PUT", "/api/v1/models/by-name/iris/aliases/production", {"version": "1.0.0"})
    page.goto("/admin/registry/modelalias/?name__exact=iris")
    page.locator("#result_list").get_by_role("link", name="iris").first.click()
    page.locator("#mf-rollout-link").click()
    expect(page.locator("#mf-split")).to_contain_text("1.0.0 (primary): 100.0 %")
    page.locator("#id_candidate").select_option(label="1.1.0")
    page.locator("#id_weight").fill("25")
    shot(page, "rollout-1-panel")
    page.locator("#mf-rollout-submit").click()

    expect(page.locator(".mf-lead")).to_have_text(
        "iris@production: primary 100 % / candidate 0 % → primary 75 % / candidate 25 %."
    )
    shot(page, "rollout-2-confirm")
    page.locator("#mf-confirm-button").click()
    expect(page.locator("#mf-split")).to_contain_text("1.1.0 (candidate): 25.0 %")

    answered = [predict(server, f"user-{index}") for index in range(60)]
    assert set(answered) == {"1.0.0", "1.1.0"}
    page.reload()
    expect(page.locator("#mf-rollout-trail")).to_contain_text("Rollout started")
    shot(page, "rollout-3-live")

    page.locator("#mf-abort").click()
    expect(page.locator(".mf-lead")).to_contain_text("→ primary 100 % / candidate 0 %")
    page.locator("#mf-confirm-button").click()
    expect(page.locator("#mf-split")).not_to_contain_text("candidate")
    expect(page.locator("#mf-rollout-trail")).to_contain_text("Aborted")
    shot(page, "rollout-4-aborted")
    assert {predict(server, f"user-{index}") for index in range(20)} == {"1.0.0"}
