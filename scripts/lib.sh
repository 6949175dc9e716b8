# shellcheck shell=bash
# Helpers shared by scripts/*.sh. Source it after `set -euo pipefail`; it defines paths,
# service defaults and small functions, and starts nothing. The benchmarks' own helpers are
# in scripts/bench/lib.sh, which sources this file.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${DB_SYNC_CACHE:-$HOME/.cache/db-sync}
# Keep the (large) build outside the repo so checkouts and CI caches can share it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
# Python tools (moto S3 server, duckdb, database drivers for the benchmarks); scripts/setup.sh.
export VENV=$CACHE_DIR/venv

# Local test services; tests and config/config.yaml read the same variables.
PG_PORT=${PG_PORT:-15432}
MYSQL_PORT=${MYSQL_PORT:-13306}
S3_PORT=${S3_PORT:-19000} # moto S3 server (scripts/services.sh)
SERVICES_DIR=${SERVICES_DIR:-$ROOT/data/services}
PG_SUPERPASS=postgres # password of role postgres in the local test server

NO_INSTALL=${NO_INSTALL:-0} # 1: report missing packages instead of installing them
_APT_UPDATED=0

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# need_apt PKG... — install Debian packages (apt-get update once per run).
need_apt() {
  local sudo=()
  if [[ $NO_INSTALL == 1 ]]; then
    die "missing package(s) $*: run 'apt-get install -y $*' or scripts/setup.sh without --no-install"
  fi
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "missing package(s) $*: run 'apt-get install -y $*' as root"
    sudo=(sudo)
  fi
  if [[ $_APT_UPDATED != 1 ]]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed; check the network and /etc/apt/sources.list"
    _APT_UPDATED=1
  fi
  log "apt-get install $*"
  # A policy-rc.d that exits 101 keeps the packages from starting system PostgreSQL /
  # MariaDB on 5432 / 3306; an existing one (e.g. Docker's) is left alone.
  # shellcheck disable=SC2016
  "${sudo[@]}" bash -c '
    set -e
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
      trap "rm -f $policy" EXIT
      printf "#!/bin/sh\nexit 101\n" >"$policy" && chmod 755 "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  ' need_apt "$@" || die "apt-get install $* failed (see above); fix apt and rerun scripts/setup.sh"
}

# find_pg_bin NAME — a PostgreSQL server program: PATH first, then the newest
# /usr/lib/postgresql/*/bin (Debian keeps initdb/pg_ctl off PATH).
find_pg_bin() {
  local p d
  if p=$(command -v "$1" 2>/dev/null); then
    printf '%s\n' "$p"
    return 0
  fi
  while read -r d; do
    [[ -x $d/$1 ]] && { printf '%s\n' "$d/$1"; return 0; }
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  return 1
}

# java_major JDK_DIR — feature version of a JDK (17 for 17.0.15, 8 for 1.8.0).
java_major() {
  local v=""
  if [[ -f $1/release ]]; then
    v=$(sed -n 's/^JAVA_VERSION="\(.*\)"/\1/p' "$1/release")
  fi
  [[ -n $v ]] || v=$("$1/bin/javac" -version 2>&1 | awk '{print $2}')
  v=${v#1.}
  printf '%s\n' "${v%%[.+-]*}"
}

# use_java — pick a JDK >= 17 and export JAVA_HOME (also read by the jni crate and by
# db-sync to find libjvm.so). Order: $JAVA_HOME, the Debian JDK 17, javac on PATH.
# Returns 1 when none fits; callers decide whether that is fatal.
use_java() {
  local arch jh p candidates=()
  arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
  [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME")
  candidates+=("/usr/lib/jvm/java-17-openjdk-$arch")
  if p=$(command -v javac 2>/dev/null); then
    candidates+=("$(dirname "$(dirname "$(readlink -f "$p")")")")
  fi
  for jh in "${candidates[@]}"; do
    if [[ -x $jh/bin/javac ]] && (($(java_major "$jh") >= 17)); then
      export JAVA_HOME=$jh
      case ":$PATH:" in *":$jh/bin:"*) ;; *) export PATH="$jh/bin:$PATH" ;; esac
      # Harmless when db-sync dlopens libjvm itself; needed if it links it.
      case ":${LD_LIBRARY_PATH:-}:" in
        *":$jh/lib/server:"*) ;;
        *) export LD_LIBRARY_PATH="$jh/lib/server${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
      esac
      return 0
    fi
  done
  return 1
}
use_java || true

# port_open PORT — true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# psql_db DB ARGS... — psql into DB of the local PostgreSQL as postgres over TCP.
psql_db() {
  local db=$1 psql
  shift
  psql=$(command -v psql) || die "psql not found: run scripts/setup.sh"
  PGPASSWORD=$PG_SUPERPASS "$psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}

psql_shop() { psql_db shop "$@"; }
