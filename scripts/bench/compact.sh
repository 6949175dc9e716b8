#!/usr/bin/env bash
# Compaction benchmark: one journal of N snapshot events of a 7-column PostgreSQL table
# (bigint, int, text, numeric(12,2), timestamptz, boolean, text) turned into zstd Parquet
# two ways, each a whole process timed from launch to exit:
#   (ours)    `db-sync compact --once`: journal -> <schema>.<table>/date=YYYY-MM-DD/<first>-<last>.<journal>.parquet
#             under a file:// audit URL; the output is counted with DuckDB and must hold N rows
#   (duckdb)  DuckDB (Python package, SET threads = 2) converting the same events, dumped
#             by `db-sync journal dump` as JSON lines (not timed), into one Parquet file with
#             the same columns and types (row columns + _cdc_op/seq/ts/position/tx/snapshot)
# Prints events, seconds, events/s, peak RSS (/usr/bin/time -v) and output bytes per run,
# the ratios ours/duckdb in events/s and in output bytes (smaller is better), the JSON-lines
# and journal sizes, and the command lines.
#
# Usage: scripts/bench/compact.sh
#   BENCH_EVENTS (1000000)  events in the journal: the snapshot of bench.public.bench_rows
#                           (N = 1000000, shared with scripts/bench/capture.sh) or of
#                           bench.public.bench_rows_<N>; the table is (re)filled when its
#                           count differs
#   BENCH_RUNS ("ours duckdb")  which runs to time (e.g. "duckdb" before `compact` exists)
#   BENCH_KEEP=1            keep the run dir (journal copy, JSON lines, outputs, logs)
# The journal is captured once (`db-sync capture --exit-after-snapshot`) and cached in
# ~/.cache/db-sync/bench/compact-journal-<N>/; delete that dir to capture again. Each run
# compacts a fresh copy of it, so the audit progress starts empty.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n=$(bench_count BENCH_EVENTS 1000000)
runs=${BENCH_RUNS:-ours duckdb}
for r in $runs; do
  case $r in ours | duckdb) ;; *) die "BENCH_RUNS may name ours and duckdb, got '$r'" ;; esac
