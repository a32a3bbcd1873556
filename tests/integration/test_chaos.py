"""Fault injection, CI-sized: ``bench/chaos.py --ci`` against its own private stack.

The harness starts its own Kafka broker and PostgreSQL cluster on free ports and
the services as OS processes (the shared infrastructure is never touched), puts
steady sync and async load on a lambda, kills or restarts one part at a time and
counts what the callers saw. What must hold for each scenario:

- no accepted async invocation is lost (each has its activation record);
- every sync caller got a result or an error with the documented envelope
  before its own timeout;
- the platform answers again within 10 s of the dependency's return.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def test_faults_lose_nothing_and_recover(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--ci",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=540, cwd=REPO)
    assert proc.returncode in (0, 1), f"harness failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text()), "the last line and the file disagree"
    scenarios = {s["name"]: s for s in last["scenarios"]}
    assert set(scenarios) == {"invoker_kill", "postgres_restart", "log_ingest_kill"}
    for name, s in scenarios.items():
        assert s["async_accepted"] > 0 and s["sync_ok"] > 0, (name, s)
        assert s["lost"] == 0, (name, s)
        assert s["sync_unanswered"] == 0, (name, s)
        assert s["recovery_s"] is not None and s["recovery_s"] <= 10, (name, s)
    assert proc.returncode == 0, proc.stdout[-4000:]
