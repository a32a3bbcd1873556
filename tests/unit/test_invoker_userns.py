"""services/invoker/app.py: what the invoker reports about the engine's user-namespace remapping."""

from __future__ import annotations

from services.invoker.app import userns_remapped


def test_an_engine_without_remapping() -> None:
    # `docker info` of this workplace's engine.
    assert not userns_remapped({"SecurityOptions": ["name=seccomp,profile=default"],
                                "DockerRootDir": "/var/lib/docker"})
    assert not userns_remapped({})


def test_an_engine_with_remapping() -> None:
    assert userns_remapped({"SecurityOptions": ["name=seccomp,profile=default", "name=userns"],
                            "DockerRootDir": "/var/lib/docker/100000.100000"})


def test_remapping_with_a_root_dir_that_names_no_mapping_still_counts() -> None:
    assert userns_remapped({"SecurityOptions": ["name=userns"], "DockerRootDir": "/data/docker"})