done
[[ -n ${runs// /} ]] || die "BENCH_RUNS is empty; set it to 'ours duckdb', 'ours' or 'duckdb'"
run_ours=0 run_duckdb=0
[[ " $runs " == *" ours "* ]] && run_ours=1
[[ " $runs " == *" duckdb "* ]] && run_duckdb=1
invocation="BENCH_EVENTS=$n scripts/bench/compact.sh"
[[ $runs == "ours duckdb" ]] || invocation="BENCH_RUNS=\"$runs\" $invocation"
table=bench_rows
((n == 1000000)) || table=bench_rows_$n

bench_setup pg
py=$VENV/bin/python
"$py" -c 'import duckdb' 2>/dev/null || die "$VENV has no duckdb: run scripts/setup.sh"
if ((run_ours)) && ! "$bin" compact --help >/dev/null 2>&1; then
  die "$bin has no compact command yet: build it with 'cargo build --release', or time only the reference with BENCH_RUNS=duckdb"
fi

# duck SQL — run SQL in DuckDB (in memory, the venv's package); prints the rows as CSV.
duck() {
  "$py" -c 'import csv, duckdb, sys
csv.writer(sys.stdout, lineterminator="\n").writerows(duckdb.connect().execute(sys.argv[1]).fetchall())' "$1"
}

cd "$ROOT"
bench_run_dir compact-run
slot=""   # replication slot and publication of a capture, dropped on exit
build=""  # a journal being captured, removed on exit

cleanup() {
  if [[ -n $slot ]]; then
    drop_slot_and_publication bench "$slot"
  fi
  [[ -z $build ]] || rm -rf "$build"
  bench_remove_run_dir
}
trap cleanup EXIT

declare -A label events secs rss bytes cmdline

# engine_config JOURNAL_DIR [AUDIT_URL] — a db-sync config: db-sync's engine defaults for
# public.$table, offsets and history in the run dir.
engine_config() {
  echo "name: bench"
  bench_source "$table" "bench_compact_$run_id" "$run_dir/capture"
  bench_engine -Xmx1g
  printf 'journal:\n  dir: %s\n' "$1"
  [[ -z ${2:-} ]] || printf 'audit:\n  url: %s\n' "$2"
}

# --- 1. the journal: cached, or captured from bench.public.$table --------------------------
cache=$CACHE_DIR/bench/compact-journal-$n # journal/ and events (the verified count)
captured=0
if bench_journal_cached "$cache" "$n"; then
  log "reusing the journal of $n events in $cache"
else
  if bench_table "$table" "$n"; then
    log "vacuum analyze public.$table"
    psql_db bench -c "vacuum analyze public.$table"
  fi
  build=$(mktemp -d "$cache.build.XXXXXX")
  mkdir -p "$run_dir/capture"
  engine_config "$build/journal" >"$run_dir/capture.yaml"
  slot=bench_compact_$run_id
  label[capture]="db-sync capture --exit-after-snapshot (builds the journal)"
  bench_timed capture "$bin" --config "$run_dir/capture.yaml" capture --exit-after-snapshot
  log "captured in ${secs[capture]} s"
  # The count file is written only once step 2 has verified the journal.
  rm -rf "$cache"
  mkdir -p "$cache"
  mv "$build/journal" "$cache/journal"
  rm -rf "$build"
  build=""
  captured=1
fi
journal_bytes=$(bench_bytes "$cache/journal" 'segment-*.log')

# --- 2. a fresh copy of it, and its JSON lines (not timed) ----------------------------------
journal=$run_dir/journal
log "copying the journal ($journal_bytes bytes) to $journal"
bench_journal_copy "$cache" "$journal"
audit=$run_dir/audit
engine_config "$journal" "file://$audit" >"$run_dir/compact.yaml"
jsonl=$run_dir/events.jsonl
log "db-sync journal dump > $jsonl"
"$bin" --config "$run_dir/compact.yaml" journal dump >"$jsonl" ||
  { keep=1; die "db-sync journal dump failed (config $run_dir/compact.yaml)"; }
dumped=$(wc -l <"$jsonl")
if [[ $dumped != "$n" ]]; then
  keep=1
  if ((captured)); then
    die "capture journaled $dumped events, expected $n (run dir kept: $run_dir; capture stderr: $run_dir/capture.err)"
  fi
  die "the cached journal in $cache holds $dumped events, not $n; delete $cache and rerun"
fi
printf '%s\n' "$n" >"$cache/events"
jsonl_bytes=$(stat -c %s "$jsonl")

# --- 3. (ours) db-sync compact --once -------------------------------------------------------
if ((run_ours)); then
  label[ours]="db-sync compact"
  bench_timed ours "$bin" --config "$run_dir/compact.yaml" compact --once
  [[ -d $audit ]] || { keep=1; die "db-sync compact wrote nothing under $audit (logs kept in $run_dir)"; }
  mapfile -t files < <(cd "$audit" && find . -type f -name '*.parquet' -printf '%P\n' | sort)
  ((${#files[@]} > 0)) || { keep=1; die "db-sync compact wrote no .parquet file under $audit (logs kept in $run_dir)"; }
  for f in "${files[@]}"; do
    [[ $f =~ ^public\.$table/date=[0-9]{4}-[0-9]{2}-[0-9]{2}/[0-9]+-[0-9]+(\.[0-9a-f]+)?\.parquet$ ]] ||
      log "warning: $f does not follow <schema>.<table>/date=YYYY-MM-DD/<first>-<last>[.<journal>].parquet"
  done
  bytes[ours]=$(bench_bytes "$audit" '*.parquet')
  counts=$(duck "select count(*), count(distinct _cdc_seq) from read_parquet('$audit/**/*.parquet', hive_partitioning = false)") ||
    { keep=1; die "DuckDB could not read the Parquet files under $audit (run dir kept: $run_dir)"; }
  events[ours]=${counts%%,*}
  if [[ $counts != "$n,$n" ]]; then
    keep=1
    die "db-sync compact wrote ${events[ours]} rows with ${counts#*,} distinct _cdc_seq in ${#files[@]} file(s), expected $n of each (run dir kept: $run_dir)"
  fi
fi

# --- 4. (duckdb) the reference: JSON lines -> one zstd Parquet file -------------------------
if ((run_duckdb)); then
  label[duckdb]="duckdb json->parquet"
  ref=$run_dir/duckdb.parquet
  # Explicit columns (no sampling) with the audit files' types; keys not listed are ignored.
  cat >"$run_dir/duckdb.sql" <<EOF
SET threads = 2;
SET temp_directory = '$run_dir/duckdb.tmp';
COPY (
  SELECT "after".id AS id, "after".qty AS qty, "after".name AS name, "after".price AS price,
         "after".created_at AS created_at, "after".active AS active, "after".note AS note,
         op AS _cdc_op, seq AS _cdc_seq, ts AS _cdc_ts, "position" AS _cdc_position,
         tx AS _cdc_tx, snapshot AS _cdc_snapshot
  FROM read_json('$jsonl', format = 'newline_delimited', columns = {
    seq: 'BIGINT', op: 'VARCHAR', "position": 'VARCHAR', ts: 'TIMESTAMPTZ', tx: 'VARCHAR',
    snapshot: 'BOOLEAN',
    "after": 'STRUCT(id BIGINT, qty INTEGER, name VARCHAR, price DECIMAL(12,2),
                     created_at TIMESTAMPTZ, active BOOLEAN, note VARCHAR)'})
) TO '$ref' (FORMAT parquet, COMPRESSION zstd);
EOF
  bench_timed duckdb "$py" -c 'import duckdb, sys; duckdb.connect().execute(open(sys.argv[1]).read())' "$run_dir/duckdb.sql"
  bytes[duckdb]=$(stat -c %s "$ref")
  events[duckdb]=$(duck "select count(*) from read_parquet('$ref')")
  [[ ${events[duckdb]} == "$n" ]] ||
    { keep=1; die "DuckDB wrote ${events[duckdb]} rows, expected $n (run dir kept: $run_dir)"; }
fi

# --- 5. report ------------------------------------------------------------------------------
keys=()
((run_ours)) && keys+=(ours)
((run_duckdb)) && keys+=(duckdb)
echo
echo "compaction benchmark: $n snapshot events of bench.public.$table (7 columns) -> zstd Parquet"
echo "host: $(bench_host); DuckDB $("$py" -c 'import duckdb; print(duckdb.__version__)') (Python); whole-process wall time (start to exit)"
echo
bench_results events "26 10 9 11 13 14" "${keys[@]}"
echo
if ((run_ours && run_duckdb)); then
  echo "events/s ratio ours/duckdb = $(bench_ratio "${secs[duckdb]}" "${secs[ours]}")"
  echo "bytes ratio ours/duckdb = $(bench_ratio "${bytes[ours]}" "${bytes[duckdb]}")"
fi
awk -v j="$journal_bytes" -v s="$jsonl_bytes" -v n="$n" 'BEGIN {
  printf "input: journal %d bytes (%.1f bytes/event); JSON lines %d bytes (%.1f bytes/event)\n", j, j / n, s, s / n
}'
((run_ours)) && echo "ours wrote ${#files[@]} file(s), e.g. ${files[0]}"
echo
bench_commands "$invocation" "${keys[@]}"
if ((run_duckdb)); then
  echo "SQL of (duckdb), duckdb.sql:"
  sed 's/^/  /' "$run_dir/duckdb.sql"
fi
