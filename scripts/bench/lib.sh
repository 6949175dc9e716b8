# shellcheck shell=bash
# Helpers shared by the benchmarks, scripts/bench/*.sh. Source it after `set -euo pipefail`;
# it sources scripts/lib.sh (ROOT, CACHE_DIR, PG_PORT, MYSQL_PORT, VENV, log, die, psql_db,
# need_apt, use_java, ...) and starts nothing.
#
# A benchmark runs in this order, and the helpers follow it:
#   bench_count ENV DEFAULT          ${ENV:-DEFAULT}, or die unless a positive whole number
#   bench_setup SERVICE              set-up, services, a JDK, /usr/bin/time; sets `bin` (db-sync)
#   bench_db                         the PostgreSQL database `bench`, created when missing
#   bench_table TABLE N [SQL]        bench.public.TABLE holding exactly N generated rows
#   bench_run_dir PREFIX             a fresh run dir under ~/.cache/db-sync/bench; sets run_dir, run_id
#   bench_remove_run_dir [ALSO]      at exit: remove the run dir, or say it is kept (keep=1)
#   drop_slot_and_publication DB S   at exit: drop a run's replication slot and publication S
#   bench_props TABLE SLOT DIR [K=V...]   the source's properties of a capture of bench.public.TABLE
#   bench_source TABLE SLOT DIR [K=V...]  the same as the `source:` block of a db-sync config
#   bench_engine_properties CONFIG   every engine property db-sync gives Debezium for CONFIG
#   bench_engine [JVM_OPTION...]     the `engine:` block (debezium/lib, JVM options)
#   bench_journal_cached CACHE N     true when CACHE/journal is a verified journal of N events
#   bench_journal_copy CACHE DEST    a fresh copy of CACHE/journal at DEST, no progress files
#   bench_mariadb ARGS...            the mariadb client on the local MariaDB, as root
#   bench_timed KEY CMD...           run CMD once under /usr/bin/time -v (wall time, peak RSS)
#   bench_bytes DIR NAME             bytes in the files called NAME (a glob) under DIR
#   bench_rate N SECONDS             N / SECONDS as a whole number (events/s, rows/s)
#   bench_ratio A B [DIGITS]         A / B with DIGITS (2) decimals
#   bench_mb KB                      kilobytes in MB (for a %.0f column)
#   bench_host                       "N CPUs, M GiB" of this host
#   bench_results UNIT WIDTHS KEY... the results table: name, UNIT, seconds, UNIT/s, peak RSS
#   bench_commands INVOCATION KEY... the "command:" line and each run's command line
#
# What the caller owns (bash has no other way to return several values): the globals `keep`
# (set here from BENCH_KEEP; a failing step sets it to 1 so the logs stay), `bin`, `run_dir`,
# `run_id`, and the associative arrays `label` (a run's name in the table) and `secs`, `rss`,
# `cmdline` (filled by bench_timed), plus the count array bench_results is told to read:
#   declare -A label events secs rss cmdline
# A run is a KEY (a, b, c or ours, load, ...) into those arrays.
#
# A new benchmark, scripts/bench/NAME.sh, takes the same shape (see compact.sh):
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   n=$(bench_count BENCH_ROWS 1000000)
#   bench_setup pg
#   bench_table bench_rows "$n" || true
#   bench_run_dir NAME-run
#   cleanup() { drop_slot_and_publication bench "bench_NAME_$run_id"; bench_remove_run_dir; }
#   trap cleanup EXIT
#   declare -A label events secs rss cmdline
#   { echo "name: bench"; bench_source bench_rows "bench_NAME_$run_id" "$run_dir/capture"
#     bench_engine; printf 'journal:\n  dir: %s\n' "$run_dir/journal"; } >"$run_dir/config.yaml"
#   label[ours]="db-sync ..."; bench_timed ours "$bin" --config "$run_dir/config.yaml" ...
#   events[ours]=...   # counted from the output, and checked
#   bench_results events "20 10 9 11 13" ours
#   bench_commands "BENCH_ROWS=$n scripts/bench/NAME.sh" ours

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

keep=${BENCH_KEEP:-0} # 1: keep the run dir (offsets, journal, logs) for a look afterwards

