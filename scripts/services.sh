#!/usr/bin/env bash
# Local PostgreSQL (CDC source) and MariaDB (stand-in MySQL target) for tests and the
# demo, on loopback ports and data dirs of their own. The system servers (5432, 3306,
# /run/mysqld) are never touched.
#
# Usage: scripts/services.sh [options] start|stop|status|restart [pg|mariadb|all]
#   --pg-port=N    / PG_PORT       PostgreSQL port (15432); one instance per port
#   --wal-level=L  / PG_WAL_LEVEL  logical (default), replica or minimal
#   --mysql-port=N / MYSQL_PORT    MariaDB port (13306); one instance per port
#   SERVICES_DIR                   where data dirs live ($ROOT/data/services)
# e.g. a second, independent source for the wal_level error test:
#   PG_PORT=15433 PG_WAL_LEVEL=replica scripts/services.sh start pg
#
# PostgreSQL: role postgres, password postgres (scram-sha-256 over TCP, including
# replication; trust over the unix socket, which lives in the data dir); database shop.
# MariaDB: database target (utf8mb4_bin, case-sensitive like PostgreSQL keys), user
# sync/syncpw on target.*, root@127.0.0.1 and root over the socket without password.
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
usage="usage: scripts/services.sh [--pg-port=N] [--mysql-port=N] [--wal-level=L] start|stop|status|restart [pg|mariadb|all]"
args=()
for arg in "$@"; do
  case $arg in
    --pg-port=*) PG_PORT=${arg#*=} ;;
    --mysql-port=*) MYSQL_PORT=${arg#*=} ;;
    --wal-level=*) PG_WAL_LEVEL=${arg#*=} ;;
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
case $WHAT in pg | mariadb | all) ;; *) die "unknown service '$WHAT'; $usage" ;; esac
[[ $PG_PORT =~ ^[0-9]+$ ]] || die "PG_PORT must be a port number, got '$PG_PORT'"
[[ $MYSQL_PORT =~ ^[0-9]+$ ]] || die "MYSQL_PORT must be a port number, got '$MYSQL_PORT'"
case $PG_WAL_LEVEL in minimal | replica | logical) ;; *)
  die "PG_WAL_LEVEL must be minimal, replica or logical, got '$PG_WAL_LEVEL'"
  ;;
esac

# check_socket_path PATH — unix socket paths are limited to 107 bytes.
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
  conf=$PG_DATA/db-sync.conf
  if [[ ! -f $conf || $(<"$conf") != "$want" ]]; then
    as_pg tee "$conf" >/dev/null <<<"$want"
    PG_CHANGED=1
  fi
  if ! grep -q "^include_if_exists = 'db-sync.conf'" "$PG_DATA/postgresql.conf"; then
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<<"include_if_exists = 'db-sync.conf'"
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
  local user=() i out
  my_init_vars
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
      </dev/null >/dev/null 2>&1 &
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

# ---------------------------------------------------------------------- main

mkdir -p "$SERVICES_DIR"
case $CMD in
  start)
    [[ $WHAT == mariadb ]] || pg_start
    [[ $WHAT == pg ]] || my_start
    ;;
  stop)
    [[ $WHAT == pg ]] || my_stop
    [[ $WHAT == mariadb ]] || pg_stop
    ;;
  restart)
    [[ $WHAT == pg ]] || { my_stop && my_start; }
    [[ $WHAT == mariadb ]] || { pg_stop && pg_start; }
    ;;
  status)
    rc=0
    if [[ $WHAT != mariadb ]]; then pg_status || rc=3; fi
    if [[ $WHAT != pg ]]; then my_status || rc=3; fi
    exit "$rc"
    ;;
esac
