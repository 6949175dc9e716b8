#!/usr/bin/env bash
# Local PostgreSQL (CDC source), MariaDB (stand-in MySQL target) and an S3-compatible
# server (audit files) for tests and the demo, on loopback ports and data dirs of their
# own. The system servers (5432, 3306, /run/mysqld) are never touched.
#
# Usage: scripts/services.sh [options] start|stop|status|restart [pg|mariadb|s3|all]
#   --pg-port=N    / PG_PORT       PostgreSQL port (15432); one instance per port
#   --wal-level=L  / PG_WAL_LEVEL  logical (default), replica or minimal
#   --mysql-port=N / MYSQL_PORT    MariaDB port (13306); one instance per port
#   --s3-port=N    / S3_PORT       S3 server port (19000); one instance per port
#   --tls          / SERVICES_TLS=1  PostgreSQL and MariaDB also speak TLS, with a
#                                  self-signed CA in $SERVICES_DIR/tls (ca.pem; server
#                                  certificate for 127.0.0.1 and localhost), and a role
#                                  `secure` (password securepw) that may only connect
#                                  over TLS; every other account works as without --tls
#   SERVICES_DIR                   where data dirs live ($ROOT/data/services)
# e.g. a second, independent source for the wal_level error test:
#   PG_PORT=15433 PG_WAL_LEVEL=replica scripts/services.sh start pg
#
# PostgreSQL: role postgres, password postgres (scram-sha-256 over TCP, including
# replication; trust over the unix socket, which lives in the data dir); database shop.
# MariaDB: database target (utf8mb4_bin, case-sensitive like PostgreSQL keys), user
# sync/syncpw on target.*, root@127.0.0.1 and root over the socket without password.
# S3: moto_server (from the venv that scripts/setup.sh makes), endpoint
# http://127.0.0.1:$S3_PORT (path-style), region us-east-1, access key `test`, secret
# `test`, bucket `audit` (e.g. audit.url s3://audit/PREFIX). moto keeps everything in
# memory and accepts any credentials: a stop or restart empties the store, and every start
# (re)creates the bucket. Pid file and log in $SERVICES_DIR/s3-$S3_PORT.
# moto checks credentials only once INITIAL_NO_AUTH_ACTION_COUNT requests have been served
# (default: never). A second server for "refused credentials" tests:
#   INITIAL_NO_AUTH_ACTION_COUNT=1 S3_PORT=19001 scripts/services.sh start s3
# creates the bucket with its one free request; after that every request, whatever its
# keys, gets 403 InvalidAccessKeyId (a second `start` fails the same way: use restart).
#
# Data-dir rule (PostgreSQL refuses to run as root): as root, PostgreSQL runs as the OS
# user `postgres` (or a system user `dbsyncpg`, created on first start). Its data dir is
# $SERVICES_DIR/pg-$PG_PORT when every directory above it is world-traversable (o+x,
# e.g. /work/...); otherwise (e.g. a checkout under /root, mode 700) it is
# /var/tmp/db-sync-services/pg-$PG_PORT. `status` prints the one in use. MariaDB runs as
# the invoking user (--user=root) in $SERVICES_DIR/mariadb-$MYSQL_PORT.
#
# status exits 0 when every service asked about runs, else 3 (as LSB init scripts do).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
umask 022 # the PostgreSQL user must be able to traverse directories we create

PG_WAL_LEVEL=${PG_WAL_LEVEL:-logical}
SERVICES_TLS=${SERVICES_TLS:-0}
usage="usage: scripts/services.sh [--pg-port=N] [--mysql-port=N] [--s3-port=N] [--wal-level=L] [--tls] start|stop|status|restart [pg|mariadb|s3|all]"
args=()
for arg in "$@"; do
  case $arg in
    --pg-port=*) PG_PORT=${arg#*=} ;;
    --mysql-port=*) MYSQL_PORT=${arg#*=} ;;
    --s3-port=*) S3_PORT=${arg#*=} ;;
    --wal-level=*) PG_WAL_LEVEL=${arg#*=} ;;
    --tls) SERVICES_TLS=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    -*) die "unknown option '$arg'; $usage" ;;
    *) args+=("$arg") ;;
  esac
