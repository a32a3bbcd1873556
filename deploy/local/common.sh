# shellcheck shell=bash
# Shared helpers for the one-machine stack. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# After sourcing:
#   REPO, FNBUS_HOME (absolute), FNBUS_LOGS, FNBUS_RUN, FNBUS_CACHE,
#   FNBUS_DOCKER_HOST (and DOCKER_HOST for the docker CLI)
#   fnbus_log COMPONENT MSG...      one progress line "component: msg"
#   fnbus_warn / fnbus_die          the same on stderr (die exits 1)
#   fnbus_now / fnbus_elapsed T0    wall clock in microseconds / "3.2 s" since T0
#   fnbus_port_open HOST PORT       0 when something accepts TCP connections there
#   wait_for_port HOST PORT TIMEOUT poll until the port accepts connections
#   fnbus_wait_until TIMEOUT NAME CMD...
#                                   poll CMD until it succeeds; give up early
#                                   when the process NAME (a pidfile) has died
#   fnbus_start_detached NAME CMD...
#                                   run CMD in its own session, output appended to
#                                   $FNBUS_LOGS/NAME.log, pid in $FNBUS_RUN/NAME.pid;
#                                   working directory $FNBUS_START_DIR or $PWD
#   fnbus_pid NAME                  print the pid if NAME is running and is still
#                                   the very process we started (pid + start time)
#   fnbus_stop NAME [SIGNAL] [TIMEOUT]
#                                   SIGNAL (TERM) then wait TIMEOUT (20) s, then KILL
#
# Only processes recorded in our own pidfiles are ever signalled, and only
# while their start time still matches the one recorded at launch.

if [[ -n ${_FNBUS_COMMON_SOURCED:-} ]]; then
  return 0
fi
_FNBUS_COMMON_SOURCED=1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FNBUS_HOME=${FNBUS_HOME:-$REPO/.fnbus}
mkdir -p "$FNBUS_HOME"
FNBUS_HOME=$(cd "$FNBUS_HOME" && pwd)
FNBUS_LOGS=$FNBUS_HOME/logs
FNBUS_RUN=$FNBUS_HOME/run
FNBUS_CACHE=$FNBUS_HOME/cache
mkdir -p "$FNBUS_HOME/kafka" "$FNBUS_HOME/postgres" "$FNBUS_LOGS" "$FNBUS_RUN" "$FNBUS_CACHE"
export REPO FNBUS_HOME

