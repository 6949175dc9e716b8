#!/usr/bin/env bash
# Apply benchmark: the same N rows of a 10-column table written into the same MariaDB three
# ways, each timed as a whole process:
#   (ours)    `db-sync compact --once` applying an audited journal of N snapshot events of
#             bench.public.bench_wide (merged per key, chunks of target.batch_rows, each chunk
#             one transaction with its checkpoint row) into a table db-sync creates
#   (load)    `LOAD DATA LOCAL INFILE` of the same rows (exported from PostgreSQL with COPY,
#             not timed) into an empty copy of that table, one statement: the server's ceiling
#   (perrow)  one autocommitted `INSERT … ON DUPLICATE KEY UPDATE` per row through the
#             mariadb client: the naive way (on the first BENCH_PERROW_ROWS rows; its rows/s
#             does not depend on the total)
# Checks that (ours) and (load) hold the same rows (CHECKSUM TABLE), then prints rows, seconds
# and rows/s per run and the ratios ours/load and ours/perrow.
#
# Usage: scripts/bench/apply.sh
#   BENCH_ROWS (1000000)        rows of bench.public.bench_wide (refilled when it differs)
#   BENCH_PERROW_ROWS (50000)   rows the per-row run writes
#   BENCH_BATCH_ROWS (5000)     target.batch_rows of (ours)
#   BENCH_LOAD_DATA (true)      target.load_data of (ours); false times multi-row INSERT
#   BENCH_KEEP=1                keep the run dir
# The journal is captured once (`capture --exit-after-snapshot`) into
# ~/.cache/db-sync/bench/apply-journal-<N>/; delete it to capture again.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n=$(bench_count BENCH_ROWS 1000000)
perrow_n=$(bench_count BENCH_PERROW_ROWS 50000)
batch_rows=$(bench_count BENCH_BATCH_ROWS 5000)
load_data=${BENCH_LOAD_DATA:-true}
[[ $load_data == true || $load_data == false ]] || die "BENCH_LOAD_DATA must be true or false, got '$load_data'"
((perrow_n <= n)) || perrow_n=$n
table=bench_wide
((n == 1000000)) || table=bench_wide_$n
mydb=bench_apply

bench_setup all
command -v mariadb >/dev/null || die "the mariadb client is missing: run scripts/setup.sh"
my() { bench_mariadb --local-infile=1 "$@"; }

