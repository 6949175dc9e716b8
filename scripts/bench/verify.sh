#!/usr/bin/env bash
# Verify benchmark (the issue's bench-verify.sh): N rows of a 10-column table in sync between
# PostgreSQL and MariaDB; `db-sync verify` timed against the floor of reading both tables in
# key order with the stock clients, each a whole process:
#   (ours)   `db-sync verify --table public.bench_wide` (both sides streamed in key order and
#            compared value by value)
#   (psql)   psql -c "\copy (SELECT … ORDER BY id) TO /dev/null"
#   (mariadb) mariadb -e "SELECT … ORDER BY id" > /dev/null
#   (floor)  (psql) and (mariadb) run side by side, as verify reads both sides at once
# Prints rows, seconds, rows/s and peak RSS per run, the ratio ours/floor (target <= 1.5) and
# verify's peak RSS (target <= 256 MB). Checks that verify exits 0 and compared N rows.
#
# Usage: scripts/bench/verify.sh
#   BENCH_ROWS (1000000)   rows of bench.public.bench_wide (refilled when it differs)
#   BENCH_KEEP=1           keep the run dir
# The table is captured and applied once per run (not timed); the journal of the apply
# benchmark (~/.cache/db-sync/bench/apply-journal-<N>/) is reused when present.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n=$(bench_count BENCH_ROWS 1000000)
table=bench_wide
((n == 1000000)) || table=bench_wide_$n
mydb=bench_verify

bench_setup all
command -v mariadb >/dev/null || die "the mariadb client is missing: run scripts/setup.sh"
command -v psql >/dev/null || die "psql is missing: run scripts/setup.sh"
my() { bench_mariadb "$@"; }

cd "$ROOT"
bench_run_dir verify-run
slot=""
cleanup() {
  [[ -z $slot ]] || drop_slot_and_publication bench "$slot"
  bench_remove_run_dir
}
trap cleanup EXIT
declare -A label rows secs rss cmdline

# config JOURNAL TARGET — a db-sync config for public.$table with a file:// audit URL.
config() {
  echo "name: bench"
  bench_source "$table" "bench_verify_$run_id" "$run_dir/capture"
  bench_engine
  printf 'journal:\n  dir: %s\naudit:\n  url: %s\n' "$1" "file://$run_dir/audit"
  printf 'target:\n  url: %s\n' "$2"
}

# --- 1. the journal: the apply benchmark's, or captured -------------------------------------
# The table's rows are generated deterministically (scripts/sql/bench_wide.sql), so a journal
# captured from another server's copy holds the same rows.
if bench_table "$table" "$n" "$ROOT/scripts/sql/bench_wide.sql"; then
  psql_db bench -c "vacuum analyze public.$table"
fi
cache=$CACHE_DIR/bench/apply-journal-$n
if bench_journal_cached "$cache" "$n"; then
  log "reusing the journal of $n events in $cache"
else
  rm -rf "$cache"
  mkdir -p "$cache" "$run_dir/capture"
  config "$cache/journal" "mysql://root@127.0.0.1:$MYSQL_PORT/$mydb" >"$run_dir/capture.yaml"
  slot=bench_verify_$run_id
  log "capturing the table's snapshot (not timed)"
  "$bin" --config "$run_dir/capture.yaml" capture --exit-after-snapshot >"$run_dir/capture.out" 2>&1 ||
    { keep=1; die "capture failed (log kept in $run_dir/capture.out)"; }
  drop_slot_and_publication bench "$slot"
  slot=""
  got=$("$bin" --config "$run_dir/capture.yaml" journal dump | wc -l)
  [[ $got == "$n" ]] || die "capture journaled $got events, expected $n"
  printf '%s\n' "$n" >"$cache/events"
fi

# --- 2. the target, in sync (not timed) ------------------------------------------------------
journal=$run_dir/journal
bench_journal_copy "$cache" "$journal"
my -e "DROP DATABASE IF EXISTS $mydb; CREATE DATABASE $mydb CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
config "$journal" "mysql://root@127.0.0.1:$MYSQL_PORT/$mydb" >"$run_dir/verify.yaml"
log "auditing and applying the journal (not timed)"
"$bin" --config "$run_dir/verify.yaml" compact --once >/dev/null
[[ $(my -N -e "SELECT COUNT(*) FROM $mydb.$table") == "$n" ]] || die "the target does not hold $n rows"
# Warm both servers' caches the same way for every run.
psql_db bench -c "\\copy (SELECT * FROM public.$table ORDER BY id) TO /dev/null" >/dev/null
my "$mydb" -e "SELECT * FROM $table ORDER BY id" >/dev/null

# --- 3. (ours) ------------------------------------------------------------------------------
label[ours]="db-sync verify"
bench_timed ours "$bin" --config "$run_dir/verify.yaml" verify --table "public.$table" --format json
rows[ours]=$(awk -F': ' '/"rows"/ { gsub(/,/, "", $2); print $2; exit }' "$run_dir/ours.out")
[[ ${rows[ours]} == "$n" ]] || { keep=1; die "verify compared ${rows[ours]} rows, expected $n (run dir kept)"; }

# --- 4. the stock clients -------------------------------------------------------------------
cols="id, qty, name, price, created_at, active, note, score, day, code"
pg_cmd=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench
  -c "\\copy (SELECT $cols FROM public.$table ORDER BY id) TO /dev/null")
my_cmd=(mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -uroot "$mydb"
  -e "SELECT $cols FROM $table ORDER BY id")
export PGPASSWORD=$PG_SUPERPASS
label[psql]="psql \\copy (… ORDER BY id) to /dev/null"
bench_timed psql "${pg_cmd[@]}"
label[mariadb]="mariadb -e \"SELECT … ORDER BY id\" > /dev/null"
bench_timed mariadb bash -c "$(printf '%q ' "${my_cmd[@]}") >/dev/null"
label[floor]="(psql) and (mariadb) side by side"
bench_timed floor bash -c "$(printf '%q ' "${pg_cmd[@]}") & $(printf '%q ' "${my_cmd[@]}") >/dev/null; wait"
rows[psql]=$n rows[mariadb]=$n rows[floor]=$n

# --- 5. report ----------------------------------------------------------------------------
echo
echo "verify benchmark: $n rows of bench.public.$table (10 columns), PostgreSQL $(psql_db bench -Atc 'show server_version') vs MariaDB $(my -N -e 'SELECT VERSION()')"
echo "host: $(bench_host); whole-process wall time; both servers on this host"
echo
bench_results rows "58 9 9 10 12" ours psql mariadb floor
echo
echo "seconds ratio ours/floor = $(bench_ratio "${secs[ours]}" "${secs[floor]}") (target <= 1.5); ours/(psql + mariadb) = $(bench_ratio "${secs[ours]}" "$(awk -v a="${secs[psql]}" -v b="${secs[mariadb]}" 'BEGIN { print a + b }')")"
printf 'verify peak RSS = %.0f MB (target <= 256)\n' "$(bench_mb "${rss[ours]}")"
echo
bench_commands "BENCH_ROWS=$n scripts/bench/verify.sh" ours psql mariadb floor
