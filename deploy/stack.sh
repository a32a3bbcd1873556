#!/usr/bin/env bash
# The one-machine stack: what `make up`, `make down`, `make test` and `make bench` run.
#
#   stack.sh up      install what is missing, start infrastructure and the six
#                    services, create the demo account, print URLs and the admin key;
#                    INVOKERS=n / GATEWAYS=m (or FNBUS_INVOKERS / FNBUS_GATEWAYS) run
#                    several invoker and gateway processes (docs/scaling.md)
#   stack.sh down    stop the services, then the infrastructure we started
#   stack.sh status  one line per component
#   stack.sh test    install, start infrastructure, lint, type-check, run all tests
#   stack.sh unit    unit tests only
#   stack.sh lint    ruff + mypy
#   stack.sh bench   the benchmark harness
#   stack.sh bench-scale  bench/scale.py on a private stack (SCALE_ARGS=--quick);
#                    the JSON report goes to bench/results/scale-<time>.json
#   stack.sh chaos   fault injection on a private Kafka/PostgreSQL and private
#                    services (bench/chaos.py; CHAOS_ARGS=--ci for the small run)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FNBUS_HOME=${FNBUS_HOME:-$REPO/.fnbus}
# Replicas (make up INVOKERS=3 GATEWAYS=2); read by fnbus.config as FNBUS_INVOKERS/_GATEWAYS.
GATEWAYS_CHOSEN=${GATEWAYS:-${FNBUS_GATEWAYS:-}}
export FNBUS_INVOKERS=${INVOKERS:-${FNBUS_INVOKERS:-1}}
export FNBUS_GATEWAYS=${GATEWAYS:-${FNBUS_GATEWAYS:-1}}
VENV=$REPO/.venv
PY=$VENV/bin/python
cd "$REPO"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
elapsed() { printf '%ss' "$(( $(date +%s) - T0 ))"; }

