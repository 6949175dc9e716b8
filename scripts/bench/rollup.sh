#!/usr/bin/env bash
# Roll-up benchmark: one table's audit files of one day of one-minute compaction cycles
# (1,440 files, >= 1,000,000 changes), queried before and after `db-sync rollup`, each step a
# whole process timed from launch to exit:
#   (count-before) (count-after)   db-sync query "select count(*) from public.t_changes"
#   (state-before) (state-after)   db-sync query "select count(*), sum(n), max(id) from public.t"
#                                  (the state view: latest change per key)
#   (rollup)                       db-sync rollup: 1,440 files -> what audit.target_file_mb allows
# Prints seconds and peak RSS (/usr/bin/time -v) per run, the speed-up ratio of each query
# (before / after; target: the state view >= 5x) and the roll-up's peak RSS (target <= 512 MB),
# checks that every answer is the same before and after, and prints the command lines.
#
# Usage: scripts/bench/rollup.sh
#   BENCH_CYCLES (1440)    compaction cycles (= audit files) of the day 2026-01-01
#   BENCH_CHANGES (700)    changes per cycle: 30% inserts, 60% updates, 10% deletes
#   BENCH_KEEP=1           keep the run dir (audit copy, outputs, logs)
# The audit files are made once by real compaction cycles over a journal written through the
# journal API (tests/it/rollup.rs, rollup_bench_fixture: commit times must lie on a past date,
# which a live capture cannot give) and cached in ~/.cache/db-sync/bench/rollup-fixture-<C>x<N>/;
# delete that dir to make them again. Each run rolls up a fresh copy. No service is needed.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cycles=$(bench_count BENCH_CYCLES 1440)
changes=$(bench_count BENCH_CHANGES 700)
invocation="BENCH_CYCLES=$cycles BENCH_CHANGES=$changes scripts/bench/rollup.sh"

if [[ -n ${DB_SYNC_BIN:-} ]]; then
  SETUP_SKIP_CARGO=1 "$ROOT/scripts/setup.sh"
else
  "$ROOT/scripts/setup.sh"
fi
[[ -x /usr/bin/time ]] || need_apt time
bin=${DB_SYNC_BIN:-$CARGO_TARGET_DIR/release/db-sync}
[[ -x $bin ]] || die "$bin is missing: run scripts/setup.sh"
"$bin" rollup --help >/dev/null 2>&1 || die "$bin has no rollup command: build it with 'cargo build --release'"

cd "$ROOT"
fixture=$CACHE_DIR/bench/rollup-fixture-${cycles}x$changes
if [[ ! -f $fixture/fixture.done ]]; then
  log "making the fixture: $cycles compaction cycles of $changes changes into $fixture (once)"
  rm -rf "$fixture"
  mkdir -p "$fixture"
  BENCH_ROLLUP_DIR=$fixture BENCH_CYCLES=$cycles BENCH_CHANGES=$changes \
    cargo test --release --test it -- --ignored --exact rollup::rollup_bench_fixture >"$fixture.log" 2>&1 ||
    { tail -n 30 "$fixture.log" >&2; die "the fixture failed (log: $fixture.log)"; }
  [[ -f $fixture/fixture.done ]] || die "the fixture wrote no $fixture/fixture.done (log: $fixture.log)"
fi

bench_run_dir rollup-run
trap bench_remove_run_dir EXIT
cp -a "$fixture/audit" "$run_dir/audit"
cat >"$run_dir/config.yaml" <<EOF
name: bench
source:
  connector.class: io.debezium.connector.postgresql.PostgresConnector
journal:
  dir: $run_dir/journal
audit:
  url: file://$run_dir/audit
EOF

declare -A label secs rss cmdline files
count_sql="select count(*) as changes from public.t_changes"
state_sql="select count(*) as rows, sum(n) as sum_n, max(id) as max_id from public.t"
parquet_files() { find "$run_dir/audit" -name '*.parquet' | wc -l; }

files[before]=$(parquet_files)
label[count-before]="query: count(*) of the changes"
bench_timed count-before "$bin" --config "$run_dir/config.yaml" query --format csv "$count_sql"
label[state-before]="query: the state view"
bench_timed state-before "$bin" --config "$run_dir/config.yaml" query --format csv "$state_sql"
label[rollup]="db-sync rollup"
bench_timed rollup "$bin" --config "$run_dir/config.yaml" rollup
files[after]=$(parquet_files)
label[count-after]="query: count(*) of the changes"
bench_timed count-after "$bin" --config "$run_dir/config.yaml" query --format csv "$count_sql"
label[state-after]="query: the state view"
bench_timed state-after "$bin" --config "$run_dir/config.yaml" query --format csv "$state_sql"

n=$(sed -n 2p "$run_dir/count-before.out")
((n == cycles * changes)) || die "the audit files hold $n changes, expected $((cycles * changes))"
for q in count state; do
  cmp -s "$run_dir/$q-before.out" "$run_dir/$q-after.out" ||
    { keep=1; die "($q) answers differ before and after the roll-up: $(cat "$run_dir/$q-before.out") vs $(cat "$run_dir/$q-after.out")"; }
done

echo
echo "$n changes of one table in ${files[before]} audit files (one day, $cycles cycles); after the roll-up: ${files[after]} file(s), $(bench_bytes "$run_dir/audit" '*.parquet') bytes"
printf '%-44s %6s %9s %12s\n' name files seconds "peak RSS MB"
for k in count-before state-before rollup count-after state-after; do
  f=${files[before]}
  [[ $k == *-after ]] && f=${files[after]}
  printf '%-44s %6s %9s %12.0f\n' "($k) ${label[$k]}" "$f" "${secs[$k]}" "$(bench_mb "${rss[$k]}")"
done
echo
echo "speed-up count(*) of the changes: $(bench_ratio "${secs[count-before]}" "${secs[count-after]}")x"
echo "speed-up state view: $(bench_ratio "${secs[state-before]}" "${secs[state-after]}")x (target >= 5)"
echo "rollup peak RSS: $(bench_mb "${rss[rollup]}" | awk '{ printf "%.0f", $1 }') MB (target <= 512); $(cat "$run_dir/rollup.out")"
echo "same answers before and after: $(tr '\n' ' ' <"$run_dir/count-before.out")| $(tr '\n' ' ' <"$run_dir/state-before.out")"
bench_commands "$invocation" count-before state-before rollup count-after state-after
