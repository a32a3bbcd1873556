"""Turn one lambda version into an image: FROM the runtime image, plus code and dependencies.

Dependencies are installed on the host (npm / pip reach their registries from
here; builds and containers have no network) into the build context, then
copied into the image:

- Node: ``/opt/fnbus/node_modules`` (found by ``require`` from the runner's code path);
- Python: ``/opt/fnbus/deps`` on ``PYTHONPATH``.

Bounds: only registry versions are installed (:mod:`fnbus.dependencies`); the
installed dependencies may not exceed ``max_dependencies_bytes`` (checked while
the install runs, which is stopped once it is over, and again after it); the
build context is written to a temporary file and streamed to the engine, never
held in memory. :meth:`Builder.prune` keeps the images of a lambda's last
``keep_deployments`` versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from fnbus.dependencies import DEFAULT_MAX_DEPENDENCIES_BYTES, installed_bytes, too_large
from fnbus.schemas import DeployRequest, Runtime

log = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 300
#: How often a running install's size is measured against the cap.
SIZE_POLL_S = 0.5
LABEL_LAMBDA = "fnbus.lambda"
LABEL_VERSION = "fnbus.version"
LABEL_DIGEST = "fnbus.content-digest"


class BuildFailed(Exception):
    """The version cannot become an image; the message is the deployment's cause."""


@dataclass(frozen=True)
class Artifact:
    image: str
    reused: bool
    #: No image had this tag before the build: removing it on failure takes nothing
    #: from an earlier deployment.
    new_tag: bool = False


def image_tag(request: DeployRequest) -> str:
    return f"fnbus/lambda-{request.lambda_id}:v{request.version}"


