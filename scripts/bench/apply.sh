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
#   (ours-upd) `db-sync compact --once` applying an update-heavy window: 1,000,000 changes
#             over the 200,000 keys of bench.public.bench_upd (updates, 50,000 deletes, 5,000
#             re-inserts; scripts/sql/bench_updates.sql) onto the table's first 200,000 rows
#   (hand)    the best hand-written SQL for the same final rows on the same server: LOAD DATA
#             of the final rows into a staging table, one INSERT … SELECT … ON DUPLICATE KEY
#             UPDATE, LOAD DATA of the deleted keys, one DELETE … JOIN
# Checks that (ours) and (load), and (ours-upd) and (hand), hold the same rows (CHECKSUM TABLE),
# then prints rows, seconds and rows/s per run, the ratios ours/load, ours/perrow and
# ours-upd/hand, and db-sync's peak RSS.
#
# Usage: scripts/bench/apply.sh
#   BENCH_ROWS (1000000)        rows of bench.public.bench_wide (refilled when it differs)
#   BENCH_PERROW_ROWS (10000)   rows the per-row run writes
#   BENCH_BATCH_ROWS (20000)    target.batch_rows of (ours)
#   BENCH_LOAD_DATA (true)      target.load_data of (ours); false times multi-row INSERT
#   BENCH_KEEP=1                keep the run dir
# The journals are captured once into ~/.cache/db-sync/bench/apply-journal-<N>/ and
# apply-update-journal/, with a fingerprint of the source table they came from (server system
# identifier, rows, a hash of every row): a re-created server or a changed table means
# capturing again. Delete them to capture again anyway.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n=$(bench_count BENCH_ROWS 1000000)
perrow_n=$(bench_count BENCH_PERROW_ROWS 10000)
batch_rows=$(bench_count BENCH_BATCH_ROWS 20000)
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
  [[ -z ${cpid:-} ]] || kill -TERM "$cpid" 2>/dev/null || true
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
# The rows are read back from PostgreSQL below: the table must exist and be the one the
# cached journal was captured from.
if bench_table "$table" "$n" "$ROOT/scripts/sql/bench_wide.sql"; then
  psql_db bench -c "vacuum analyze public.$table"
fi
if bench_journal_matches "$cache" "$n" "$table"; then
  log "reusing the journal of $n events in $cache"
else
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
  bench_fingerprint "$table" >"$cache/source"
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

# --- 6. the update-heavy case ----------------------------------------------------------------
# public.bench_upd: 200,000 rows applied first (not timed), then a window of 1,000,000 changes
# over those keys (scripts/sql/bench_updates.sql), applied by db-sync (ours-upd) and by the
# best hand-written SQL for the same final rows (hand): LOAD DATA of the final rows into a
# staging table, one INSERT … SELECT … ON DUPLICATE KEY UPDATE, LOAD DATA of the deleted keys
# and one DELETE … JOIN, in one client process. The journals (200,000 snapshot events; the
# same journal after the window) are cached in ~/.cache/db-sync/bench/apply-update-journal/.
utable=bench_upd
ukeys=200000
uchanges=1000000
ucache=$CACHE_DIR/bench/apply-update-journal
umydb=bench_apply_upd
# ucapture_config: capture of public.bench_upd into the cache's journal (its offsets in state/).
ucapture_config() {
  echo "name: bench"
  bench_source "$utable" "$slot" "$ucache/state"
  bench_engine
  printf 'journal:\n  dir: %s\naudit:\n  url: %s\n' "$ucache/journal" "file://$run_dir/uaudit-capture"
}
if bench_journal_matches "$ucache/full" $((ukeys + uchanges)) "$utable" &&
  bench_journal_cached "$ucache/snap" "$ukeys"; then
  log "reusing the update-heavy journals in $ucache"
