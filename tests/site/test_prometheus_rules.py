"""deploy/prometheus/: the alerting rules pass `promtool check rules` and their unit tests
(`promtool test rules`, every alert fired and not fired at its boundary), the example
configuration passes `promtool check config`, and every metric the rules read is one a real
GET /metrics exports, so renaming a metric breaks this test instead of silently muting an alert.

promtool comes with Debian's prometheus package (`apt-get install prometheus`; .ci/run installs
it): without it the promtool tests skip, except under CI, where they fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.inference.api import predict
from tests.registry.onnx_factories import make_iris_model

ROOT = Path(settings.BASE_DIR)
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "modelforge-rules.yml"
RULE_TESTS = PROMETHEUS / "modelforge-rules.test.yml"
EXAMPLE = PROMETHEUS / "prometheus.example.yml"
# A name of ours, not a recorded one (level:metric:operations) nor part of one.
OUR_METRIC = re.compile(r"(?<![\w:])modelforge_\w+(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])[a-z_]+:\w+:\w+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: apt-get install -y prometheus (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_check():
    done = run("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_rules_pass_their_unit_tests():
    done = run("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_threshold_fails_the_unit_tests(tmp_path):
    """The unit tests hold the thresholds: 5xx over 5 % is not 5xx over 10 %."""
    rules_text = RULES.read_text()
    assert rules_text.count('{outcome="server_error"} > 0.05') == 1
    (tmp_path / RULES.name).write_text(
        rules_text.replace('{outcome="server_error"} > 0.05', '{outcome="server_error"} > 0.1')
    )
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "ModelForgeServerErrors" in done.stdout + done.stderr


def test_the_example_configuration_passes_promtool_check(tmp_path):
    """As deployed: the rule file next to it, the key file where it says (here, in tmp_path)."""
    key = tmp_path / "modelforge.key"
    key.write_text("prometheus.key\n")
    config = EXAMPLE.read_text().replace("/etc/prometheus/modelforge.key", str(key))
    (tmp_path / EXAMPLE.name).write_text(config)
    shutil.copy(RULES, tmp_path / RULES.name)
    done = run("check", "config", EXAMPLE.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_every_alert_has_a_severity_a_for_and_its_runbook_entry():
    operations = (ROOT / "docs" / "operations.md").read_text()
    headings = {
        line.removeprefix("#### ").strip().lower() for line in operations.splitlines() if line.startswith("#### ")
    }
    alerts = [rule for rule in rules() if "alert" in rule]
    assert alerts
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert {"summary", "description", "runbook_url"} <= alert["annotations"].keys(), alert["alert"]
        assert alert["annotations"]["runbook_url"] == f"docs/operations.md#{alert['alert'].lower()}"
        assert alert["alert"].lower() in headings, f"docs/operations.md has no runbook entry for {alert['alert']}"
        # Only a one-off event (a counter's increase) may fire without a `for:`.
        assert "for" in alert or "increase(" in alert["expr"], alert["alert"]


def test_every_recorded_series_the_rules_read_is_recorded():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    read = {name for rule in rules() for name in RECORDED.findall(rule["expr"])}
    assert read <= recorded, read - recorded
    assert recorded <= read, f"recorded and never used: {recorded - read}"


@pytest.mark.django_db
def test_every_metric_the_rules_read_is_exported(ready_model, client_for, read_client, settings):
    """Against the real view, after real predictions: the sample names of each family (a
    counter's _total, a histogram's _bucket...), also of families with no sample yet."""
    settings.CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
    model = ready_model(make_iris_model(zipmap=False), name="rules-iris", version="1.0.0")
    predict_client = client_for("predict")
    assert predict(predict_client, model["id"], {"X": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    assert predict(predict_client, model["id"], {"X": [[1.0]]}).status_code == 400
    response = read_client.get("/metrics")
    assert response.status_code == 200
    exported = set()
    for family in text_string_to_metric_families(response.content.decode()):
        exported |= {sample.name for sample in family.samples}
        exported |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ())}
    read = {name for rule in rules() for name in OUR_METRIC.findall(rule["expr"])}
    assert {"modelforge_requests_total", "modelforge_request_duration_seconds_bucket"} <= read  # the regex works
    if not settings.CELERY_BROKER_URL:
        # Without a broker the server's own threads run the jobs: there are no workers to count
        # (tests/jobs/test_worker_heartbeats.py checks it with one).
        read.discard("modelforge_workers")
    assert read <= exported, f"the rules read metrics GET /metrics does not export: {sorted(read - exported)}"