cd "$ROOT"
bench_run_dir apply-run
slot=""
# Durable commits, as a production server has them (services.sh starts MariaDB with 2 for
# test speed); restored on exit.
flush_was=$(my -N -e "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
my -e "SET GLOBAL innodb_flush_log_at_trx_commit = 1"
cleanup() {
  my -e "SET GLOBAL innodb_flush_log_at_trx_commit = $flush_was" || true
  [[ -z $slot ]] || drop_slot_and_publication bench "$slot"
  bench_remove_run_dir
}
trap cleanup EXIT
declare -A label rows secs rss cmdline

# config JOURNAL [TARGET] — a db-sync config for public.$table with a file:// audit URL.
config() {
  echo "name: bench"
  bench_source "$table" "bench_apply_$run_id" "$run_dir/capture"
  bench_engine
  printf 'journal:\n  dir: %s\naudit:\n  url: %s\n' "$1" "file://$run_dir/audit"
  if [[ -n ${2:-} ]]; then
    printf 'target:\n  url: %s\n  batch_rows: %s\n  load_data: %s\n' "$2" "$batch_rows" "$load_data"
  fi
}

# --- 1. the journal: cached, or captured --------------------------------------------------
cache=$CACHE_DIR/bench/apply-journal-$n
if bench_journal_cached "$cache" "$n"; then
  log "reusing the journal of $n events in $cache"
else
  if bench_table "$table" "$n" "$ROOT/scripts/sql/bench_wide.sql"; then
    psql_db bench -c "vacuum analyze public.$table"
  fi
  rm -rf "$cache"
  mkdir -p "$cache" "$run_dir/capture"
  config "$cache/journal" >"$run_dir/capture.yaml"
  slot=bench_apply_$run_id
  label[capture]="db-sync capture --exit-after-snapshot"
  bench_timed capture "$bin" --config "$run_dir/capture.yaml" capture --exit-after-snapshot
  drop_slot_and_publication bench "$slot"
  slot=""
  got=$("$bin" --config "$run_dir/capture.yaml" journal dump | wc -l)
  [[ $got == "$n" ]] || die "capture journaled $got events, expected $n"
  printf '%s\n' "$n" >"$cache/events"
fi

# --- 2. a fresh copy, audited (not timed), and an empty target database ----------------------
journal=$run_dir/journal
bench_journal_copy "$cache" "$journal"
config "$journal" >"$run_dir/audit.yaml"
log "auditing the journal first (not timed): the timed run only applies"
"$bin" --config "$run_dir/audit.yaml" compact --once >/dev/null
my -e "DROP DATABASE IF EXISTS $mydb; CREATE DATABASE $mydb CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
config "$journal" "mysql://root@127.0.0.1:$MYSQL_PORT/$mydb" >"$run_dir/apply.yaml"

# --- 3. (ours) ----------------------------------------------------------------------------
label[ours]="db-sync compact (apply)"
bench_timed ours "$bin" --config "$run_dir/apply.yaml" compact --once
rows[ours]=$(my -N -e "SELECT COUNT(*) FROM $mydb.$table")
[[ ${rows[ours]} == "$n" ]] || { keep=1; die "db-sync applied ${rows[ours]} rows, expected $n (run dir kept)"; }
summary=$(cat "$run_dir/ours.out")

# --- 4. (load) LOAD DATA LOCAL INFILE of the same rows --------------------------------------
tsv=$run_dir/rows.tsv
log "exporting the rows from PostgreSQL (not timed)"
psql_db bench -c "\\copy (SELECT id, qty, name, price, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), active::int, note, score, day, code FROM public.$table ORDER BY id) TO '$tsv'"
my "$mydb" -e "CREATE TABLE loaded LIKE $table"
label[load]="LOAD DATA LOCAL INFILE"
bench_timed load mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -uroot --local-infile=1 "$mydb" \
  -e "LOAD DATA LOCAL INFILE '$tsv' INTO TABLE loaded CHARACTER SET utf8mb4 (id, qty, name, price, created_at, active, note, score, day, code)"
rows[load]=$(my -N -e "SELECT COUNT(*) FROM $mydb.loaded")
ours_sum=$(my -N -e "CHECKSUM TABLE $mydb.$table" | awk '{ print $2 }')
load_sum=$(my -N -e "CHECKSUM TABLE $mydb.loaded" | awk '{ print $2 }')
[[ $ours_sum == "$load_sum" ]] ||
  { keep=1; die "the tables differ: CHECKSUM TABLE $table=$ours_sum, loaded=$load_sum (run dir kept: $run_dir)"; }

# --- 5. (perrow) one autocommitted upsert per row -------------------------------------------
sqlfile=$run_dir/perrow.sql
psql_db bench -At -c "SELECT format('INSERT INTO perrow VALUES (%s, %s, %L, %s, %L, %s, %L, %s, %L, %L) ON DUPLICATE KEY UPDATE qty = VALUES(qty), name = VALUES(name), price = VALUES(price), created_at = VALUES(created_at), active = VALUES(active), note = VALUES(note), score = VALUES(score), day = VALUES(day), code = VALUES(code);',
    id, qty, name, price, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), active::int, note, score, day, code)
  FROM public.$table ORDER BY id LIMIT $perrow_n" >"$sqlfile"
my "$mydb" -e "CREATE TABLE perrow LIKE $table"
label[perrow]="one INSERT … ON DUPLICATE KEY UPDATE per row"
bench_timed perrow bash -c "mariadb --no-defaults -h 127.0.0.1 -P $MYSQL_PORT -uroot $mydb < '$sqlfile'"
rows[perrow]=$(my -N -e "SELECT COUNT(*) FROM $mydb.perrow")
[[ ${rows[perrow]} == "$perrow_n" ]] || die "the per-row run wrote ${rows[perrow]} rows, expected $perrow_n"

# --- 6. report ----------------------------------------------------------------------------
echo
echo "apply benchmark: $n rows of bench.public.$table (10 columns) into MariaDB $(my -N -e 'SELECT VERSION()') (InnoDB)"
echo "host: $(bench_host); whole-process wall time; innodb_flush_log_at_trx_commit = 1 (durable commits)"
echo
bench_results rows "50 9 9 10 12" ours load perrow
echo
declare -A r
for k in ours load perrow; do r[$k]=$(bench_rate "${rows[$k]}" "${secs[$k]}"); done
echo "rows/s ratio ours/load = $(bench_ratio "${r[ours]}" "${r[load]}") (target >= 0.6); ours/perrow = $(bench_ratio "${r[ours]}" "${r[perrow]}" 1) (target >= 20)"
echo "same rows: CHECKSUM TABLE $table = loaded = $ours_sum"
echo "db-sync said: $summary"
echo
bench_commands "BENCH_ROWS=$n BENCH_BATCH_ROWS=$batch_rows BENCH_LOAD_DATA=$load_data scripts/bench/apply.sh" ours load perrow
