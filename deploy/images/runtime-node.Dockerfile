# fnbus Node.js lambda runtime: the runner (libs/runtimes/node/) on a Node base.
#
# Build context: a directory holding the runner under RUNNER_DIR.
#   deploy/images/build.sh assembles a small one (RUNNER_DIR=runner); from the
#   repository root the same file works with
#     docker build -f deploy/images/runtime-node.Dockerfile \
#       --build-arg RUNNER_DIR=libs/runtimes/node --build-arg BASE_IMAGE=node:20-slim .
# BASE_IMAGE: any image with `node` (>= 18) on PATH. The default is the base
#   deploy/images/build.sh makes from Debian packages where no registry is reachable.
# No RUN steps: builds need no network.
ARG BASE_IMAGE=fnbus/base-node:bookworm
FROM ${BASE_IMAGE}
ARG RUNNER_DIR=runner

ENV NODE_ENV=production \
    HOME=/tmp \
    FNBUS_RUNNER_SOCKET=/run/fnbus/runner.sock

WORKDIR /opt/fnbus
# owned by root, read-only for the runtime user
COPY ${RUNNER_DIR}/ /opt/fnbus/runner/

LABEL org.opencontainers.image.title="fnbus runtime (Node.js)"
USER 1000:1000
CMD ["node", "/opt/fnbus/runner/runner.js"]
