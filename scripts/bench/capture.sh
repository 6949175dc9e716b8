#!/usr/bin/env bash
# Capture benchmark: the initial snapshot of one PostgreSQL table of N rows, three ways,
# each a whole process timed from launch to exit (JVM start included in all three):
#   (a) java-json     Debezium's embedded engine in a plain JVM, Json format, events discarded
#   (b) java-connect  the same with the Connect format (SourceRecords, no conversion)
#   (c) db-sync       `db-sync capture --exit-after-snapshot`: every event journaled, fsync per batch
# Same engine properties and -Xmx1g for all three; fresh offsets, slot and publication per run.
# Prints events, seconds, events/s and peak RSS (/usr/bin/time -v) per run, the throughput
# ratios (c)/(a) and (c)/(b), and journal bytes per event. Java sources: scripts/bench/java/.
#
# Usage: scripts/bench/capture.sh
#   BENCH_ROWS (1000000)  rows in bench.public.bench_rows (recreated when the count differs)
#   BENCH_KEEP=1          keep the run dir (offsets, journal, logs) under ~/.cache/db-sync/bench
# The `bench` database is kept for the next run; slots and publications are dropped.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rows=${BENCH_ROWS:-1000000}
[[ $rows =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive whole number, got '$rows'"
keep=${BENCH_KEEP:-0}
invocation="BENCH_ROWS=$rows scripts/bench/capture.sh"

bench_setup all


# --- 1. the bench database and table -------------------------------------------------------
bench_table bench_rows "$rows" || true # 1: already filled
psql_db bench -c "vacuum analyze public.bench_rows"

# --- 2. run dir, Java baselines, engine properties -----------------------------------------
mkdir -p "$CACHE_DIR/bench"
run_dir=$(mktemp -d "$CACHE_DIR/bench/run.XXXXXX") # local disk (the journal is fsynced here)
run_id="$(date +%s)_$$"
slots=()

cleanup() {
  local s
  for s in "${slots[@]}"; do
    drop_slot_and_publication bench "$s"
  done
  if [[ $keep == 1 ]]; then
    log "kept $run_dir"
  else
    rm -rf "$run_dir"
  fi
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

# engine_props KEY — db-sync's engine properties (src/capture/mod.rs engine_properties) for
# run KEY, as key=value lines: its defaults plus the source: keys the db-sync run sets.
engine_props() {
  local k=$1 slot="bench_${run_id}_$1"
  cat <<EOF
name=bench
connector.class=io.debezium.connector.postgresql.PostgresConnector
database.hostname=127.0.0.1
database.port=$PG_PORT
database.user=postgres
database.password=$PG_SUPERPASS
database.dbname=bench
topic.prefix=bench
plugin.name=pgoutput
table.include.list=public.bench_rows
snapshot.mode=initial
slot.name=$slot
publication.name=$slot
publication.autocreate.mode=filtered
offset.storage=org.apache.kafka.connect.storage.FileOffsetBackingStore
offset.storage.file.filename=$run_dir/$k/offsets.dat
offset.flush.interval.ms=1000
schema.history.internal=io.debezium.storage.file.history.FileSchemaHistory
schema.history.internal.file.filename=$run_dir/$k/history.dat
tombstones.on.delete=false
heartbeat.interval.ms=10000
heartbeat.action.query=SELECT pg_logical_emit_message(false, 'db-sync-heartbeat', now()::text)
EOF
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
  engine_props "$k" >"$run_dir/$k.properties"
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

label[c]="db-sync"
mkdir -p "$run_dir/c"
cfg=$run_dir/c.yaml
{
  echo "name: bench"
  echo "source:"
  engine_props c | grep -v '^name=' | sed 's/^\([^=]*\)=\(.*\)$/  \1: "\2"/'
  echo "engine:"
  echo "  lib_dir: $ROOT/debezium/lib"
  echo "  jvm_options: [-Xmx1g]"
  echo "journal:"
  echo "  dir: $run_dir/c/journal"
} >"$cfg"
timed c "$bin" --config "$cfg" capture --exit-after-snapshot
events[c]=$("$bin" --config "$cfg" journal dump | wc -l) || { keep=1; die "db-sync journal dump failed (config $cfg)"; }
if [[ ${events[c]} != "$rows" ]]; then
  keep=1
  die "db-sync journaled ${events[c]} events, expected $rows (run dir kept: $run_dir; stderr: $run_dir/c.err)"
fi
journal_bytes=$(find "$run_dir/c/journal" -name 'segment-*.log' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

# --- 4. report ------------------------------------------------------------------------------
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
echo
echo "capture benchmark: initial snapshot of bench.public.bench_rows ($rows rows, 7 columns), PostgreSQL 15 on 127.0.0.1:$PG_PORT"
echo "host: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); $(java -version 2>&1 | head -n 1); whole-process wall time (JVM start to exit)"
echo
printf '%-16s %10s %9s %11s %13s\n' name events seconds events/s "peak RSS MB"
for k in a b c; do
  printf '%-16s %10s %9s %11s %13.0f\n' "($k) ${label[$k]}" "${events[$k]}" "${secs[$k]}" \
    "$(rate "${events[$k]}" "${secs[$k]}")" "$(awk -v kb="${rss[$k]}" 'BEGIN { print kb / 1024 }')"
done
echo
awk -v n="$rows" -v a="${secs[a]}" -v b="${secs[b]}" -v c="${secs[c]}" 'BEGIN {
  printf "events/s ratio (c)/(a) = %.2f\n", (n / c) / (n / a)
  printf "events/s ratio (c)/(b) = %.2f\n", (n / c) / (n / b)
}'
awk -v j="$journal_bytes" -v n="$rows" 'BEGIN { printf "journal: %d bytes in segment-*.log = %.1f bytes/event\n", j, j / n }'
echo "engine start to last event (inside the JVM, no JVM start): (a) ${engine_secs[a]} s, (b) ${engine_secs[b]} s"
echo
echo "command: $invocation"
for k in a b c; do
  echo "($k) ${cmdline[$k]}"
done
