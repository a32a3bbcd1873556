"""The egress policy refuses the ports of a scaled local stack's replicas too."""

from __future__ import annotations

from fnbus import local
from fnbus.config import Settings
from fnbus.egress import EgressPolicy


def test_every_replica_port_of_the_local_stack_is_a_platform_port() -> None:
    settings = Settings(invokers=3, gateways=2)
    policy = EgressPolicy.from_settings(settings)
    assert local.replica_ports(settings) <= policy.platform_ports
    assert {8083, 8183, 8283, 8180, 8280} <= policy.platform_ports
