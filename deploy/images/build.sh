#!/usr/bin/env bash
# Build the lambda runtime images in the local Docker engine ($FNBUS_DOCKER_HOST).
#
#   build.sh [--force]
#
# 1. Base images, made from Debian packages because no container registry can
#    be reached here: mmdebstrap (minbase) writes a root filesystem tarball to
#    $FNBUS_HOME/cache/<name>.tar, `docker import` turns it into
#      fnbus/base-node:bookworm    nodejs + ca-certificates
#      fnbus/base-python:bookworm  python3
#    each with the user fnbus (uid/gid 1000). Skipped while the image exists
#    and was made from the same recipe (label org.fnbus.recipe); the tarball
#    is reused when only the image is missing.
# 2. Runtime images from deploy/images/runtime-{node,python}.Dockerfile with
#    the runner from libs/runtimes/{node,python}/ in a small temporary context:
#      fnbus/runtime-node:latest, fnbus/runtime-python:latest
#    Rebuilt only when the Dockerfile, the runner files or the base image
#    changed (label org.fnbus.content-hash).
#
# Environment: FNBUS_BASE_IMAGE_NODE / FNBUS_BASE_IMAGE_PYTHON build the
# runtimes on another base (e.g. node:20-slim, python:3.11-slim) and skip
# step 1 for it; FNBUS_DEBIAN_MIRROR overrides mmdebstrap's default mirror.
# --force rebuilds everything (the base tarballs too).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../local/common.sh
source "$HERE/../local/common.sh"