# bench_count ENV DEFAULT — print the value of the environment variable ENV, or DEFAULT when
# it is unset or empty; dies naming ENV unless it is a positive whole number. Use it as
# `n=$(bench_count BENCH_ROWS 1000000)` (not after `local`, which would hide the failure).
bench_count() {
  local v=${!1:-$2}
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive whole number, got '$v'"
  printf '%s\n' "$v"
}

# bench_setup SERVICE — set-up, the local SERVICE (pg, all, ...), a JDK, /usr/bin/time; sets
# `bin` to the db-sync release binary, or to DB_SYNC_BIN when set (a prebuilt binary: set-up
# then skips the cargo build).
bench_setup() {
  if [[ -n ${DB_SYNC_BIN:-} ]]; then
    SETUP_SKIP_CARGO=1 "$ROOT/scripts/setup.sh"
  else
    "$ROOT/scripts/setup.sh"
  fi
  "$ROOT/scripts/services.sh" start "$1"
  use_java || die "no JDK >= 17 found; run scripts/setup.sh"
  [[ -x /usr/bin/time ]] || need_apt time
  bin=${DB_SYNC_BIN:-$CARGO_TARGET_DIR/release/db-sync}
  if [[ -n ${DB_SYNC_BIN:-} ]]; then
    [[ -x $bin ]] || die "DB_SYNC_BIN=$bin is not an executable file; point it at a db-sync binary or unset it"
  else
    [[ -x $bin ]] || die "$bin is missing: run scripts/setup.sh without SETUP_SKIP_CARGO=1"
  fi
}

# bench_db — the database bench of the local PostgreSQL, created when missing. It is kept
# between runs (its tables are the benchmarks' inputs).
bench_db() {
  if [[ -z $(psql_db postgres -Atc "select 1 from pg_database where datname = 'bench'") ]]; then
    log "creating database bench"
    psql_db postgres -c "create database bench"
  fi
}

# bench_table TABLE N [SQL] — database bench with public.TABLE holding exactly N generated
# rows (SQL, default scripts/sql/bench_rows.sql); recreated only when the count differs.
# Returns 0 when it (re)filled the table, 1 when the table was already right.
bench_table() {
  local table=$1 n=$2 sql=${3:-$ROOT/scripts/sql/bench_rows.sql} have=none
  bench_db
  if [[ -n $(psql_db bench -Atc "select to_regclass('public.$table')") ]]; then
    have=$(psql_db bench -Atc "select count(*) from public.$table")
  fi
  [[ $have != "$n" ]] || return 1
  log "filling public.$table with $n rows (had $have)"
  psql_db bench -1 -v tbl="$table" -v rows="$n" -f "$sql" ||
    die "could not fill public.$table (psql error above)"
  [[ $(psql_db bench -Atc "select count(*) from public.$table") == "$n" ]] ||
    die "public.$table does not hold $n rows after filling it (see above)"
}

# bench_run_dir PREFIX — a new directory $CACHE_DIR/bench/PREFIX.XXXXXX on local disk (journals
# are fsynced there) as `run_dir`, and `run_id` (seconds_pid) to name this run's replication
# slots and publications.
# shellcheck disable=SC2034 # run_dir and run_id are for the caller
bench_run_dir() {
  mkdir -p "$CACHE_DIR/bench"
  run_dir=$(mktemp -d "$CACHE_DIR/bench/$1.XXXXXX")
  run_id="$(date +%s)_$$"
}

# bench_remove_run_dir [ALSO] — for the exit trap: remove the run dir, or with keep=1 log
# "kept <run dir> ALSO" (ALSO names whatever else the caller keeps).
# shellcheck disable=SC2120 # ALSO is optional
bench_remove_run_dir() {
  if [[ $keep == 1 ]]; then
    log "kept $run_dir${1:+ $1}"
  else
    rm -rf "$run_dir"
  fi
}

# drop_slot_and_publication DB NAME — drop a benchmark's replication slot and publication
# (both named NAME); warns with the manual fix when the slot stays.
drop_slot_and_publication() {
  local db=$1 s=$2
  # A slot is still active for a moment after its walsender's client exits.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    psql_db "$db" -Atc "select pg_drop_replication_slot(slot_name) from pg_replication_slots
                        where slot_name = '$s' and not active" >/dev/null 2>&1 || true
    [[ -z $(psql_db "$db" -Atc "select 1 from pg_replication_slots where slot_name = '$s'" 2>/dev/null) ]] &&
      break
    sleep 1
  done
  [[ -z $(psql_db "$db" -Atc "select 1 from pg_replication_slots where slot_name = '$s'" 2>/dev/null) ]] ||
    log "warning: could not drop replication slot $s; drop it with: select pg_drop_replication_slot('$s')"
  psql_db "$db" -c "drop publication if exists $s" >/dev/null 2>&1 ||
    log "warning: could not drop publication $s in database $db"
}

