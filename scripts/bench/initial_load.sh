#!/usr/bin/env bash
# Initial load benchmark: the N rows of bench.public.bench_wide (10 columns, the apply
# benchmark's generator) from PostgreSQL into audit files and an empty MariaDB table, each run
# timed as a whole from an empty state directory to the last row applied, all in one run:
#   (ours)     db-sync's native loader (snapshot.loader: native, the default):
#              `capture --exit-after-snapshot`, then `compact --once`
#   (debezium) the same with snapshot.loader: debezium (Debezium's own snapshot)
#   (floor)    psql "\copy (SELECT …) TO STDOUT" | mariadb "LOAD DATA LOCAL INFILE '/dev/stdin'",
#              one pipe into an empty copy of the table
#   (ours-flow) (ours) with `compact --once` run again and again beside the load (the
#              pipeline auditing and applying the ranges as they arrive), then once more
#   (killed)   (ours) with `kill -9` of the capture once half of the load's ranges are
#              journaled, then started again: the load goes on with the ranges left
#   (ours-audit), (debezium-audit)  (ours) and (debezium) without a target: audit files only
# Checks that each target table holds the same rows as (floor) (row count, CHECKSUM TABLE),
# then prints rows, seconds, rows/s and peak RSS per run and the lines
#   ratio ours/debezium = X, ratio ours/floor = X, ratio killed/ours = X,
#   ratio audit-only ours/debezium = X, peak RSS of the loader = X MB
#
# Usage: scripts/bench/initial_load.sh
#   BENCH_ROWS (10000000)   rows of the table (refilled when it differs)
#   BENCH_KEEP=1            keep the run dir
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n=$(bench_count BENCH_ROWS 10000000)
table=bench_wide
((n == 1000000)) || table=bench_wide_$n
mydb=bench_initial
columns="id, qty, name, price, created_at, active, note, score, day, code"

bench_setup all
command -v mariadb >/dev/null || die "the mariadb client is missing: run scripts/setup.sh"
my() { bench_mariadb --local-infile=1 "$@"; }

cd "$ROOT"
bench_run_dir initial-load-run
slots=()
cleanup() {
  [[ -z ${cpid:-} ]] || kill -KILL "$cpid" 2>/dev/null || true
  for s in "${slots[@]}"; do drop_slot_and_publication bench "$s"; done
  bench_remove_run_dir
}
trap cleanup EXIT
declare -A label rows secs rss cmdline

if bench_table "$table" "$n" "$ROOT/scripts/sql/bench_wide.sql"; then
  psql_db bench -c "vacuum analyze public.$table"
fi

# config KEY LOADER [TARGET_DB] — a db-sync config of run KEY: its own slot, journal, audit
# directory and (given) target database.
config() {
  local key=$1 slot="bench_il_${1//-/_}_$run_id"
  echo "name: bench"
  bench_source "$table" "$slot" "$run_dir/$key"
  bench_engine
  printf 'journal:\n  dir: %s\naudit:\n  url: %s\nsnapshot:\n  loader: %s\nmetrics:\n  listen: ""\n' \
    "$run_dir/$key/journal" "file://$run_dir/$key/audit" "$2"
  if [[ -n ${3:-} ]]; then
    printf 'target:\n  url: %s\n' "mysql://root@127.0.0.1:$MYSQL_PORT/$3"
  fi
}

# prepare KEY LOADER [TARGET_DB] — the run's directory, config and (empty) target database.
prepare() {
  mkdir -p "$run_dir/$1"
  slots+=("bench_il_${1//-/_}_$run_id")
  config "$@" >"$run_dir/$1.yaml"
  if [[ -n ${3:-} ]]; then
    my -e "DROP DATABASE IF EXISTS $3; CREATE DATABASE $3 CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
  fi
}

load_and_apply() {
  printf '"%s" --config "%s" capture --exit-after-snapshot && "%s" --config "%s" compact --once' \
    "$bin" "$1" "$bin" "$1"
}

# load_while_applying CONFIG DIR — the load with `compact --once` run again and again beside it
# from the moment it has a plan (DIR/journal/loader-progress.json), as `db-sync run`'s
# compaction job would on a short schedule; then one last compaction.
load_while_applying() {
  printf '"%s" --config "%s" capture --exit-after-snapshot & c=$!
while kill -0 $c 2>/dev/null; do
  if [ -e "%s/journal/loader-progress.json" ]; then
    "%s" --config "%s" compact --once >>"%s/compactions.log" 2>&1 || { kill $c; exit 1; }
  else sleep 0.1; fi
done
wait $c && "%s" --config "%s" compact --once' \
    "$bin" "$1" "$2" "$bin" "$1" "$2" "$bin" "$1"
}

# --- (floor) ------------------------------------------------------------------------------
my -e "DROP DATABASE IF EXISTS ${mydb}_floor; CREATE DATABASE ${mydb}_floor CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
# The table as db-sync creates it (so CHECKSUM TABLE compares like with like): from (ours).
label[floor]="psql \\copy | LOAD DATA LOCAL INFILE, one pipe"

# --- (ours) -------------------------------------------------------------------------------
prepare ours native "${mydb}_ours"
label[ours]="native loader, capture + compact"
bench_timed ours bash -c "$(load_and_apply "$run_dir/ours.yaml")"
rows[ours]=$(my -N -e "SELECT COUNT(*) FROM ${mydb}_ours.$table")
loader_rss=${rss[ours]}