else
  rm -rf "$ucache"
  mkdir -p "$ucache/state" "$ucache/snap" "$ucache/full"
  bench_db
  log "filling public.$utable with $ukeys rows"
  psql_db bench -1 -v tbl="$utable" -v rows="$ukeys" -f "$ROOT/scripts/sql/bench_wide.sql" >/dev/null
  psql_db bench -c "vacuum analyze public.$utable"
  slot=bench_upd_$run_id
  ucapture_config >"$run_dir/ucapture.yaml"
  log "capturing the $ukeys-row snapshot of public.$utable"
  "$bin" --config "$run_dir/ucapture.yaml" capture --exit-after-snapshot >"$run_dir/ucapture1.log" 2>&1 ||
    { keep=1; die "capture of public.$utable failed (log kept: $run_dir/ucapture1.log)"; }
  cp -R "$ucache/journal" "$ucache/snap/journal"
  log "the window: $uchanges changes (scripts/sql/bench_updates.sql)"
  psql_db bench -v tbl="$utable" -f "$ROOT/scripts/sql/bench_updates.sql" >/dev/null
  "$bin" --config "$run_dir/ucapture.yaml" capture >"$run_dir/ucapture2.log" 2>&1 &
  cpid=$!
  want=$((ukeys + uchanges))
  for _ in $(seq 600); do
    got=$("$bin" --config "$run_dir/ucapture.yaml" status --json 2>/dev/null |
      "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["last_journaled_seq"])' 2>/dev/null || echo 0)
    ((got >= want)) && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 1
  done
  kill -TERM "$cpid" 2>/dev/null || true
  wait "$cpid" || true
  drop_slot_and_publication bench "$slot"
  slot=""
  ((got == want)) || { keep=1; die "capture journaled $got events of public.$utable, expected $want (log kept: $run_dir/ucapture2.log)"; }
  mv "$ucache/journal" "$ucache/full/journal"
  printf '%s\n' "$ukeys" >"$ucache/snap/events"
  printf '%s\n' "$want" >"$ucache/full/events"
  bench_fingerprint "$utable" >"$ucache/full/source"
fi

ujournal=$run_dir/ujournal
uconfig() {
  echo "name: bench"
  bench_source "$utable" "unused_$run_id" "$run_dir/ustate"
  bench_engine
  printf 'journal:\n  dir: %s\naudit:\n  url: %s\n' "$ujournal" "file://$run_dir/uaudit"
  if [[ -n ${1:-} ]]; then
    printf 'target:\n  url: %s\n  batch_rows: %s\n  load_data: %s\n' "$1" "$batch_rows" "$load_data"
  fi
}
my -e "DROP DATABASE IF EXISTS $umydb; CREATE DATABASE $umydb CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
uconfig >"$run_dir/uaudit.yaml"
uconfig "mysql://root@127.0.0.1:$MYSQL_PORT/$umydb" >"$run_dir/uapply.yaml"
log "applying the $ukeys-row snapshot first (not timed)"
bench_journal_copy "$ucache/snap" "$ujournal"
"$bin" --config "$run_dir/uapply.yaml" compact --once >/dev/null
my "$umydb" -e "CREATE TABLE hand LIKE $utable; INSERT INTO hand SELECT * FROM $utable"
# The same journal after the window, keeping this run's progress files: only the window is new.
# Its segments replace all of this run's (compaction sealed the active one and started an
# empty one at 200,001, which the full journal holds inside its first segment).
rm -f "$ujournal"/segment-*.log
for f in "$ucache/full/journal"/*; do
  case ${f##*/} in
    *-progress.json | audit-manifest.json) ;;
    *) cp -R -f "$f" "$ujournal/" ;;
  esac
done
log "auditing the window first (not timed): the timed run only applies"
"$bin" --config "$run_dir/uaudit.yaml" compact --once >/dev/null
label[ours-upd]="db-sync compact (apply)"
bench_timed ours-upd "$bin" --config "$run_dir/uapply.yaml" compact --once
rows[ours-upd]=$uchanges
usummary=$(cat "$run_dir/ours-upd.out")