# bench_props TABLE SLOT STATE_DIR [KEY=VALUE...] — the source's properties of a benchmark's
# capture of bench.public.TABLE from the local PostgreSQL, as key=value lines: the
# connection, SLOT as replication slot and publication name, offsets and schema history
# files in STATE_DIR, then each KEY=VALUE. db-sync adds its defaults for the keys not given;
# a plain JVM run gets them all from bench_engine_properties.
bench_props() {
  local table=$1 slot=$2 state=$3
  shift 3
  printf '%s\n' \
    connector.class=io.debezium.connector.postgresql.PostgresConnector \
    database.hostname=127.0.0.1 \
    "database.port=$PG_PORT" \
    database.user=postgres \
    "database.password=$PG_SUPERPASS" \
    database.dbname=bench \
    "table.include.list=public.$table" \
    "slot.name=$slot" \
    "publication.name=$slot" \
    "offset.storage.file.filename=$state/offsets.dat" \
    "schema.history.internal.file.filename=$state/history.dat" \
    "$@"
}

# bench_engine_properties CONFIG — the Debezium engine properties db-sync starts the engine
# with for the db-sync config CONFIG (`db-sync engine-properties`: its defaults, `source:`, and
# the sizes fitted to the table's rows), as a Java properties file for a plain JVM run of the
# same capture. db-sync prints the password as ***; the benchmark's own is put in its place.
bench_engine_properties() {
  local props
  props=$("$bin" --config "$1" engine-properties) ||
    die "db-sync engine-properties failed for $1 (see above)"
  grep -v '^database\.password=' <<<"$props"
  printf 'database.password=%s\n' "$PG_SUPERPASS"
}

# bench_source TABLE SLOT STATE_DIR [KEY=VALUE...] — the `source:` block of a db-sync config:
# the properties of bench_props, each value a double-quoted YAML string.
bench_source() {
  echo "source:"
  bench_props "$@" | sed -e 's/[\\"]/\\&/g' -e 's/^\([^=]*\)=\(.*\)$/  \1: "\2"/'
}

