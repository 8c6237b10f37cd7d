"""The security suite (issue 27): each probe of the abuse review, replayed. Unit-level checks run in-process; the
probes that need the real service (memory limits, fairness, rate limits, headers, ``Host``) run against
:mod:`service_fixtures`' stack (real uvicorn, RQ worker and redis-server)."""

from __future__ import annotations

import pytest

from erasepro_jobs import webhooks

# --------------------------------------------------------------------------------------------- webhook targets
# Every form the review found accepted, plus the wrappers of loopback and metadata addresses.
REFUSED_TARGETS = [
    "http://100.64.0.1/hook",  # shared address space (carrier-grade NAT)
    "http://100.100.100.200/latest/meta-data",  # a cloud metadata address inside 100.64/10
    "http://[2002:7f00:1::]/hook",  # 6to4 wrapping 127.0.0.1
    "http://[2002:a9fe:a9fe::]/hook",  # 6to4 wrapping 169.254.169.254
    "http://192.88.99.1/hook",  # the 6to4 relay anycast block
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://[::ffff:a9fe:a9fe]/hook",  # IPv4-mapped metadata
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of loopback
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of metadata
    "http://[64:ff9b:1::808:808]/hook",  # local-use NAT64
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo (client 192.0.2.45: documentation)
    "http://[::127.0.0.1]/hook",  # IPv4-compatible loopback
    "http://[fd00::1]/hook", "http://[fe80::1]/hook", "http://0.0.0.0/hook", "http://198.18.0.1/hook",
    "http://8.8.8.8:6379/hook", "http://8.8.8.8:22/hook", "https://8.8.8.8:8443/hook",  # ports other than 80/443
]


@pytest.mark.parametrize("url", REFUSED_TARGETS)
def test_webhook_target_forms_refused(url: str) -> None:
    assert webhooks.check_target(url, allow_private=False, ports=frozenset({80, 443}))


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "http://8.8.8.8/hook", "http://[2606:4700:4700::1111]/",
                                 "http://[2002:808:808::]/hook", "http://[64:ff9b::808:808]/hook"])
def test_public_targets_pass(url: str) -> None:
    assert webhooks.check_target(url, allow_private=False, ports=frozenset({80, 443})) is None


def test_operator_may_allow_more_ports() -> None:
    assert webhooks.check_target("https://8.8.8.8:8443/hook", False, webhooks.parse_ports("443,8443")) is None
    assert webhooks.check_target("https://8.8.8.8:8443/hook", False, webhooks.parse_ports("any")) is None
    with pytest.raises(ValueError):
        webhooks.parse_ports("80,70000")
