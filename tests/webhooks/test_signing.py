"""The signature, as receivers check it: the snippet in docs/webhooks.md and the README verifies
real deliveries, and refuses a changed body, another secret and an old timestamp."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.conf import settings

from core import events
from webhooks import services, signing

ROOT = Path(settings.BASE_DIR)


def documented_verify(path: str):
    """The `verify` function of a document's Python block that defines it, as a reader copies it."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)
    (block,) = [block for block in blocks if "def verify(" in block]
    namespace: dict = {}
    exec(compile(block, path, "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace["verify"]


@pytest.mark.parametrize("path", ["docs/webhooks.md", "README.md"])
@pytest.mark.django_db(transaction=True)
def test_the_documented_snippet_verifies_a_real_delivery(path, receiver):
    verify = documented_verify(path)
    services.subscription_create(name="r", url=receiver.url(), event_types=["drift.raised"], secret=receiver.secret)
    events.emit("drift.raised", {"name": "iris"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    header = got.headers["ModelForge-Signature"]
    assert verify(receiver.secret, header, got.body)
    assert not verify(receiver.secret, header, got.body + b" ")
    assert not verify("whsec_another-secret-entirely-000", header, got.body)


def test_old_timestamps_are_refused():
    body = b'{"id":"x"}'
    old = signing.signature("s" * 30, int(time.time()) - 3600, body)
    assert not signing.verify("s" * 30, old, body)
    assert not documented_verify("docs/webhooks.md")("s" * 30, old, body)
    assert signing.verify("s" * 30, signing.signature("s" * 30, int(time.time()), body), body)
