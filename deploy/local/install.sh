#!/usr/bin/env bash
# Install what the one-machine stack needs and is missing:
#   1. Debian packages (PostgreSQL, Docker engine, mmdebstrap, JDK, Maven, Prometheus, ...);
#      apt-get update/install run only when a package is actually missing.
#   2. The Apache Kafka broker jars, resolved by Maven from deploy/kafka/pom.xml
#      into $FNBUS_HOME/kafka/libs (skipped while the jars match the pom).
# Idempotent; a second run only checks and takes well under a second.
# The Python virtualenv is made by the Makefile (or deploy/local/python.sh).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Debian package -> why we need it.
APT_PACKAGES=(
  postgresql              # our own cluster, run from Debian's binaries
  docker.io               # dockerd + docker CLI (+ containerd, runc)
  mmdebstrap              # base images without a container registry
  debian-archive-keyring  # mmdebstrap verifies the archive with it
  ca-certificates
  openjdk-17-jre-headless # runs the Kafka broker
  maven                   # resolves the Kafka jars from Maven Central
  python3
  python3-venv            # deploy/local/python.sh, the Makefile's .venv
  procps                  # pgrep/ps for operators and tests
  util-linux              # setsid, setpriv
  iptables                # dockerd sets up its chains even with --bridge=none
  prometheus              # scrapes the six services (infra.sh prometheus); promtool for the rule tests
  curl                    # readiness probes (infra.sh)
  chromium                # the console's browser test (Playwright drives it headless)
)

install_apt() {
  local t0 pkg status
  local -a missing=()
  t0=$(fnbus_now)
  for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    fnbus_log apt "all ${#APT_PACKAGES[@]} packages present ($(fnbus_elapsed "$t0"))"
    return 0
  fi
  ((EUID == 0)) || fnbus_die apt "missing ${missing[*]}; run as root to install them"

  local log=$FNBUS_LOGS/install-apt.log
  fnbus_log apt "installing ${missing[*]}…"
  export DEBIAN_FRONTEND=noninteractive

  # Debian's maintainer scripts would start services right away (Debian's own
  # PostgreSQL 'main' cluster on 5432, a dockerd, a Prometheus on 9090); we run our own instances, so
  # keep them from starting while apt runs, unless a policy is already in place.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, written by fnbus install.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >>"$log" 2>&1 || rc=$?
  [[ -n $own_policy ]] && rm -f "$policy"
  if ((rc != 0)); then
    fnbus_log_tail install-apt 30
    fnbus_die apt "apt-get failed (rc=$rc), full log: $log"
  fi
  fnbus_log apt "installed ${#missing[@]} package(s) ($(fnbus_elapsed "$t0"))"
}

install_kafka_jars() {
  local t0 pom=$REPO/deploy/kafka/pom.xml libs=$FNBUS_HOME/kafka/libs
  local stamp want have=""
  t0=$(fnbus_now)
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  stamp=$libs/.pom.sha256
  [[ -f $stamp ]] && read -r have <"$stamp"
  if [[ $have == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
    fnbus_log kafka "jars present: $(basename "$(compgen -G "$libs/kafka_2.13-*.jar" | head -n1)" .jar) ($(fnbus_elapsed "$t0"))"
    return 0
  fi

  command -v mvn >/dev/null || fnbus_die kafka "mvn not found (apt package maven)"
  fnbus_log kafka "downloading jars with Maven (cached in ~/.m2)…"
  local log=$FNBUS_LOGS/install-kafka.log tmp=$FNBUS_HOME/kafka/libs.new
  rm -rf "$tmp"
  # Resolve into a fresh directory and swap it in, so an interrupted download
  # never leaves a half-filled libs/ that looks complete.
  if ! mvn -B -q -Dstyle.color=never -f "$pom" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" >"$log" 2>&1; then
    fnbus_log_tail install-kafka 30
    fnbus_die kafka "maven failed, full log: $log"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || fnbus_die kafka "maven produced no kafka_2.13 jar"
  printf '%s\n' "$want" >"$tmp/.pom.sha256"
  rm -rf "$libs"
  mv "$tmp" "$libs"
  local n size
  n=$(find "$libs" -name '*.jar' | wc -l)
  size=$(du -sh "$libs" | cut -f1)
  fnbus_log kafka "$n jars ($size) in $libs ($(fnbus_elapsed "$t0"))"
}

main() {
  local t0
  t0=$(fnbus_now)
  install_apt
  install_kafka_jars
  fnbus_log install "done ($(fnbus_elapsed "$t0"))"
}

main "$@"
