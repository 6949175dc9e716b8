#!/usr/bin/env bash
# Capture benchmark: the initial snapshot of one PostgreSQL table of N rows, four ways,
# each a whole process timed from launch to exit (JVM start included in the first three):
#   (a) java-json     Debezium's embedded engine in a plain JVM, Json format, events discarded
#   (b) java-connect  the same with the Connect format (SourceRecords, no conversion)
#   (c) db-sync       `db-sync capture --exit-after-snapshot` with `snapshot.loader: debezium`:
#                     Debezium's snapshot through the bridge, every event journaled, fsync per batch
#   (d) db-sync-native  the same with db-sync's own loader (the default: binary COPY, no JVM)
# Same engine properties and -Xmx1g for all; fresh offsets, slot and publication per run.
# Prints events, seconds, events/s and peak RSS (/usr/bin/time -v) per run, the throughput
# ratios (c)/(a), (c)/(b) (the capture path against the engine) and (d)/(b), and journal bytes
# per event. Java sources: scripts/bench/java/.
#
# Usage: scripts/bench/capture.sh
#   BENCH_ROWS (1000000)  rows in bench.public.bench_rows (recreated when the count differs)
#   BENCH_KEEP=1          keep the run dir (offsets, journal, logs) under ~/.cache/db-sync/bench
# The `bench` database is kept for the next run; slots and publications are dropped.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rows=$(bench_count BENCH_ROWS 1000000)
invocation="BENCH_ROWS=$rows scripts/bench/capture.sh"

bench_setup all

# --- 1. the bench database and table -------------------------------------------------------
bench_table bench_rows "$rows" || true # 1: already filled
psql_db bench -c "vacuum analyze public.bench_rows"

# --- 2. run dir, Java baselines, engine properties -----------------------------------------
bench_run_dir run
slots=()

cleanup() {
  local s
  for s in "${slots[@]}"; do
    drop_slot_and_publication bench "$s"
  done
  bench_remove_run_dir
}
trap cleanup EXIT

src_dir=$ROOT/scripts/bench/java
classes=$CACHE_DIR/bench/classes
if [[ ! -f $classes/CaptureBench.class || -n $(find "$src_dir" -name '*.java' -newer "$classes/CaptureBench.class") ]]; then
  log "compiling $src_dir"
  rm -rf "$classes"
  mkdir -p "$classes"
  javac -nowarn -d "$classes" -cp "$ROOT/debezium/lib/*" "$src_dir"/*.java || die "javac failed (see above)"
fi

# capture_config KEY [LOADER] — run KEY's db-sync config (`snapshot.loader`, default
# debezium). The engine runs start with the properties db-sync gives it for this config: (c)
# itself, (a) and (b) as `db-sync engine-properties` prints them (bench_engine_properties).
# Signalling is off in all: the plain-JVM harness counts the events of the one table in
# table.include.list.
capture_config() {
  echo "name: bench"
  bench_source bench_rows "bench_${run_id}_$1" "$run_dir/$1" signal.data.collection=
  bench_engine -Xmx1g
  printf 'journal:\n  dir: %s\n' "$run_dir/$1/journal"
  printf 'snapshot:\n  loader: %s\n' "${2:-debezium}"
}

# --- 3. the three runs -----------------------------------------------------------------------
declare -A label events secs rss cmdline

# timed KEY CMD... — bench_timed (lib.sh), remembering the run's replication slot to drop.
timed() {
  slots+=("bench_${run_id}_$1")
  bench_timed "$@"
}

java_run() {
  local k=$1 mode=$2
  mkdir -p "$run_dir/$k"
  capture_config "$k" >"$run_dir/$k.yaml"
  bench_engine_properties "$run_dir/$k.yaml" >"$run_dir/$k.properties"
  timed "$k" java -Xmx1g -cp "$ROOT/debezium/lib/*:$classes" CaptureBench "$mode" "$run_dir/$k.properties"
  events[$k]=$(sed -n 's/^events=\([0-9]*\) .*/\1/p' "$run_dir/$k.out")
  engine_secs[$k]=$(sed -n 's/.*engine_seconds=\([0-9.]*\).*/\1/p' "$run_dir/$k.out")
  [[ ${events[$k]} == "$rows" ]] ||
    { keep=1; die "run ($k) counted ${events[$k]:-no} events, expected $rows (logs kept in $run_dir)"; }
}
declare -A engine_secs

cd "$ROOT"
label[a]=java-json
java_run a json
label[b]=java-connect
java_run b connect

# db_sync_run KEY LOADER — `capture --exit-after-snapshot`, then checks it journaled N events.
db_sync_run() {
  local k=$1 cfg=$run_dir/$1.yaml
  mkdir -p "$run_dir/$k"
  capture_config "$k" "$2" >"$cfg"
  timed "$k" "$bin" --config "$cfg" capture --exit-after-snapshot
  events[$k]=$("$bin" --config "$cfg" journal dump | wc -l) || { keep=1; die "db-sync journal dump failed (config $cfg)"; }
  if [[ ${events[$k]} != "$rows" ]]; then
    keep=1
    die "db-sync journaled ${events[$k]} events, expected $rows (run dir kept: $run_dir; stderr: $run_dir/$k.err)"
  fi
}
label[c]="db-sync"
db_sync_run c debezium
journal_bytes=$(bench_bytes "$run_dir/c/journal" 'segment-*.log')
label[d]="db-sync-native"
db_sync_run d native

# --- 4. report ------------------------------------------------------------------------------
echo
echo "capture benchmark: initial snapshot of bench.public.bench_rows ($rows rows, 7 columns), PostgreSQL 15 on 127.0.0.1:$PG_PORT"
echo "host: $(bench_host); $(java -version 2>&1 | head -n 1); whole-process wall time (JVM start to exit)"
echo
bench_results events "19 10 9 11 13" a b c d
echo
# The same N in every run: the ratio of events/s is that of the seconds, inverted.
echo "events/s ratio (c)/(a) = $(bench_ratio "${secs[a]}" "${secs[c]}")"
echo "events/s ratio (c)/(b) = $(bench_ratio "${secs[b]}" "${secs[c]}")"
echo "events/s ratio (d)/(b) = $(bench_ratio "${secs[b]}" "${secs[d]}") (db-sync's own loader against the engine's snapshot)"
awk -v j="$journal_bytes" -v n="$rows" 'BEGIN { printf "journal: %d bytes in segment-*.log = %.1f bytes/event\n", j, j / n }'
echo "engine start to last event (inside the JVM, no JVM start): (a) ${engine_secs[a]} s, (b) ${engine_secs[b]} s"
echo
bench_commands "$invocation" a b c d