FNBUS_DOCKER_HOST=${FNBUS_DOCKER_HOST:-unix:///var/run/docker.sock}
export FNBUS_DOCKER_HOST
export DOCKER_HOST=$FNBUS_DOCKER_HOST

# Rotate a log file at launch when it grew past this many bytes.
FNBUS_LOG_ROTATE_BYTES=${FNBUS_LOG_ROTATE_BYTES:-52428800}

# --- output -----------------------------------------------------------------

fnbus_log() {
  local component=$1
  shift
  printf '%s: %s\n' "$component" "$*"
}

fnbus_warn() {
  local component=$1
  shift
  printf '%s: %s\n' "$component" "$*" >&2
}

fnbus_die() {
  local component=$1
  shift
  printf '%s: ERROR: %s\n' "$component" "$*" >&2
  exit 1
}

# Print the last lines of a component's log on stderr (after a failure).
fnbus_log_tail() {
  local name=$1 lines=${2:-20}
  local log=$FNBUS_LOGS/$name.log
  if [[ -s $log ]]; then
    printf -- '--- last %s lines of %s ---\n' "$lines" "$log" >&2
    tail -n "$lines" "$log" >&2
    printf -- '---\n' >&2
  fi
}

# --- time -------------------------------------------------------------------

fnbus_now() {
  local t=$EPOCHREALTIME
  printf '%s\n' "${t/[.,]/}"
}

# fnbus_elapsed START_US -> "3.2 s"
fnbus_elapsed() {
  local start=$1 now d
  now=$(fnbus_now)
  d=$((now - start))
  ((d < 0)) && d=0
  printf '%d.%d s\n' $((d / 1000000)) $(((d / 100000) % 10))
}

# --- waiting ----------------------------------------------------------------

fnbus_port_open() {
  local host=$1 port=$2
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECONDS
wait_for_port() {
  local host=$1 port=$2 timeout_s=${3:-30}
  local deadline=$(($(fnbus_now) + timeout_s * 1000000))
  until fnbus_port_open "$host" "$port"; do
    if (($(fnbus_now) > deadline)); then
      return 1
    fi
    sleep 0.1
  done
}

# fnbus_wait_until TIMEOUT_SECONDS NAME CMD...
# Returns 0 once CMD succeeds, 1 on timeout, 2 when process NAME died first.
fnbus_wait_until() {
  local timeout_s=$1 name=$2
  shift 2
  local deadline=$(($(fnbus_now) + timeout_s * 1000000))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $name ]] && ! fnbus_pid "$name" >/dev/null; then
      return 2
    fi
    if (($(fnbus_now) > deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

# --- processes --------------------------------------------------------------

_fnbus_boot_id() {
  cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown
}

# Print "STATE STARTTIME" of a pid from /proc/PID/stat (fields 3 and 22).
_fnbus_proc_stat() {
  local pid=$1 stat rest
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  local -a f
  read -r -a f <<<"$rest"
  printf '%s %s\n' "${f[0]}" "${f[19]}"
}

fnbus_pidfile() {
  printf '%s\n' "$FNBUS_RUN/$1.pid"
}

# fnbus_pid NAME: print the pid and return 0 when the process recorded for NAME
# is alive and is the one we started; return 1 otherwise.
fnbus_pid() {
  local name=$1
  local pidf=$FNBUS_RUN/$name.pid meta=$FNBUS_RUN/$name.meta
  local pid state start rec_start rec_boot
  [[ -s $pidf && -s $meta ]] || return 1
  read -r pid <"$pidf" || true
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  read -r rec_start rec_boot _ <"$meta" || true
  [[ $rec_boot == "$(_fnbus_boot_id)" ]] || return 1
  read -r state start < <(_fnbus_proc_stat "$pid") || return 1
  [[ $state != Z && $start == "$rec_start" ]] || return 1
  printf '%s\n' "$pid"
}

# fnbus_start_detached NAME CMD [ARGS...]
# Starts CMD in a new session (no controlling terminal, survives the caller),
# stdin from /dev/null, stdout+stderr appended to $FNBUS_LOGS/NAME.log.
# The pid written is the pid of CMD itself (the launcher execs into it).
fnbus_start_detached() {
  local name=$1
  shift
  local pidf=$FNBUS_RUN/$name.pid meta=$FNBUS_RUN/$name.meta log=$FNBUS_LOGS/$name.log
  local tmp=$FNBUS_RUN/$name.pid.new pid="" state start i

  if pid=$(fnbus_pid "$name"); then
    fnbus_warn "$name" "already running (pid $pid)"
    return 0
  fi
  rm -f "$pidf" "$meta" "$tmp"

  if [[ -f $log ]] && (($(stat -c %s "$log") > FNBUS_LOG_ROTATE_BYTES)); then
    mv -f "$log" "$log.1"
  fi
  printf '==== %s fnbus: starting %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >>"$log"

  # setsid: own session and process group, so terminal hangups and Ctrl-C in
  # the caller's shell do not reach it. The inner bash records its own pid and
  # then execs CMD, so the recorded pid is CMD's pid whether or not setsid had
  # to fork.
  # FNBUS_START_DIR (default: the current directory) is its working directory.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'printf "%s\n" "$$" >"$0"; cd -- "$1" || exit 1; shift; exec "$@"' \
    "$tmp" "${FNBUS_START_DIR:-$PWD}" "$@" </dev/null >>"$log" 2>&1 &

  for ((i = 0; i < 100; i++)); do
    [[ -s $tmp ]] && break
    sleep 0.02
  done
  [[ -s $tmp ]] || {
    fnbus_warn "$name" "launcher did not report a pid"
    return 1
  }
  read -r pid <"$tmp"
  read -r state start < <(_fnbus_proc_stat "$pid") || {
    rm -f "$tmp"
    fnbus_warn "$name" "exited immediately"
    return 1
  }
  printf '%s %s %s\n' "$start" "$(_fnbus_boot_id)" "$state" >"$meta"
  mv -f "$tmp" "$pidf"
}

# fnbus_stop NAME [SIGNAL] [TIMEOUT_SECONDS]
# Returns 0 when it stopped the process (or it was not running), 1 if it had to
# be killed with SIGKILL. Stale pidfiles are removed.
fnbus_stop() {
  local name=$1 sig=${2:-TERM} timeout_s=${3:-20}
  local pidf=$FNBUS_RUN/$name.pid meta=$FNBUS_RUN/$name.meta pid deadline rc=0
  if ! pid=$(fnbus_pid "$name"); then
    rm -f "$pidf" "$meta"
    return 0
  fi
  kill -s "$sig" "$pid" 2>/dev/null || true
  deadline=$(($(fnbus_now) + timeout_s * 1000000))
  while fnbus_pid "$name" >/dev/null; do
    if (($(fnbus_now) > deadline)); then
      fnbus_warn "$name" "still running after ${timeout_s} s, sending SIGKILL"
      # The process leads its own process group (setsid): take the group down.
      kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null || true
      sleep 0.2
      rc=1
      break
    fi
    sleep 0.1
  done
  rm -f "$pidf" "$meta"
  return "$rc"
}