# bench_engine [JVM_OPTION...] — the `engine:` block of a db-sync config: the Debezium jars
# in debezium/lib and, when given, the JVM options.
# shellcheck disable=SC2120 # the JVM options are optional
bench_engine() {
  printf 'engine:\n  lib_dir: %s\n' "$ROOT/debezium/lib"
  if (($# > 0)); then
    local IFS=,
    printf '  jvm_options: [%s]\n' "$*"
  fi
}

# bench_journal_cached CACHE N — true when CACHE/journal is a captured journal whose count of
# N events was verified (CACHE/events holds N; the caller writes it once it has checked).
bench_journal_cached() {
  [[ -d $1/journal && -f $1/events && $(<"$1/events") == "$2" ]]
}

# bench_fingerprint TABLE — database bench's public.TABLE as it is now: the server's system
# identifier, the row count and a hash of every row; "none" when the database or the table is
# missing. A cached journal records the fingerprint of the table it was captured from
# (CACHE/source) and is reused only while the table still has it: a re-created server or a
# refilled table means capturing again.
bench_fingerprint() {
  psql_db bench -Atc "select (select system_identifier from pg_control_system()) || ':' || count(*) || ':'
                             || coalesce(sum(hashtextextended(t::text, 0)), 0) from public.$1 t" 2>/dev/null ||
    echo none
}

# bench_journal_matches CACHE N TABLE — bench_journal_cached, and CACHE/source holds the
# current fingerprint of public.TABLE (bench_fingerprint).
bench_journal_matches() {
  bench_journal_cached "$1" "$2" && [[ -f $1/source && $(<"$1/source") == "$(bench_fingerprint "$3")" ]]
}

# bench_journal_copy CACHE DEST — a fresh copy of the journal CACHE/journal at DEST without its
# progress files (and the one manifest of older versions), so that compaction starts from the
# first event.
bench_journal_copy() {
  cp -R "$1/journal" "$2"
  rm -f "$2/audit-progress.json" "$2/apply-progress.json" "$2/audit-manifest.json"
}

# bench_mariadb ARGS... — the mariadb client on the local MariaDB as root (no option files).
bench_mariadb() {
  mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -uroot "$@"
}

# bench_timed KEY CMD... — run CMD as one whole process under /usr/bin/time -v; wall time from
# launch to exit, peak RSS. stdout/stderr go to $run_dir/KEY.out/.err. Fills the caller's
# associative arrays cmdline, label, secs and rss; on failure sets keep=1 and dies.
# shellcheck disable=SC2004,SC2034,SC2154 # the (associative) arrays belong to the calling benchmark script
bench_timed() {
  local k=$1 t0 t1 rc=0
  shift
  cmdline[$k]=$(printf '%q ' "$@")
  log "run ($k) ${label[$k]}"
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$run_dir/$k.time" "$@" >"$run_dir/$k.out" 2>"$run_dir/$k.err" || rc=$?
  t1=$(date +%s%N)
  if ((rc != 0)); then
    echo "--- stdout of ($k):" >&2
    tail -n 20 "$run_dir/$k.out" >&2
    echo "--- stderr of ($k):" >&2
    tail -n 40 "$run_dir/$k.err" >&2
    keep=1
    die "run ($k) ${label[$k]} exited with status $rc (logs kept in $run_dir)"
  fi
  secs[$k]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  rss[$k]=$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$run_dir/$k.time")
}

# bench_bytes DIR NAME — the total size in bytes of the files called NAME (a find -name glob,
# e.g. 'segment-*.log') under DIR.
bench_bytes() {
  find "$1" -type f -name "$2" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# bench_rate N SECONDS — N / SECONDS rounded to a whole number: events/s, rows/s.
bench_rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# bench_ratio A B [DIGITS] — A / B with DIGITS decimals (2). For a ratio of rates over the
# same count, pass the seconds the other way round.
bench_ratio() { awk -v a="$1" -v b="$2" -v f="%.${3:-2}f" 'BEGIN { printf f, a / b }'; }

# bench_mb KB — KB kilobytes (peak RSS of /usr/bin/time -v) in MB, unrounded: print it with %.0f.
bench_mb() { awk -v kb="$1" 'BEGIN { print kb / 1024 }'; }

# bench_host — "N CPUs, M GiB" (CPUs and memory of this host) for a report's host line.
bench_host() {
  printf '%s CPUs, %s' "$(nproc)" "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
}

# bench_results UNIT "NAME COUNT SECONDS RATE RSS [BYTES]" KEY... — the results table: a
# header (name, UNIT, seconds, UNIT/s, peak RSS MB and, given a sixth width, output bytes)
# with those column widths, then a row per KEY from the caller's arrays label, UNIT (the
# count: events, rows), secs, rss and bytes.
# shellcheck disable=SC2059,SC2154 # the formats are built from widths; the arrays are the caller's
bench_results() {
  local unit=$1 k fmt
  local -a w
  read -r -a w <<<"$2"
  shift 2
  local -n _n=$unit # the count array (a name the caller does not use)
  fmt="%-${w[0]}s %${w[1]}s %${w[2]}s %${w[3]}s %${w[4]}"
  printf "${fmt}s${w[5]:+ %${w[5]}s}\n" name "$unit" seconds "$unit/s" "peak RSS MB" ${w[5]:+"output bytes"}
  for k; do
    printf "${fmt}.0f${w[5]:+ %${w[5]}s}\n" "($k) ${label[$k]}" "${_n[$k]}" "${secs[$k]}" \
      "$(bench_rate "${_n[$k]}" "${secs[$k]}")" "$(bench_mb "${rss[$k]}")" ${w[5]:+"${bytes[$k]}"}
  done
}

# bench_commands INVOCATION KEY... — how to make these figures again: "command: INVOCATION"
# (the benchmark with its settings), then "(KEY) <command line>" of each timed run.
# shellcheck disable=SC2154 # cmdline is the caller's (filled by bench_timed)
bench_commands() {
  local k
  echo "command: $1"
  shift
  for k; do
    echo "($k) ${cmdline[$k]}"
  done
}