def content_digest(request: DeployRequest, base_image_id: str) -> str:
    blob = json.dumps({"code": request.code, "deps": request.dependencies, "runtime":
                       request.runtime.value, "base": base_image_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def dockerfile(request: DeployRequest, digest: str) -> str:
    """The version's Dockerfile. Its first step after FROM is unique to this version.

    Labels are written literally (not as ``ARG`` steps, which are identical for every
    lambda of a runtime): a build then never shares an intermediate image with another
    lambda's build, so undeploying one lambda (which removes its images and their
    untagged parents) cannot pull a cached layer from under a concurrent build.
    """
    labels = {LABEL_LAMBDA: request.lambda_id, LABEL_VERSION: str(request.version), LABEL_DIGEST: digest}
    lines = ["ARG BASE_IMAGE", "FROM ${BASE_IMAGE}",
             "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items()),
             "COPY code/ /opt/fnbus/code/"]
    if request.dependencies and request.runtime is Runtime.NODEJS:
        lines.append("COPY deps/node_modules/ /opt/fnbus/node_modules/")
    elif request.dependencies:
        lines += ["COPY deps/ /opt/fnbus/deps/", "ENV PYTHONPATH=/opt/fnbus/deps"]
    return "\n".join(lines) + "\n"


async def _watch_size(proc: asyncio.subprocess.Process, target: Path, max_bytes: int) -> int:
    """Kill ``proc`` once ``target`` holds more than ``max_bytes``; return the size seen then."""
    while True:
        await asyncio.sleep(SIZE_POLL_S)
        size = await asyncio.to_thread(installed_bytes, target)
        if size > max_bytes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return size


async def _run(*argv: str, cwd: Path, max_bytes: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    watch = asyncio.create_task(_watch_size(proc, cwd, max_bytes))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=INSTALL_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildFailed(f"installing dependencies took longer than {INSTALL_TIMEOUT_S} s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    if watch.done() and not watch.cancelled() and watch.exception() is None:
        raise BuildFailed(too_large(watch.result(), max_bytes))
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-8:]
        raise BuildFailed("installing dependencies failed: " + " | ".join(tail))


async def install_dependencies(request: DeployRequest, target: Path,
                               max_bytes: int = DEFAULT_MAX_DEPENDENCIES_BYTES) -> None:
    """Install into ``target``; BuildFailed if the install fails or grows over ``max_bytes``."""
    await asyncio.to_thread(target.mkdir, parents=True)
    deps = request.dependencies
    if request.runtime is Runtime.NODEJS:
        manifest = json.dumps({"name": "fnbus-lambda", "private": True, "dependencies": deps})
        await asyncio.to_thread((target / "package.json").write_text, manifest)
        # --ignore-scripts: no install hooks of third-party packages run on the host.
        await _run("npm", "install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                   "--loglevel=error", cwd=target, max_bytes=max_bytes)
    else:
        specs = [f"{name}{spec if spec[0] in '<>=!~' else '==' + spec}" if spec != "*" else name
                 for name, spec in deps.items()]
        await _run("python3", "-m", "pip", "install", "--quiet", "--no-input", "--only-binary=:all:",
                   "--target", str(target), *specs, cwd=target, max_bytes=max_bytes)
    # The watcher samples; the final size is what goes into the image.
    size = await asyncio.to_thread(installed_bytes, target)
    if size > max_bytes:
        raise BuildFailed(too_large(size, max_bytes))


def _write_context(root: Path, out: Path) -> None:
    """The build context as a tar file on disk (``out`` is outside ``root``)."""
    with tarfile.open(out, mode="w") as tar:
        tar.add(root, arcname=".")


class Builder:
    def __init__(self, client: docker.DockerClient, runtime_images: dict[str, str], *,
                 max_dependencies_bytes: int = DEFAULT_MAX_DEPENDENCIES_BYTES) -> None:
        self.client = client
        self.runtime_images = runtime_images
        self.max_dependencies_bytes = max_dependencies_bytes

    def _base_id(self, runtime: Runtime) -> str:
        try:
            return str(self.client.images.get(self.runtime_images[runtime.value]).id)
        except ImageNotFound:
            raise BuildFailed(f"runtime image {self.runtime_images[runtime.value]} is missing; "
                              "run deploy/images/build.sh") from None

    def _existing(self, tag: str, digest: str) -> tuple[bool, bool]:
        """(an image has this tag, it has this content)."""
        try:
            image = self.client.images.get(tag)
        except ImageNotFound:
            return False, False
        return True, bool(image.labels.get(LABEL_DIGEST) == digest)

    async def build(self, request: DeployRequest) -> Artifact:
        tag = image_tag(request)
        base_id = await asyncio.to_thread(self._base_id, request.runtime)
        digest = content_digest(request, base_id)
        tagged, same = await asyncio.to_thread(self._existing, tag, digest)
        if same:
            return Artifact(tag, reused=True)
        with tempfile.TemporaryDirectory(prefix="fnbus-build-") as tmp:
            root = Path(tmp) / "context"
            code_dir = root / "code"
            await asyncio.to_thread(code_dir.mkdir, parents=True)
            name = "index.js" if request.runtime is Runtime.NODEJS else "lambda.py"
            await asyncio.to_thread((code_dir / name).write_text, request.code)
            if request.dependencies:
                await install_dependencies(request, root / "deps", self.max_dependencies_bytes)
            await asyncio.to_thread((root / "Dockerfile").write_text, dockerfile(request, digest))
            context = Path(tmp) / "context.tar"
            await asyncio.to_thread(_write_context, root, context)
            await asyncio.to_thread(self._docker_build, context, tag,
                                    {"BASE_IMAGE": self.runtime_images[request.runtime.value]})
        return Artifact(tag, reused=False, new_tag=not tagged)

    def _docker_build(self, context: Path, tag: str, args: dict[str, str]) -> None:
        try:
            with context.open("rb") as fileobj:
                self._build_from(fileobj, tag, args)
        except (BuildError, APIError, DockerException) as exc:
            raise BuildFailed(f"image build failed: {exc}") from exc

    def _build_from(self, fileobj: BinaryIO, tag: str, args: dict[str, str]) -> None:
        # A file object is streamed to the engine in chunks, never read whole.
        self.client.images.build(fileobj=fileobj, custom_context=True, tag=tag, buildargs=args,
                                 rm=True, forcerm=True, network_mode="none", pull=False,
                                 # An identical version is reused before building (_existing);
                                 # the cache could only hand out another lambda's layers.
                                 nocache=True)

    def _remove_image_sync(self, image: str) -> bool:
        try:
            self.client.images.remove(image)
        except ImageNotFound:
            return False
        except DockerException as exc:
            log.info("image not removed", extra={"image": image, "error": str(exc)})
            return False
        return True

    async def remove_image(self, image: str) -> bool:
        """Remove one image unless a container uses it; True if it went."""
        return await asyncio.to_thread(self._remove_image_sync, image)

    def _prune_sync(self, lambda_id: str, keep: int, current: str | None) -> int:
        # Low-level listings: the object API inspects each entry and fails on one
        # removed meanwhile (the invoker retires containers all the time).
        images = self.client.api.images(filters={"label": f"{LABEL_LAMBDA}={lambda_id}"})
        current_id = None
        if current is not None:
            with contextlib.suppress(ImageNotFound):
                current_id = self.client.api.inspect_image(current)["Id"]
        in_use = {c.get("ImageID") for c in self.client.api.containers(all=True)}

        def version(image: dict[str, Any]) -> int:
            value = str((image.get("Labels") or {}).get(LABEL_VERSION, ""))
            return int(value) if value.isdigit() else -1

        def tagged(image: dict[str, Any]) -> bool:
            return any(tag != "<none>:<none>" for tag in image.get("RepoTags") or [])

        # Tagged images by version, newest first; an untagged one (replaced by a
        # rebuild of its version) never counts as one of the kept deployments.
        newest = sorted((i for i in images if tagged(i)), key=version, reverse=True)
        kept = {i["Id"] for i in newest[:keep]}
        removed = 0
        for image in images:
            image_id = image["Id"]
            if image_id in kept or image_id == current_id or image_id in in_use:
                continue
            try:
                self.client.api.remove_image(image_id)
                removed += 1
            except ImageNotFound:
                pass
            except DockerException as exc:  # a container started since we looked
                log.info("old image not removed", extra={"image": image_id, "error": str(exc)})
        return removed

    async def prune(self, lambda_id: str, keep: int, current: str | None = None) -> int:
        """Remove the lambda's images beyond the newest ``keep`` versions; how many went.

        Never ``current`` (the image just deployed) nor an image a container
        (a warm one of the invoker) still uses: those go in a later prune.
        """
        return await asyncio.to_thread(self._prune_sync, lambda_id, keep, current)

    def _remove_images(self, lambda_id: str) -> tuple[int, int]:
        """Remove the lambda's images; (removed, still in use)."""
        images = self.client.images.list(filters={"label": f"{LABEL_LAMBDA}={lambda_id}"})
        removed = 0
        for image in images:
            try:
                self.client.images.remove(image.id, force=True)
                removed += 1
            except DockerException:
                pass  # a container of it is still being retired by the invoker
        return removed, len(images) - removed

    async def remove_images(self, lambda_id: str, still_wanted: Callable[[], bool] = lambda: True,
                            attempts: int = 10, pause_s: float = 3.0) -> int:
        """Remove the lambda's images, retrying while the invoker retires their containers.

        Stops as soon as ``still_wanted()`` turns false (the lambda was deployed again).
        """
        total = 0
        for _ in range(attempts):
            if not still_wanted():
                break
            removed, left = await asyncio.to_thread(self._remove_images, lambda_id)
            total += removed
            if not left:
                break
            await asyncio.sleep(pause_s)
        return total
