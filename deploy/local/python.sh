#!/usr/bin/env bash
# Create the project virtualenv ($REPO/.venv) and install the project into it
# (`pip install -e "${REPO}[dev]"`), only when pyproject.toml changed since the
# last successful install (its sha256 is kept in .venv/.fnbus-pyproject.sha256,
# the same stamp deploy/stack.sh uses). Pass --force to reinstall anyway.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV=$REPO/.venv
STAMP=$VENV/.fnbus-pyproject.sha256

main() {
  local t0 want have="" log=$FNBUS_LOGS/install-python.log
  t0=$(fnbus_now)
  want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
  [[ -f $STAMP ]] && read -r have <"$STAMP"
  if [[ ${1:-} != --force && -x $VENV/bin/python && $have == "$want" ]]; then
    fnbus_log python "$VENV up to date ($(fnbus_elapsed "$t0"))"
    return 0
  fi
  if [[ ! -x $VENV/bin/python ]]; then
    fnbus_log python "creating $VENV…"
    python3 -m venv "$VENV" || fnbus_die python "python3 -m venv failed (apt package python3-venv)"
  fi
  fnbus_log python "pip install -e .[dev]…"
  rm -f "$STAMP"
  if ! {
    "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
      "$VENV/bin/python" -m pip install --quiet -e "${REPO}[dev]"
  } >"$log" 2>&1; then
    fnbus_log_tail install-python 30
    fnbus_die python "pip failed, see $log"
  fi
  printf '%s\n' "$want" >"$STAMP"
  fnbus_log python "installed ($(fnbus_elapsed "$t0"))"
}

main "$@"