python_env() {
  # Recreate/refresh the venv only when pyproject.toml changed since the last install.
  local stamp="$VENV/.fnbus-pyproject.sha256" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [[ -x $PY && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  say "python: installing the project and its dependencies into .venv"
  [[ -x $PY ]] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
}

secrets_env() {
  # Random per-installation secrets for the local stack (read by fnbus.config).
  local file=$FNBUS_HOME/secrets.env
  mkdir -p "$FNBUS_HOME"
  if [[ ! -s $file ]]; then
    umask 077
    {
      echo "FNBUS_SERVICE_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
      echo "FNBUS_JWT_SECRET=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
      echo "FNBUS_SECRETS_KEY=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    } > "$file"
  fi
}

local_env() {
  # Development egress: lambdas may call test servers on this host (127.0.0.0/8); the
  # platform's own ports stay refused (docs/egress.md). Set the variable to '[]' to close it.
  export FNBUS_EGRESS_EXEMPT_CIDRS=${FNBUS_EGRESS_EXEMPT_CIDRS:-'["127.0.0.0/8"]'}
}

# The web console's bundle (services/gateway/console/dist/, git-ignored): npm ci of the
# pinned packages (downloads cached in ~/.npm), then esbuild. Skipped while the sources'
# hash matches the stamp in dist/.
console_build() {
  local dir=services/gateway/console want have="" t0
  t0=$(date +%s)
  want=$(cat "$dir"/package.json "$dir"/package-lock.json "$dir"/build.mjs \
    libs/runtimes/node/lp-faas-toolbelt/index.d.ts $(find "$dir/src" -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)
  [[ -f $dir/dist/.stamp ]] && read -r have <"$dir/dist/.stamp"
  if [[ $have == "$want" && -f $dir/dist/console.js ]]; then
    say "console: bundle up to date"
    return 0
  fi
  local lock
  lock=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ $(cat "$dir/node_modules/.lock.sha256" 2>/dev/null) != "$lock" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline --cache "$HOME/.npm")
    echo "$lock" >"$dir/node_modules/.lock.sha256"
  fi
  (cd "$dir" && node build.mjs)
  echo "$want" >"$dir/dist/.stamp"
  say "console: built in $(( $(date +%s) - t0 ))s"
}

prepare() {
  deploy/local/install.sh
  python_env
  console_build
  deploy/local/infra.sh start
  deploy/images/build.sh
}

cmd_up() {
  T0=$(date +%s)
  prepare
  secrets_env
  local_env
  say "services: starting the six services ($FNBUS_INVOKERS invoker(s), $FNBUS_GATEWAYS gateway(s))"
  "$VENV/bin/fnbus" local start
  "$PY" -m fnbus.demo
  say "fnbus is up in $(elapsed)"
  echo "  logs:  $FNBUS_HOME/logs/   stop: make down"
}

cmd_down() {
  if [[ -x $VENV/bin/fnbus ]]; then
    "$VENV/bin/fnbus" local stop || true
  fi
  deploy/local/infra.sh stop
}

cmd_status() {
  [[ -x $VENV/bin/fnbus ]] && "$VENV/bin/fnbus" local status || true
  deploy/local/infra.sh status || true
}

cmd_lint() {
  python_env
  say "lint: ruff"
  "$VENV/bin/ruff" check libs services tests bench
  say "types: mypy"
  # No incremental cache: a stale one has reported attributes missing that exist.
  "$VENV/bin/mypy" --cache-dir=/dev/null libs/fnbus services
}

run_pytest() {
  local code=0
  # --tb=native: Python 3.11's AST-based traceback formatting has crashed pytest
  # (INTERNALERROR) here; a hard timeout keeps a wedged run from eating CI's limit.
  timeout --kill-after=30 "${FNBUS_TEST_TIMEOUT_S:-3000}" "$PY" -m pytest --tb=native "$@" || code=$?
  if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests for: $*" >&2
    return 0
  fi
  return $code
}

cmd_unit() {
  python_env
  run_pytest -q -m "not integration" tests/unit
}

cmd_test() {
  T0=$(date +%s)
  prepare
  cmd_lint
  say "tests: unit and integration (real Kafka, PostgreSQL, Docker)"
  run_pytest -q -ra --durations=15 tests
  say "make test passed in $(elapsed)"
}

cmd_bench() {
  prepare
  secrets_env
  local_env
  # The harness drives one demo account far beyond the default per-account quotas.
  export FNBUS_ACCOUNT_INVOCATIONS_PER_S=${FNBUS_ACCOUNT_INVOCATIONS_PER_S:-1000000}
  export FNBUS_ACCOUNT_INVOCATIONS_BURST=${FNBUS_ACCOUNT_INVOCATIONS_BURST:-1000000}
  export FNBUS_ACCOUNT_ASYNC_BACKLOG_MAX=${FNBUS_ACCOUNT_ASYNC_BACKLOG_MAX:-1000000}
  # One gateway process per core, up to two, unless GATEWAYS says otherwise: a gateway
  # is one event loop, and async acceptance is bounded by it (see
  # docs/scaling.md, "CPU priority: the front door first").
  if [[ -z $GATEWAYS_CHOSEN ]]; then
    FNBUS_GATEWAYS=$(( $(nproc) >= 2 ? 2 : 1 ))
    export FNBUS_GATEWAYS
  fi
  say "bench: $FNBUS_GATEWAYS gateway(s), $FNBUS_INVOKERS invoker(s)"
  "$VENV/bin/fnbus" local start
  "$PY" -m fnbus.demo >/dev/null
  "$PY" bench/run.py "$@"  # also reads BENCH_ARGS, e.g. make bench BENCH_ARGS=--quick
}

cmd_bench_scale() {
  # Its own stack (fnbus.local in a temporary home, own database and topics); only
  # Kafka, PostgreSQL, the engine and the runtime images are shared.
  prepare
  local out
  out=bench/results/scale-$(date -u +%Y%m%dT%H%M%SZ).json
  # shellcheck disable=SC2086 # SCALE_ARGS is a list of options
  "$PY" bench/scale.py --json "$out" ${SCALE_ARGS:-} "$@"
}

cmd_chaos() {
  # Only the broker jars, the engine and the runtime images are shared; the
  # harness starts its own Kafka, PostgreSQL and services on free ports.
  deploy/local/install.sh
  python_env
  deploy/local/infra.sh start docker
  deploy/images/build.sh
  # shellcheck disable=SC2086 # CHAOS_ARGS is a list of options
  "$PY" bench/chaos.py ${CHAOS_ARGS:-} "$@"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  test) cmd_test ;;
  unit) cmd_unit ;;
  lint) cmd_lint ;;
  bench) shift; cmd_bench "$@" ;;
  bench-scale) shift; cmd_bench_scale "$@" ;;
  chaos) shift; cmd_chaos "$@" ;;
  *) echo "usage: $0 up|down|status|test|unit|lint|bench|bench-scale|chaos" >&2; exit 2 ;;
esac
