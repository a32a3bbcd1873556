"""Turn one lambda version into an image: FROM the runtime image, plus code and dependencies.

Dependencies are installed on the host (npm / pip reach their registries from
here; builds and containers have no network) into the build context, then
copied into the image:

- Node: ``/opt/fnbus/node_modules`` (found by ``require`` from the runner's code path);
- Python: ``/opt/fnbus/deps`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from fnbus.schemas import DeployRequest, Runtime

INSTALL_TIMEOUT_S = 300
LABEL_LAMBDA = "fnbus.lambda"
LABEL_VERSION = "fnbus.version"
LABEL_DIGEST = "fnbus.content-digest"


class BuildFailed(Exception):
    """The version cannot become an image; the message is the deployment's cause."""


@dataclass(frozen=True)
class Artifact:
    image: str
    reused: bool


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


async def _run(*argv: str, cwd: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=INSTALL_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise BuildFailed(f"installing dependencies took longer than {INSTALL_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-8:]
        raise BuildFailed("installing dependencies failed: " + " | ".join(tail))


async def install_dependencies(request: DeployRequest, target: Path) -> None:
    await asyncio.to_thread(target.mkdir, parents=True)
    deps = request.dependencies
    if request.runtime is Runtime.NODEJS:
        manifest = json.dumps({"name": "fnbus-lambda", "private": True, "dependencies": deps})
        await asyncio.to_thread((target / "package.json").write_text, manifest)
        # --ignore-scripts: no install hooks of third-party packages run on the host.
        await _run("npm", "install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                   "--loglevel=error", cwd=target)
    else:
        specs = [f"{name}{spec if spec[0] in '<>=!~' else '==' + spec}" if spec != "*" else name
                 for name, spec in deps.items()]
        await _run("python3", "-m", "pip", "install", "--quiet", "--no-input", "--only-binary=:all:",
                   "--target", str(target), *specs, cwd=target)


def _context_tar(root: Path) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(root, arcname=".")
    buf.seek(0)
    return buf


class Builder:
    def __init__(self, client: docker.DockerClient, runtime_images: dict[str, str]) -> None:
        self.client = client
        self.runtime_images = runtime_images

    def _base_id(self, runtime: Runtime) -> str:
        try:
            return str(self.client.images.get(self.runtime_images[runtime.value]).id)
        except ImageNotFound:
            raise BuildFailed(f"runtime image {self.runtime_images[runtime.value]} is missing; "
                              "run deploy/images/build.sh") from None

    def _existing(self, tag: str, digest: str) -> bool:
        try:
            image = self.client.images.get(tag)
        except ImageNotFound:
            return False
        return bool(image.labels.get(LABEL_DIGEST) == digest)

    async def build(self, request: DeployRequest) -> Artifact:
        tag = image_tag(request)
        base_id = await asyncio.to_thread(self._base_id, request.runtime)
        digest = content_digest(request, base_id)
        if await asyncio.to_thread(self._existing, tag, digest):
            return Artifact(tag, reused=True)
        with tempfile.TemporaryDirectory(prefix="fnbus-build-") as tmp:
            root = Path(tmp)
            code_dir = root / "code"
            code_dir.mkdir()
            name = "index.js" if request.runtime is Runtime.NODEJS else "lambda.py"
            (code_dir / name).write_text(request.code)
            if request.dependencies:
                await install_dependencies(request, root / "deps")
            (root / "Dockerfile").write_text(dockerfile(request, digest))
            context = _context_tar(root)
            await asyncio.to_thread(self._docker_build, context, tag,
                                    {"BASE_IMAGE": self.runtime_images[request.runtime.value]})
        return Artifact(tag, reused=False)

    def _docker_build(self, context: io.BytesIO, tag: str, args: dict[str, str]) -> None:
        try:
            self.client.images.build(fileobj=context, custom_context=True, tag=tag, buildargs=args,
                                     rm=True, forcerm=True, network_mode="none", pull=False,
                                     # An identical version is reused before building (_existing);
                                     # the cache could only hand out another lambda's layers.
                                     nocache=True)
        except (BuildError, APIError, DockerException) as exc:
            raise BuildFailed(f"image build failed: {exc}") from exc

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
