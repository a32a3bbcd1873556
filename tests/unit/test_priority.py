"""The background services' CPU priority (fnbus.priority), in child processes of their own:
a nice value, once lowered, cannot be raised back by an unprivileged test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fnbus.config import REPO_ROOT

CHILD = """
import os, sys
from pathlib import Path
from fnbus import priority
print(priority.lower(int(sys.argv[1]), Path(sys.argv[2])), os.getpriority(os.PRIO_PROCESS, 0))
"""


def run(nice: int, autogroup: Path, *, own_session: bool, start_nice: int = 0) -> tuple[int, int]:
    def prepare() -> None:
        if start_nice:
            os.nice(start_nice)

    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(nice), str(autogroup)], capture_output=True, text=True,
        check=True, start_new_session=own_session, preexec_fn=prepare,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "libs")})
    returned, actual = out.stdout.split()
    return int(returned), int(actual)


def test_a_session_leader_lowers_itself_and_its_session_group(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert run(10, group, own_session=True) == (10, 10)
    assert group.read_text() == "10\n"


def test_a_process_in_someone_elses_session_leaves_the_session_alone(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert run(10, group, own_session=False) == (10, 10)
    assert group.read_text() == "/autogroup-1 nice 0\n"


def test_an_operators_lower_priority_is_kept(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    assert run(5, group, own_session=True, start_nice=15) == (15, 15)
    assert group.read_text() == "15\n"


def test_without_autogroup_only_the_process_changes(tmp_path: Path) -> None:
    assert run(7, tmp_path / "missing", own_session=True) == (7, 7)
    assert not (tmp_path / "missing").exists()


def test_only_the_queue_workers_are_background_services() -> None:
    from fnbus.priority import BACKGROUND_SERVICES

    assert BACKGROUND_SERVICES == {"invoker", "log_ingest", "deployer"}
