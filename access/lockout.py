"""Brute-force protection of the admin login (django-axes, configured in settings.py).

Failed logins are counted in the database, per client address and per username: either
reaching AXES_FAILURE_LIMIT locks further attempts, even with the right password, until
AXES_COOLOFF_MINUTES have passed without a failure or an operator runs `manage.py axes_reset`
(or axes_reset_username / axes_reset_ip). API keys are not passwords and never go through it.
"""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle


def client_address(request) -> str:
    """The address failures are counted against: the one the API's throttles use, so
    X-Forwarded-For counts only behind REST_FRAMEWORK NUM_PROXIES proxies (a client cannot
    reset its count by sending the header)."""
    return BaseThrottle().get_ident(request)