log "exporting the final rows and the deleted keys from PostgreSQL (not timed)"
psql_db bench -c "\\copy (SELECT id, qty, name, price, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), active::int, note, score, day, code FROM public.$utable ORDER BY id) TO '$run_dir/final.tsv'"
psql_db bench -c "\\copy (SELECT g FROM generate_series(1, $ukeys) AS g WHERE NOT EXISTS (SELECT 1 FROM public.$utable WHERE id = g) ORDER BY g) TO '$run_dir/gone.tsv'"
sets=$(printf '%s = VALUES(%s), ' qty qty name name price price created_at created_at active active note note score score day day code code)
cat >"$run_dir/hand.sql" <<SQL
CREATE TABLE stage LIKE hand;
CREATE TABLE gone (id bigint PRIMARY KEY);
LOAD DATA LOCAL INFILE '$run_dir/final.tsv' INTO TABLE stage CHARACTER SET utf8mb4 (id, qty, name, price, created_at, active, note, score, day, code);
LOAD DATA LOCAL INFILE '$run_dir/gone.tsv' INTO TABLE gone (id);
INSERT INTO hand SELECT * FROM stage ON DUPLICATE KEY UPDATE ${sets%, };
DELETE hand FROM hand JOIN gone ON hand.id = gone.id;
SQL
label[hand]="LOAD DATA + INSERT … SELECT … ON DUPLICATE KEY UPDATE + DELETE … JOIN"
bench_timed hand bash -c "mariadb --no-defaults -h 127.0.0.1 -P $MYSQL_PORT -uroot --local-infile=1 $umydb < '$run_dir/hand.sql'"
rows[hand]=$uchanges
ucount=$(my -N -e "SELECT COUNT(*) FROM $umydb.$utable")
hcount=$(my -N -e "SELECT COUNT(*) FROM $umydb.hand")
pcount=$(psql_db bench -Atc "SELECT count(*) FROM public.$utable")
[[ $ucount == "$pcount" && $hcount == "$pcount" ]] ||
  { keep=1; die "row counts differ: db-sync $ucount, hand $hcount, source $pcount (run dir kept: $run_dir)"; }
uours_sum=$(my -N -e "CHECKSUM TABLE $umydb.$utable" | awk '{ print $2 }')
hand_sum=$(my -N -e "CHECKSUM TABLE $umydb.hand" | awk '{ print $2 }')
[[ $uours_sum == "$hand_sum" ]] ||
  { keep=1; die "the tables differ: CHECKSUM TABLE $utable=$uours_sum, hand=$hand_sum (run dir kept: $run_dir)"; }

# --- 7. report ----------------------------------------------------------------------------
echo
echo "apply benchmark: $n rows of bench.public.$table (10 columns) into MariaDB $(my -N -e 'SELECT VERSION()') (InnoDB)"
echo "host: $(bench_host); whole-process wall time; innodb_flush_log_at_trx_commit = 1 (durable commits)"
echo
bench_results rows "50 9 9 10 12" ours load perrow
echo
declare -A r
for k in ours load perrow; do r[$k]=$(bench_rate "${rows[$k]}" "${secs[$k]}"); done
echo "rows/s ratio ours/load = $(bench_ratio "${r[ours]}" "${r[load]}") (target >= 0.9); ours/perrow = $(bench_ratio "${r[ours]}" "${r[perrow]}" 1) (target >= 20)"
echo "same rows: CHECKSUM TABLE $table = loaded = $ours_sum"
echo "db-sync said: $summary"
echo
echo "update-heavy case: $uchanges changes over $ukeys keys of bench.public.$utable ($pcount rows after)"
echo
bench_results rows "50 9 9 10 12" ours-upd hand
echo
r[ours-upd]=$(bench_rate "${rows[ours-upd]}" "${secs[ours-upd]}")
r[hand]=$(bench_rate "${rows[hand]}" "${secs[hand]}")
echo "changes/s ratio ours/hand-written = $(bench_ratio "${r[ours-upd]}" "${r[hand]}") (target >= 1.0)"
echo "same rows: CHECKSUM TABLE $utable = hand = $uours_sum"
echo "db-sync said: $usummary"
echo "peak RSS of db-sync: $(bench_mb "${rss[ours]}") MB (snapshot), $(bench_mb "${rss[ours-upd]}") MB (updates) (target <= 300)"
echo
bench_commands "BENCH_ROWS=$n BENCH_BATCH_ROWS=$batch_rows BENCH_LOAD_DATA=$load_data scripts/bench/apply.sh" ours load perrow ours-upd hand
