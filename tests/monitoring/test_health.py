import pytest

from monitoring.health import Level, level, thresholds_for
from monitoring.models import Thresholds

pytestmark = pytest.mark.django_db


def test_a_name_without_thresholds_takes_the_defaults(settings):
    settings.MONITOR_ERROR_RATE_RED = 0.2
    assert thresholds_for(["iris"])["iris"]["error_rate_red"] == 0.2


def test_a_name_s_own_threshold_overrides_the_default_and_keeps_the_rest(settings):
    settings.MONITOR_P95_RED_MS = 900.0
    Thresholds.objects.create(name="iris", error_rate_red=0.5)
    own = thresholds_for(["iris", "other"])
    assert own["iris"]["error_rate_red"] == 0.5
    assert own["iris"]["p95_red_ms"] == 900.0
    assert own["other"]["error_rate_red"] == 0.05


@pytest.mark.parametrize(
    ("requests", "errors", "p95", "expected"),
    [
        (5, 5, 10.0, Level.IDLE),
        (100, 0, 10.0, Level.GREEN),
        (100, 2, 10.0, Level.AMBER),
        (100, 9, 10.0, Level.RED),
        (100, 0, 300.0, Level.AMBER),
        (100, 0, None, Level.GREEN),
    ],
)
def test_level_by_error_rate_and_p95(requests, errors, p95, expected):
    thresholds = thresholds_for(["iris"])["iris"]
    colour, why = level(requests=requests, server_errors=errors, p95_ms=p95, thresholds=thresholds)
    assert colour is expected
    assert why
