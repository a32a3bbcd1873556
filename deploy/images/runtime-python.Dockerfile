# fnbus Python lambda runtime: the runner (libs/runtimes/python/) on a Python base.
#
# Build context: a directory holding the runner under RUNNER_DIR.
#   deploy/images/build.sh assembles a small one (RUNNER_DIR=runner); from the
#   repository root the same file works with
#     docker build -f deploy/images/runtime-python.Dockerfile \
#       --build-arg RUNNER_DIR=libs/runtimes/python --build-arg BASE_IMAGE=python:3.11-slim .
# BASE_IMAGE: any image with `python3` (>= 3.11) on PATH. The default is the base
#   deploy/images/build.sh makes from Debian packages where no registry is reachable.
# No RUN steps: builds need no network.
ARG BASE_IMAGE=fnbus/base-python:bookworm
FROM ${BASE_IMAGE}
ARG RUNNER_DIR=runner

# read-only root filesystem: never write .pyc files; unbuffered so logs are not lost
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FNBUS_RUNNER_SOCKET=/run/fnbus/runner.sock

WORKDIR /opt/fnbus
# owned by root, read-only for the runtime user
COPY ${RUNNER_DIR}/ /opt/fnbus/runner/

LABEL org.opencontainers.image.title="fnbus runtime (Python)"
USER 1000:1000
CMD ["python3", "/opt/fnbus/runner/runner.py"]