SUITE=bookworm
# Bump when the way base images are made changes, to rebuild them everywhere.
BASE_RECIPE_VERSION=1
FORCE=""
TEMP_DIRS=()
cleanup() {
  ((${#TEMP_DIRS[@]} == 0)) || rm -rf "${TEMP_DIRS[@]}"
}
trap cleanup EXIT
LOG=$FNBUS_LOGS/images.log

# The engine in this workplace cannot reach a registry and has no buildx
# plugin: use the classic builder, which never pulls an image that exists locally.
export DOCKER_BUILDKIT=0

# Options shared by both base images: smallest useful Debian, no docs, man
# pages or translations (dpkg keeps excluding them in the image), no apt lists.
# shellcheck disable=SC2016 # hooks run in mmdebstrap's shell, where $1 is the new root
MMDEBSTRAP_OPTS=(
  --variant=minbase
  --aptopt='APT::Install-Recommends "false"'
  --aptopt='APT::Install-Suggests "false"'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  # apt picks usrmerge for init-system-helpers' "usrmerge | usr-is-merged";
  # usr-is-merged is there too, so drop usrmerge and the perl it pulled in
  # (~45 MB). The per-image check below fails the build if this took away
  # anything the image needs.
  --customize-hook='chroot "$1" apt-get --yes --quiet=2 purge --autoremove usrmerge perl libperl5.36 perl-modules-5.36 libnumber-compare-perl libtext-glob-perl'
  # the unprivileged user the runtime images run as (USER 1000:1000)
  --customize-hook='chroot "$1" groupadd --gid 1000 fnbus'
  --customize-hook='chroot "$1" useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin fnbus'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/cache/ldconfig/aux-cache'
)

image_exists() {
  docker image inspect "$1" >/dev/null 2>&1
}

image_label() {
  docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/^<no value>$//'
}

image_size() {
  local bytes
  bytes=$(docker image inspect -f '{{.Size}}' "$1" 2>/dev/null || echo 0)
  printf '%d MB\n' $((bytes / 1000000))
}

# build_base NAME CHECK PACKAGE...
# CHECK: a command run inside the finished root (e.g. "node --version").
build_base() {
  local name=$1 check=$2
  shift 2
  local -a pkgs=("$@")
  local tag=fnbus/base-$name:$SUITE component=base-$name
  local tar=$FNBUS_CACHE/base-$name-$SUITE.tar
  local t0 t1 recipe have="" include
  t0=$(fnbus_now)
  include=$(
    IFS=,
    printf '%s' "${pkgs[*]}"
  )
  local -a opts=("${MMDEBSTRAP_OPTS[@]}"
    "--customize-hook=chroot \"\$1\" dpkg -s ${pkgs[*]} >/dev/null"
    "--customize-hook=chroot \"\$1\" $check")
  recipe=$(printf '%s\n' "$BASE_RECIPE_VERSION" "$SUITE" "$include" "${opts[@]}" \
    "${FNBUS_DEBIAN_MIRROR:-}" | sha256sum | cut -c1-16)

  if [[ -z $FORCE ]] && image_exists "$tag"; then
    have=$(image_label "$tag" org.fnbus.recipe)
    if [[ $have == "$recipe" ]]; then
      fnbus_log "$component" "$tag present, $(image_size "$tag") ($(fnbus_elapsed "$t0"))"
      return 0
    elif [[ -z $have ]]; then
      fnbus_log "$component" "$tag present (not made by build.sh, kept) ($(fnbus_elapsed "$t0"))"
      return 0
    fi
    fnbus_log "$component" "$tag was made from another recipe, rebuilding"
  fi

  local cached=""
  [[ -s $tar && -f $tar.recipe ]] && read -r cached <"$tar.recipe"
  if [[ -z $FORCE && $cached == "$recipe" ]]; then
    fnbus_log "$component" "reusing $tar"
  else
    command -v mmdebstrap >/dev/null || fnbus_die "$component" "mmdebstrap not found; run deploy/local/install.sh"
    ((EUID == 0)) || fnbus_die "$component" "mmdebstrap needs root here"
    fnbus_log "$component" "mmdebstrap $SUITE minbase + $include…"
    t1=$(fnbus_now)
    local -a mirror=()
    [[ -n ${FNBUS_DEBIAN_MIRROR:-} ]] && mirror=("$FNBUS_DEBIAN_MIRROR")
    rm -f "$tar.tmp.tar" "$tar.recipe"
    printf '==== %s mmdebstrap %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$tag" >>"$LOG"
    if ! mmdebstrap --mode=root --format=tar "${opts[@]}" --include="$include" \
      "$SUITE" "$tar.tmp.tar" "${mirror[@]}" >>"$LOG" 2>&1; then
      rm -f "$tar.tmp.tar"
      fnbus_log_tail images 30
      fnbus_die "$component" "mmdebstrap failed, see $LOG"
    fi
    mv -f "$tar.tmp.tar" "$tar"
    printf '%s\n' "$recipe" >"$tar.recipe"
    fnbus_log "$component" "rootfs $(du -h "$tar" | cut -f1) in $tar ($(fnbus_elapsed "$t1"))"
  fi

  t1=$(fnbus_now)
  if ! docker import \
    --change "LABEL org.fnbus.recipe=$recipe" \
    --change "LABEL org.opencontainers.image.title=\"fnbus base $name (Debian $SUITE)\"" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tar" "$tag" >>"$LOG" 2>&1; then
    fnbus_log_tail images
    fnbus_die "$component" "docker import failed, see $LOG"
  fi
  fnbus_log "$component" "imported $tag, $(image_size "$tag") ($(fnbus_elapsed "$t1"))"
}

# List the runner's files (paths relative to the runner directory): what git
# tracks or would track there, so caches and git-ignored files stay out.
runner_files() {
  local dir=$1
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$dir" && git ls-files --cached --others --exclude-standard -- . |
      while IFS= read -r f; do [[ -f $f ]] && printf '%s\n' "$f"; done) | LC_ALL=C sort
  else
    (cd "$dir" && find . -type f ! -path '*/__pycache__/*' ! -path '*/node_modules/*' \
      ! -path '*/.mypy_cache/*' ! -name '*.pyc' | sed 's|^\./||') | LC_ALL=C sort
  fi
}

# build_runtime LANG ENTRYPOINT BASE_IMAGE
build_runtime() {
  local lang=$1 entry=$2 base=$3
  local tag=fnbus/runtime-$lang:latest component=runtime-$lang
  local src=$REPO/libs/runtimes/$lang dockerfile=$HERE/runtime-$lang.Dockerfile
  local t0 ctx hash have base_id f
  t0=$(fnbus_now)
  [[ -f $dockerfile ]] || fnbus_die "$component" "missing $dockerfile"
  image_exists "$base" || fnbus_die "$component" "base image $base is not in the engine"
  base_id=$(docker image inspect -f '{{.Id}}' "$base")

  ctx=$(mktemp -d "${TMPDIR:-/tmp}/fnbus-ctx-$lang.XXXXXX")
  TEMP_DIRS+=("$ctx")
  mkdir -p "$ctx/runner"
  cp "$dockerfile" "$ctx/Dockerfile"
  if [[ -f $src/$entry ]]; then
    while IFS= read -r f; do
      mkdir -p "$ctx/runner/$(dirname "$f")"
      cp -p "$src/$f" "$ctx/runner/$f"
    done < <(runner_files "$src")
  else
    # Only in the temporary context, never in libs/: lets the image build be
    # exercised before the runner exists. Containers from it exit at once.
    fnbus_warn "$component" "WARNING: $src/$entry missing, building with a placeholder runner"
    case $lang in
      node) printf '%s\n' 'console.error("fnbus placeholder runner: libs/runtimes/node/runner.js was missing at build time"); process.exit(1);' >"$ctx/runner/$entry" ;;
      python) printf '%s\n' 'import sys' 'sys.exit("fnbus placeholder runner: libs/runtimes/python/runner.py was missing at build time")' >"$ctx/runner/$entry" ;;
    esac
  fi
  # world-readable, owned by root in the image, nothing writable by uid 1000
  chmod -R u=rwX,go=rX "$ctx/runner"

  hash=$( (
    cd "$ctx"
    printf 'base %s %s\n' "$base" "$base_id"
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16)

  if [[ -z $FORCE ]] && image_exists "$tag"; then
    have=$(image_label "$tag" org.fnbus.content-hash)
    if [[ $have == "$hash" ]]; then
      fnbus_log "$component" "$tag up to date ($hash) ($(fnbus_elapsed "$t0"))"
      return 0
    fi
  fi

  fnbus_log "$component" "building $tag on $base…"
  printf '==== %s docker build %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$tag" >>"$LOG"
  if ! docker build --quiet --force-rm \
    --build-arg "BASE_IMAGE=$base" \
    --label "org.fnbus.content-hash=$hash" \
    -t "$tag" -f "$ctx/Dockerfile" "$ctx" >>"$LOG" 2>&1; then
    fnbus_log_tail images
    fnbus_die "$component" "docker build failed, see $LOG"
  fi
  fnbus_log "$component" "built $tag ($hash), $(image_size "$tag") ($(fnbus_elapsed "$t0"))"
}

main() {
  case ${1:-} in
    "") ;;
    --force) FORCE=1 ;;
    *)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
      exit 2
      ;;
  esac
  local t0
  t0=$(fnbus_now)
  command -v docker >/dev/null || fnbus_die images "docker CLI not found; run deploy/local/install.sh"
  timeout 20 docker info >/dev/null 2>&1 ||
    fnbus_die images "no Docker engine answers at $FNBUS_DOCKER_HOST; run deploy/local/infra.sh start docker"

  local node_base=${FNBUS_BASE_IMAGE_NODE:-fnbus/base-node:$SUITE}
  local python_base=${FNBUS_BASE_IMAGE_PYTHON:-fnbus/base-python:$SUITE}
  if [[ -z ${FNBUS_BASE_IMAGE_NODE:-} ]]; then
    build_base node "node --version" nodejs ca-certificates
  fi
  if [[ -z ${FNBUS_BASE_IMAGE_PYTHON:-} ]]; then
    build_base python "python3 -c 'import asyncio, json, ssl, sqlite3'" python3
  fi
  build_runtime node runner.js "$node_base"
  build_runtime python runner.py "$python_base"
  fnbus_log images "done ($(fnbus_elapsed "$t0"))"
}

main "$@"