my -e "CREATE TABLE ${mydb}_floor.$table LIKE ${mydb}_ours.$table"
export PGPASSWORD=$PG_SUPERPASS
bench_timed floor bash -c "psql -h 127.0.0.1 -p $PG_PORT -U postgres -d bench -c \"\\copy (SELECT id, qty, name, price, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), active::int, note, score, day, code FROM public.$table) TO STDOUT\" | mariadb --no-defaults -h 127.0.0.1 -P $MYSQL_PORT -uroot --local-infile=1 ${mydb}_floor -e \"LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE $table CHARACTER SET utf8mb4 ($columns)\""
rows[floor]=$(my -N -e "SELECT COUNT(*) FROM ${mydb}_floor.$table")
[[ ${rows[floor]} == "$n" ]] || die "the floor loaded ${rows[floor]} rows, expected $n"
want=$(my -N -e "CHECKSUM TABLE ${mydb}_floor.$table" | awk '{ print $2 }')

same() { # same KEY DB — the target of run KEY holds the floor's rows
  local got
  got=$(my -N -e "CHECKSUM TABLE $2.$table" | awk '{ print $2 }')
  [[ ${rows[$1]} == "$n" && $got == "$want" ]] ||
    { keep=1; die "($1) left ${rows[$1]} rows with CHECKSUM $got, expected $n and $want (run dir kept: $run_dir)"; }
}
same ours "${mydb}_ours"

# --- (ours-flow) --------------------------------------------------------------------------
prepare ours-flow native "${mydb}_flow"
label[ours-flow]="native loader, compact --once beside it"
bench_timed ours-flow bash -c "$(load_while_applying "$run_dir/ours-flow.yaml" "$run_dir/ours-flow")"
rows[ours-flow]=$(my -N -e "SELECT COUNT(*) FROM ${mydb}_flow.$table")
same ours-flow "${mydb}_flow"

# --- (debezium) ---------------------------------------------------------------------------
prepare debezium debezium "${mydb}_debezium"
label[debezium]="Debezium's snapshot, capture + compact"
bench_timed debezium bash -c "$(load_and_apply "$run_dir/debezium.yaml")"
rows[debezium]=$(my -N -e "SELECT COUNT(*) FROM ${mydb}_debezium.$table")
same debezium "${mydb}_debezium"

# --- (killed) -----------------------------------------------------------------------------
prepare killed native "${mydb}_killed"
label[killed]="native loader, kill -9 at half, restarted"
progress=$run_dir/killed/journal/loader-progress.json
t0=$(date +%s%N)
"$bin" --config "$run_dir/killed.yaml" capture --exit-after-snapshot >"$run_dir/killed-1.out" 2>"$run_dir/killed-1.err" &
cpid=$!
while kill -0 "$cpid" 2>/dev/null; do
  half=$(python3 -c 'import json,sys
try:
    d = json.load(open(sys.argv[1]))["done"]; print(int(2 * sum(d) >= len(d)))
except Exception:
    print(0)' "$progress")
  [[ $half == 1 ]] && break
  sleep 0.2
done
kill -KILL "$cpid" 2>/dev/null || die "the killed run finished before half its ranges were journaled"
wait "$cpid" 2>/dev/null || true
cpid=""
done_at_kill=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["done"]; print(f"{sum(d)} of {len(d)}")' "$progress")
bench_timed killed bash -c "$(load_and_apply "$run_dir/killed.yaml")"
t1=$(date +%s%N)
secs[killed]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
rows[killed]=$(my -N -e "SELECT COUNT(*) FROM ${mydb}_killed.$table")
same killed "${mydb}_killed"
snapshot_rows=$("$bin" --config "$run_dir/killed.yaml" journal dump | grep -c '"snapshot":true' || true)

# --- audit only ---------------------------------------------------------------------------
prepare ours-audit native
label[ours-audit]="native loader, audit files only"
bench_timed ours-audit bash -c "$(load_and_apply "$run_dir/ours-audit.yaml")"
rows[ours-audit]=$n
prepare debezium-audit debezium
label[debezium-audit]="Debezium's snapshot, audit files only"
bench_timed debezium-audit bash -c "$(load_and_apply "$run_dir/debezium-audit.yaml")"
rows[debezium-audit]=$n

echo
echo "initial load of $n rows of public.$table ($(bench_host)); every target CHECKSUM-equal to (floor)"
bench_results rows "48 10 9 10 12" ours ours-flow debezium floor killed ours-audit debezium-audit
echo "(killed): killed with $done_at_kill ranges journaled; $snapshot_rows snapshot rows in its journal (each row once)"
echo "ratio ours/debezium = $(bench_ratio "${secs[debezium]}" "${secs[ours]}")"
echo "ratio ours/floor = $(bench_ratio "${secs[floor]}" "${secs[ours]}")"
echo "ratio killed/ours = $(bench_ratio "${secs[killed]}" "${secs[ours]}")"
echo "ratio ours-flow/floor = $(bench_ratio "${secs[floor]}" "${secs[ours-flow]}") (the pipeline applying while it loads)"
echo "ratio audit-only ours/debezium = $(bench_ratio "${secs[debezium-audit]}" "${secs[ours-audit]}")"
echo "peak RSS of the loader = $(printf '%.0f' "$(bench_mb "$loader_rss")") MB"
bench_commands "BENCH_ROWS=$n scripts/bench/initial_load.sh" ours ours-flow debezium floor killed ours-audit debezium-audit
