"""bench/cpu.py: core-milliseconds per call and the ceiling they imply."""

from __future__ import annotations

import pytest

from bench import cpu


def test_per_call_ms_turns_shares_of_a_core_into_core_ms_per_call() -> None:
    shares = {"gateway": 50.0, "kafka": 30.0, "wrk": 20.0, "idle": 10.0,
              "other_processes": ["x 1%"], "other_processes_percent": 1.0}
    per_call = cpu.per_call_ms(shares, 500)
    # 50 % of one core at 500 calls/s: 0.5 s of CPU per second / 500 = 1 ms per call.
    assert per_call == {"gateway": 1.0, "kafka": 0.6, "wrk": 0.4, "total": 2.0}
    assert cpu.per_call_ms(shares, 0) == {}


def test_ceiling_leaves_the_load_generator_out() -> None:
    per_call = {"gateway": 1.0, "kafka": 0.6, "wrk": 0.4, "total": 2.0}
    # 1.6 core-ms per call on 2 cores: 2000 / 1.6 calls per second at most.
    assert cpu.ceiling_per_s(per_call, 2) == pytest.approx(1250.0)
    assert cpu.ceiling_per_s({"total": 0.0}, 2) is None