done
((${#args[@]} >= 1 && ${#args[@]} <= 2)) || die "$usage"
CMD=${args[0]}
WHAT=${args[1]:-all}
case $CMD in start | stop | status | restart) ;; *) die "unknown command '$CMD'; $usage" ;; esac
case $WHAT in pg | mariadb | s3 | all) ;; *) die "unknown service '$WHAT'; $usage" ;; esac
[[ $PG_PORT =~ ^[0-9]+$ ]] || die "PG_PORT must be a port number, got '$PG_PORT'"
[[ $MYSQL_PORT =~ ^[0-9]+$ ]] || die "MYSQL_PORT must be a port number, got '$MYSQL_PORT'"
[[ $S3_PORT =~ ^[0-9]+$ ]] || die "S3_PORT must be a port number, got '$S3_PORT'"
case $PG_WAL_LEVEL in minimal | replica | logical) ;; *)
  die "PG_WAL_LEVEL must be minimal, replica or logical, got '$PG_WAL_LEVEL'"
  ;;
esac

# check_socket_path PATH — unix socket paths are limited to 107 bytes.
# tls_certs — a CA and a server certificate (127.0.0.1, localhost) in $SERVICES_DIR/tls,
# made once with openssl; both servers use them.
tls_certs() {
  TLS_DIR=$SERVICES_DIR/tls
  [[ -f $TLS_DIR/server.pem && -f $TLS_DIR/server.key && -f $TLS_DIR/ca.pem ]] && return 0
  command -v openssl >/dev/null || die "openssl not found: run scripts/setup.sh (installs it)"
  mkdir -p "$TLS_DIR"
  log "making a test CA and server certificate in $TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=db-sync test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
  ) || die "openssl could not make the test certificates in $TLS_DIR"
  chmod 644 "$TLS_DIR"/*.pem
}

check_socket_path() {
  ((${#1} <= 100)) || die "socket path $1 is too long for a unix socket; set SERVICES_DIR to a shorter directory"
}

# pid_alive PIDFILE NAME — the first line of PIDFILE is a live process called NAME.
pid_alive() {
  local pid
  [[ -f $1 ]] || return 1
  read -r pid <"$1" || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

# world_traversable DIR — every existing directory from / to DIR has o+x.
world_traversable() {
  local d=$1 mode
  while [[ -n $d && $d != / ]]; do
    if [[ -e $d ]]; then
      mode=$(stat -Lc %a "$d")
      ((8#$mode & 1)) || return 1
    fi
    d=$(dirname "$d")
  done
}

# ---------------------------------------------------------------- PostgreSQL

pg_init_vars() {
  local pg_ctl
  pg_ctl=$(find_pg_bin pg_ctl) || die "PostgreSQL server (pg_ctl) not found: run scripts/setup.sh"
  PG_BIN=$(dirname "$(readlink -f "$pg_ctl")") # initdb/postgres of the same version
  [[ -x $PG_BIN/initdb && -x $PG_BIN/postgres ]] || die "initdb/postgres missing beside $pg_ctl: run scripts/setup.sh"
  PG_OS_USER=$(id -un)
  PG_DATA=$SERVICES_DIR/pg-$PG_PORT
  if ((EUID == 0)); then
    if id -u postgres >/dev/null 2>&1; then PG_OS_USER=postgres; else PG_OS_USER=dbsyncpg; fi
    world_traversable "$SERVICES_DIR" || PG_DATA=/var/tmp/db-sync-services/pg-$PG_PORT
  fi
  PG_LOG=$PG_DATA/server.log
  check_socket_path "$PG_DATA/.s.PGSQL.$PG_PORT"
}

# as_pg CMD... — run as the PostgreSQL OS user (from /, which it can always enter).
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

# psql over the unix socket in the data dir (trust), as role postgres.
pg_sql() {
  local psql
  psql=$(command -v psql) || die "psql not found: run scripts/setup.sh"
  "$psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_DATA" -p "$PG_PORT" -U postgres "$@"
}

pg_running() { pid_alive "$PG_DATA/postmaster.pid" postgres; }

pg_initdb() {
  local pwfile out
  if ((EUID == 0)) && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    log "creating system user $PG_OS_USER to run PostgreSQL"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
  mkdir -p "$(dirname "$PG_DATA")"
  [[ $PG_DATA == "$SERVICES_DIR"/* ]] || log "PostgreSQL data dir: $PG_DATA ($SERVICES_DIR is not reachable by user $PG_OS_USER)"
  if [[ -e $PG_DATA && -n $(ls -A "$PG_DATA") ]]; then
    die "$PG_DATA exists but holds no PostgreSQL cluster (no PG_VERSION); delete it and rerun"
  fi
  mkdir -p "$PG_DATA"
  chmod 700 "$PG_DATA"
  pwfile=$(mktemp)
  printf '%s\n' "$PG_SUPERPASS" >"$pwfile"
  if ((EUID == 0)); then chown "$PG_OS_USER:" "$PG_DATA" "$pwfile"; fi
  log "initdb $PG_DATA"
  if ! out=$(as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 2>&1); then
    rm -f "$pwfile"
    printf '%s\n' "$out" >&2
    die "initdb failed for $PG_DATA (output above)"
  fi
  rm -f "$pwfile"
}

# pg_configure — bring db-sync.conf, its include and pg_hba.conf up to date;
# sets PG_CHANGED=1 when a restart is needed to apply them.
pg_configure() {
  local conf want senders=20 line
  PG_CHANGED=0
  # wal_level=minimal only starts with no WAL senders.
  [[ $PG_WAL_LEVEL == minimal ]] && senders=0
  want="# Written by scripts/services.sh on every start; set PG_WAL_LEVEL etc. there.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DATA'
wal_level = $PG_WAL_LEVEL
max_wal_senders = $senders
max_replication_slots = 20
shared_buffers = 128MB
# Test servers: speed over durability.
fsync = off
synchronous_commit = off
full_page_writes = off"
  if [[ $SERVICES_TLS == 1 ]]; then
    tls_certs
    # The key must belong to the server's user and be private to it.
    as_pg cp "$TLS_DIR/server.pem" "$PG_DATA/tls-server.pem"
    cat "$TLS_DIR/server.key" | as_pg tee "$PG_DATA/tls-server.key" >/dev/null
    as_pg chmod 600 "$PG_DATA/tls-server.key"
    want+="
ssl = on
ssl_cert_file = 'tls-server.pem'
ssl_key_file = 'tls-server.key'"
  fi
  conf=$PG_DATA/db-sync.conf
  if [[ ! -f $conf || $(<"$conf") != "$want" ]]; then
    as_pg tee "$conf" >/dev/null <<<"$want"
    PG_CHANGED=1
  fi
  if ! grep -q "^include_if_exists = 'db-sync.conf'" "$PG_DATA/postgresql.conf"; then
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<<"include_if_exists = 'db-sync.conf'"
    PG_CHANGED=1
  fi
  local lines=()
  # Role `secure` only over TLS: these come before the general lines, which would let it in.
  [[ $SERVICES_TLS == 1 ]] && lines+=(
    "hostssl all secure 127.0.0.1/32 scram-sha-256"
    "hostssl replication secure 127.0.0.1/32 scram-sha-256"
    "hostnossl all secure 127.0.0.1/32 reject"
    "hostnossl replication secure 127.0.0.1/32 reject"
  )
  if [[ $SERVICES_TLS == 1 ]] && ! grep -q '^hostssl all secure' "$PG_DATA/pg_hba.conf"; then
    # Prepend: pg_hba.conf is read top-down, first match wins.
    { printf '%s\n' "${lines[@]}"; as_pg cat "$PG_DATA/pg_hba.conf"; } >"$PG_DATA/.hba.new"
    as_pg tee "$PG_DATA/pg_hba.conf" <"$PG_DATA/.hba.new" >/dev/null
    rm -f "$PG_DATA/.hba.new"
    PG_CHANGED=1
  fi
  for line in "host replication all 127.0.0.1/32 scram-sha-256" "host all all 127.0.0.1/32 scram-sha-256"; do
    if ! awk -v want="$line" '{ $1 = $1 } $0 == want { found = 1 } END { exit !found }' "$PG_DATA/pg_hba.conf"; then
      as_pg tee -a "$PG_DATA/pg_hba.conf" >/dev/null <<<"$line"
      PG_CHANGED=1
    fi
  done
}

pg_fail() {
  tail -n 20 "$PG_LOG" >&2 2>/dev/null || true
  die "$1 (log: $PG_LOG)"
}

pg_start() {
  local level
  pg_init_vars
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    port_open "$PG_PORT" && die "port $PG_PORT is in use by another process; choose another with PG_PORT=N"
    pg_initdb
  fi
  pg_configure
  if pg_running; then
    if ((PG_CHANGED)); then
      log "PostgreSQL on $PG_PORT: settings changed (wal_level=$PG_WAL_LEVEL); restarting"
      as_pg "$PG_BIN/pg_ctl" restart -D "$PG_DATA" -m fast -w -t 60 -s -l "$PG_LOG" >/dev/null ||
        pg_fail "PostgreSQL on port $PG_PORT did not restart"
    else
      log "PostgreSQL already running on $PG_PORT"
    fi
  else
    port_open "$PG_PORT" && die "port $PG_PORT is in use by another process; choose another with PG_PORT=N"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (wal_level=$PG_WAL_LEVEL)"
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t 60 -s -l "$PG_LOG" >/dev/null ||
      pg_fail "PostgreSQL on port $PG_PORT did not start"
  fi
  level=$(pg_sql -d postgres -c 'SHOW wal_level')
  [[ $level == "$PG_WAL_LEVEL" ]] ||
    die "PostgreSQL on $PG_PORT runs with wal_level=$level, not $PG_WAL_LEVEL (ALTER SYSTEM in $PG_DATA/postgresql.auto.conf?); remove it there and run scripts/services.sh restart pg"
  if [[ -z $(pg_sql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'shop'") ]]; then
    log "creating database shop"
    pg_sql -d postgres -c 'CREATE DATABASE shop'
  fi
  if [[ $SERVICES_TLS == 1 ]]; then
    pg_sql -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'secure') THEN CREATE ROLE secure LOGIN SUPERUSER REPLICATION; END IF; END \$\$" \
      -c "ALTER ROLE secure PASSWORD 'securepw'"
  fi
}

pg_stop() {
  pg_init_vars
  if pg_running; then
    log "stopping PostgreSQL on $PG_PORT"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s ||
      die "PostgreSQL on $PG_PORT did not stop; see $PG_LOG"
  else
    log "PostgreSQL on $PG_PORT is not running"
  fi
}

pg_status() {
  pg_init_vars
  if pg_running; then
    printf 'pg       running  port=%s  wal_level=%s  data=%s\n' \
      "$PG_PORT" "$(pg_sql -d postgres -c 'SHOW wal_level' 2>/dev/null || echo '?')" "$PG_DATA"
  else
    printf 'pg       stopped  port=%s  data=%s\n' "$PG_PORT" "$PG_DATA"
    return 3
  fi
}

# ------------------------------------------------------------------- MariaDB

my_init_vars() {
  local p
  for p in mariadbd mariadb-install-db mariadb-admin mariadb; do
    command -v "$p" >/dev/null || die "$p not found: run scripts/setup.sh (installs mariadb-server)"
  done
  MY_DATA=$SERVICES_DIR/mariadb-$MYSQL_PORT
  MY_SOCK=$MY_DATA/mysqld.sock
  MY_PID=$MY_DATA/mariadbd.pid
  MY_LOG=$MY_DATA/error.log
  check_socket_path "$MY_SOCK"
}

# --no-defaults everywhere: /etc/mysql/my.cnf describes the system server (port 3306,
# /run/mysqld, user mysql) and ~/.my.cnf may hold someone's password.
my_admin() { mariadb-admin --no-defaults --socket="$MY_SOCK" -uroot --connect-timeout=2 "$@"; }
my_sql() { mariadb --no-defaults --socket="$MY_SOCK" -uroot; } # SQL on stdin

my_running() { pid_alive "$MY_PID" mariadbd; }

my_start() {
  local user=() tls=() i out
  my_init_vars
  if [[ $SERVICES_TLS == 1 ]]; then
    tls_certs
    tls=(--ssl-ca="$TLS_DIR/ca.pem" --ssl-cert="$TLS_DIR/server.pem" --ssl-key="$TLS_DIR/server.key")
  fi
  ((EUID == 0)) && user=(--user=root)
  if my_running; then
    log "MariaDB already running on $MYSQL_PORT"
  else
    port_open "$MYSQL_PORT" && die "port $MYSQL_PORT is in use by another process; choose another with MYSQL_PORT=N"
    if [[ ! -d $MY_DATA/mysql ]]; then
      log "mariadb-install-db $MY_DATA"
      mkdir -p "$MY_DATA"
      out=$(mariadb-install-db --no-defaults "${user[@]}" --datadir="$MY_DATA" \
        --auth-root-authentication-method=normal --skip-test-db 2>&1) || {
        printf '%s\n' "$out" >&2
        rm -rf "$MY_DATA/mysql" # so the next start retries from scratch
        die "mariadb-install-db failed for $MY_DATA (output above)"
      }
    fi
    log "starting MariaDB on 127.0.0.1:$MYSQL_PORT"
    # setsid: the server outlives this script and a Ctrl-C in its terminal; -w keeps
    # $! alive exactly as long as mariadbd, even when setsid has to fork.
    setsid -w mariadbd --no-defaults "${user[@]}" --datadir="$MY_DATA" \
      --port="$MYSQL_PORT" --bind-address=127.0.0.1 --socket="$MY_SOCK" \
      --pid-file="$MY_PID" --log-error="$MY_LOG" --skip-name-resolve \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
      --local-infile=1 --innodb-flush-log-at-trx-commit=2 --max-connections=300 \
      "${tls[@]}" </dev/null >/dev/null 2>&1 &
    for ((i = 0; i < 120; i++)); do
      my_admin ping >/dev/null 2>&1 && break
      if ((i > 4)) && ! kill -0 $! 2>/dev/null; then
        tail -n 20 "$MY_LOG" >&2 2>/dev/null || true
        die "MariaDB on port $MYSQL_PORT exited during start-up (log: $MY_LOG)"
      fi
      sleep 0.5
    done
    my_admin ping >/dev/null 2>&1 || die "MariaDB on port $MYSQL_PORT did not answer within 60 s (log: $MY_LOG)"
  fi
  # Idempotent; also restores the test accounts if a test dropped them.
  my_sql <<'SQL'
CREATE DATABASE IF NOT EXISTS `target` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'sync'@'%', 'sync'@'localhost', 'sync'@'127.0.0.1';
ALTER USER 'sync'@'%' IDENTIFIED BY 'syncpw';
ALTER USER 'sync'@'localhost' IDENTIFIED BY 'syncpw';
ALTER USER 'sync'@'127.0.0.1' IDENTIFIED BY 'syncpw';
GRANT ALL PRIVILEGES ON `target`.* TO 'sync'@'%', 'sync'@'localhost', 'sync'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
SQL
  if [[ $SERVICES_TLS == 1 ]]; then
    my_sql <<'SQL'
CREATE USER IF NOT EXISTS 'secure'@'127.0.0.1';
ALTER USER 'secure'@'127.0.0.1' IDENTIFIED BY 'securepw' REQUIRE SSL;
GRANT ALL PRIVILEGES ON *.* TO 'secure'@'127.0.0.1';
SQL
  fi
}

my_stop() {
  local pid i
  my_init_vars
  if ! my_running; then
    log "MariaDB on $MYSQL_PORT is not running"
    return 0
  fi
  log "stopping MariaDB on $MYSQL_PORT"
  read -r pid <"$MY_PID"
  my_admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  die "MariaDB (pid $pid) on $MYSQL_PORT did not stop within 60 s; see $MY_LOG"
}

my_status() {
  my_init_vars
  if my_running; then
    printf 'mariadb  running  port=%s  data=%s\n' "$MYSQL_PORT" "$MY_DATA"
  else
    printf 'mariadb  stopped  port=%s  data=%s\n' "$MYSQL_PORT" "$MY_DATA"
    return 3
  fi
}

# ------------------------------------------------------------------------ S3

S3_BUCKET=audit
S3_KEY="test" # access key and secret; moto accepts any, clients must send some

s3_init_vars() {
  S3_MOTO=$VENV/bin/moto_server
  [[ -x $S3_MOTO && -x $VENV/bin/python ]] ||
    die "$S3_MOTO not found: run scripts/setup.sh (installs moto[server] into $VENV)"
  S3_DIR=$SERVICES_DIR/s3-$S3_PORT
  S3_PID=$S3_DIR/moto.pid
  S3_LOG=$S3_DIR/server.log
  S3_ENDPOINT=http://127.0.0.1:$S3_PORT
}

s3_running() { pid_alive "$S3_PID" moto_server; }

# s3_http_ok — something on S3_PORT answers an HTTP request with a status line. The path
# is moto's own config endpoint: no side effects, and not an S3 action, so it does not use
# up an INITIAL_NO_AUTH_ACTION_COUNT allowance.
s3_http_ok() {
  # shellcheck disable=SC2016
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 &&
    printf "GET /moto-api/config HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && head -c 12 <&3' s3_http_ok "$S3_PORT" \
    2>/dev/null | grep -q '^HTTP/1\.[01] '
}

# s3_bucket — create bucket $S3_BUCKET unless it exists (boto3 comes with moto).
s3_bucket() {
  AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_KEY AWS_DEFAULT_REGION=us-east-1 \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$VENV/bin/python" - "$S3_ENDPOINT" "$S3_BUCKET" <<'PY' ||
import sys
import boto3
from botocore.exceptions import BotoCoreError, ClientError
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
try:
    s3.create_bucket(Bucket=bucket)
except ClientError as e:
    if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
        sys.exit(f"error: create bucket {bucket} at {endpoint}: {e}")
except BotoCoreError as e:
    sys.exit(f"error: create bucket {bucket} at {endpoint}: {e}")
PY
    die "could not create bucket $S3_BUCKET on the S3 server at $S3_ENDPOINT (log: $S3_LOG); run 'S3_PORT=$S3_PORT scripts/services.sh restart s3'"
}

s3_start() {
  local i
  s3_init_vars
  if s3_running; then
    log "S3 server already running on $S3_PORT"
  else
    port_open "$S3_PORT" && die "port $S3_PORT is in use by another process; choose another with S3_PORT=N"
    mkdir -p "$S3_DIR"
    log "starting S3 server (moto) on $S3_ENDPOINT"
    # setsid: outlives this script and a Ctrl-C in its terminal. The inner shell writes
    # its own pid, then execs moto_server, so the pid file names the server itself.
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' s3 "$S3_PID" \
      "$S3_MOTO" -H 127.0.0.1 -p "$S3_PORT" </dev/null >>"$S3_LOG" 2>&1 &
    for ((i = 0; i < 120; i++)); do
      s3_http_ok && break
      if ((i > 4)) && ! s3_running; then
        tail -n 20 "$S3_LOG" >&2 2>/dev/null || true
        die "S3 server on port $S3_PORT exited during start-up (log: $S3_LOG)"
      fi
      sleep 0.25
    done
    s3_http_ok || die "S3 server on port $S3_PORT did not answer HTTP within 30 s (log: $S3_LOG)"
    s3_running || die "port $S3_PORT answers, but not the S3 server this script started (log: $S3_LOG); choose another with S3_PORT=N"
  fi
  # Every start: moto keeps buckets in memory, and a test may have deleted it.
  s3_bucket
}

s3_stop() {
  local pid i
  s3_init_vars
  if ! s3_running; then
    log "S3 server on $S3_PORT is not running"
    rm -f "$S3_PID"
    return 0
  fi
  log "stopping S3 server on $S3_PORT"
  read -r pid <"$S3_PID"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$S3_PID"
      return 0
    fi
    sleep 0.25
  done
  die "S3 server (pid $pid) on $S3_PORT did not stop within 10 s; kill it with 'kill -9 $pid'"
}

s3_status() {
  s3_init_vars
  if s3_running; then
    printf 's3       running  port=%s  endpoint=%s  bucket=%s  dir=%s\n' "$S3_PORT" "$S3_ENDPOINT" "$S3_BUCKET" "$S3_DIR"
  else
    printf 's3       stopped  port=%s  dir=%s\n' "$S3_PORT" "$S3_DIR"
    return 3
  fi
}

# ---------------------------------------------------------------------- main

# wants SERVICE — SERVICE was asked for (by name or through `all`).
wants() { [[ $WHAT == all || $WHAT == "$1" ]]; }

mkdir -p "$SERVICES_DIR"
case $CMD in
  start)
    if wants pg; then pg_start; fi
    if wants mariadb; then my_start; fi
    if wants s3; then s3_start; fi
    ;;
  stop)
    if wants s3; then s3_stop; fi
    if wants mariadb; then my_stop; fi
    if wants pg; then pg_stop; fi
    ;;
  restart)
    if wants mariadb; then my_stop && my_start; fi
    if wants pg; then pg_stop && pg_start; fi
    if wants s3; then s3_stop && s3_start; fi
    ;;
  status)
    rc=0
    if wants pg; then pg_status || rc=3; fi
    if wants mariadb; then my_status || rc=3; fi
    if wants s3; then s3_status || rc=3; fi
    exit "$rc"
    ;;
esac
