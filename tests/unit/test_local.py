"""``fnbus local``: which processes a replica count stands for, and finding them again."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fnbus import local
from fnbus.config import SERVICE_NAMES, Settings
from fnbus.local import Replica
from fnbus.service import listening_socket


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(home=tmp_path, instance_id="", **extra)  # type: ignore[arg-type]


def test_the_default_is_one_process_per_service_with_the_single_stack_command_lines(
        tmp_path: Path) -> None:
    replicas = local.plan(_settings(tmp_path), SERVICE_NAMES)
    assert [r.name for r in replicas] == list(SERVICE_NAMES)
    by_name = {r.name: r for r in replicas}
    assert by_name["registry"].args() == ["-m", "fnbus.cli", "serve", "registry"]
    assert by_name["invoker"].args() == ["-m", "fnbus.cli", "serve", "invoker", "--port", "8083",
                                         "--instance-id", "invoker-1"]
    assert by_name["gateway"].args() == ["-m", "fnbus.cli", "serve", "gateway", "--port", "8080",
                                         "--instance-id", "gateway-1"]
    assert local.port_clashes(replicas) == []


def test_three_invokers_and_two_gateways(tmp_path: Path) -> None:
    replicas = local.plan(_settings(tmp_path, invokers=3, gateways=2), ["invoker", "gateway"])
    assert replicas == [
        Replica("invoker", "invoker", 8083, "invoker-1"),
        Replica("invoker-2", "invoker", 8183, "invoker-2"),
        Replica("invoker-3", "invoker", 8283, "invoker-3"),
        Replica("gateway", "gateway", 8180, "gateway-1", shared_port=8080),
        Replica("gateway-2", "gateway", 8280, "gateway-2", shared_port=8080),
    ]
    assert replicas[4].args()[-2:] == ["--shared-port", "8080"]
    assert local.port_clashes(local.plan(_settings(tmp_path, invokers=3, gateways=2),
                                         SERVICE_NAMES)) == []


def test_ids_are_stable_and_carry_the_stacks_own_instance_id(tmp_path: Path) -> None:
    settings = _settings(tmp_path, invokers=2, gateways=2).model_copy(
        update={"instance_id": "bench-ab12"})
    first = local.plan(settings, ["invoker", "gateway"])
    assert [r.instance_id for r in first] == ["bench-ab12-invoker-1", "bench-ab12-invoker-2",
                                              "bench-ab12-gateway-1", "bench-ab12-gateway-2"]
    assert local.plan(settings, ["invoker", "gateway"]) == first


def test_a_step_that_lands_on_another_service_is_refused(tmp_path: Path) -> None:
    # invoker-2 on 8083 + 1 = 8084, the scheduler's port
    clashes = local.port_clashes(local.plan(
        _settings(tmp_path, invokers=2, replica_port_step=1), SERVICE_NAMES))
    assert clashes == ["port 8084: invoker-2, scheduler"]
    assert local.main("start", _settings(tmp_path, invokers=2, replica_port_step=1)) == 2


def test_recorded_replicas_are_found_from_the_pid_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("invoker", "invoker-3", "invoker-2", "invoker-x", "invokers", "gateway", "kafka"):
        (run / f"{name}.pid").write_text("1")
    assert local.recorded(_settings(tmp_path), "invoker") == ["invoker", "invoker-2", "invoker-3"]
    assert local.recorded(_settings(tmp_path), "gateway") == ["gateway"]
    assert local.recorded(_settings(tmp_path / "none"), "gateway") == []


def test_a_running_replica_is_described_by_its_command_line() -> None:
    argv = Replica("gateway-2", "gateway", 8280, "gateway-2", shared_port=8080).args()
    assert local._from_cmdline("gateway-2", ["/venv/bin/python", *argv]) == Replica(
        "gateway-2", "gateway", 8280, "gateway-2", shared_port=8080)
    assert local._from_cmdline("registry", ["python", "-m", "fnbus.cli", "serve", "registry"]) is None


def test_replica_ports_cover_own_and_shared_ports(tmp_path: Path) -> None:
    ports = local.replica_ports(_settings(tmp_path, invokers=2, gateways=2))
    assert {8080, 8180, 8280, 8083, 8183, 8081, 8082, 8084, 8085} == ports


@pytest.mark.parametrize(("n", "ok"), [(0, False), (1, True), (9, True), (10, False)])
def test_replica_counts_are_bounded(tmp_path: Path, n: int, ok: bool) -> None:
    if ok:
        assert _settings(tmp_path, invokers=n).invokers == n
    else:
        with pytest.raises(ValueError):
            _settings(tmp_path, invokers=n)


def test_two_sockets_share_a_port_only_with_reuse_port() -> None:
    first = listening_socket("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port, reuse_port=True)
    first.listen()
    second.listen()
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port).listen()
        # Both accept: the kernel hands each new connection to one of them.
        seen = set()
        for _ in range(64):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
            for sock in (first, second):
                sock.settimeout(0.2)
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                conn.close()
                seen.add(sock.fileno())
            if len(seen) == 2:
                break
        assert len(seen) == 2
    finally:
        first.close()
        second.close()


def test_runner_socket_paths_that_cannot_fit_are_refused_before_starting(tmp_path: Path) -> None:
    fits = _settings(Path("/tmp/short"), invokers=3)
    assert local.socket_paths_too_long(fits) == []
    deep = _settings(Path("/tmp/" + "d" * 60), invokers=2).model_copy(
        update={"instance_id": "a-rather-long-stack-id"})
    assert local.socket_paths_too_long(deep) == ["a-rather-long-stack-id-invoker-1",
                                                 "a-rather-long-stack-id-invoker-2"]
    assert local.main("start", deep, ["invoker"]) == 2
