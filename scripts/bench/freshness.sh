#!/usr/bin/env bash
# Freshness benchmark: how long after its commit a source row is visible in the target and
# in an audit file when `db-sync run` compacts on a short cron schedule.
#   - bench.public.bench_fresh (id bigint primary key, committed_at timestamptz, payload text)
#     is created afresh, and an empty MariaDB database bench_fresh as the target;
#   - `db-sync run` starts in the background with one job, compact on "*/S * * * * *"
#     (every S seconds), a file:// audit directory and that target;
#   - once capture streams and a warm-up row (id 0) has reached the target (so db-sync has
#     created the table), scripts/bench/freshness.py commits BENCH_RATE transactions a
#     second for BENCH_SECONDS, each inserting BENCH_ROWS_PER_COMMIT rows, and notes when
#     each COMMIT returned; meanwhile it polls the target table and the audit directory
#     (new Parquet files read with DuckDB) every BENCH_POLL_MS and notes when each id is
#     first seen there. One clock (this host's) throughout;
#   - it waits until every row is in both places (at most BENCH_WAIT_SECONDS), then stops
#     the daemon with SIGTERM, which must exit 0.
# Prints rows, p50 / p99 / max of commit -> visible in the target and commit -> in an audit
# file, the target "p99 <= schedule + 10 s" with the ratio p99 / (schedule + 10 s) as PASS or
# MISS, the daemon's CPU time and peak RSS, and the command line. Exits 1 when a row never
# arrived or the daemon did not exit 0 on SIGTERM.
#
# Usage: scripts/bench/freshness.sh
#   BENCH_SECONDS (180)            how long the stream of commits lasts
#   BENCH_RATE (10)                commits per second
#   BENCH_ROWS_PER_COMMIT (1)      rows each commit inserts
#   BENCH_SCHEDULE_SECONDS (5)     the compact job's period; must divide 60
#   BENCH_POLL_MS (150)            how often the target and the audit directory are read
#   BENCH_WAIT_SECONDS (120)       how long to wait after the stream for the last rows
#   BENCH_KEEP=1                   keep the run dir (config, journal, audit files, logs,
#                                  rows.csv with each row's times) and the target database
#   DB_SYNC_BIN=PATH               a prebuilt db-sync to run instead of the release build
#                                  (set-up then skips cargo)
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=$(bench_count BENCH_SECONDS 180)
rate=$(bench_count BENCH_RATE 10)
per_commit=$(bench_count BENCH_ROWS_PER_COMMIT 1)
schedule=$(bench_count BENCH_SCHEDULE_SECONDS 5)
poll_ms=$(bench_count BENCH_POLL_MS 150)
wait_secs=$(bench_count BENCH_WAIT_SECONDS 120)
# "*/7" would fire at second 56 and again at 0: uneven periods.
((schedule < 60 && 60 % schedule == 0)) ||
  die "BENCH_SCHEDULE_SECONDS must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30), got $schedule"
table=bench_fresh
mydb=bench_fresh
budget=$((schedule + 10)) # the target: p99 <= schedule + 10 s

bench_setup pg
"$ROOT/scripts/services.sh" start mariadb
command -v mariadb >/dev/null || die "the mariadb client is missing: run scripts/setup.sh"
py=$VENV/bin/python
"$py" -c 'import duckdb, psycopg, pymysql' 2>/dev/null ||
  die "$VENV lacks duckdb, psycopg or pymysql: run scripts/setup.sh"
my() { bench_mariadb "$@"; }

cd "$ROOT"
bench_run_dir fresh-run
slot=bench_fresh_$run_id # replication slot and publication, dropped on exit
pid=""                   # the db-sync run daemon while it runs

# stop_daemon SIGNAL SECONDS — send SIGNAL to the daemon and wait up to SECONDS for it to
# exit; sets `daemon_rc` (its exit status) or returns 1 when it is still running.
stop_daemon() {
  local i
  kill -"$1" "$pid" 2>/dev/null || true
  for ((i = 0; i < $2 * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      daemon_rc=0
      wait "$pid" || daemon_rc=$?
      pid=""
      return 0
    fi
    sleep 0.1
  done
  return 1
}

cleanup() {
  if [[ -n $pid ]]; then
    log "stopping db-sync run (pid $pid)"
    stop_daemon TERM 30 || stop_daemon KILL 5 || log "warning: db-sync run (pid $pid) did not exit"
  fi
  drop_slot_and_publication bench "$slot"
  bench_remove_run_dir "and the MariaDB database $mydb"
  if [[ $keep != 1 ]]; then
    my -e "DROP DATABASE IF EXISTS $mydb" || log "warning: could not drop the MariaDB database $mydb"
  fi
}
trap cleanup EXIT

# --- 1. the source table, the target database, the config and the job -------------------
bench_db
psql_db bench -c "drop table if exists public.$table" \
  -c "create table public.$table (id bigint primary key, committed_at timestamptz not null, payload text)"
my -e "DROP DATABASE IF EXISTS $mydb; CREATE DATABASE $mydb CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
mkdir -p "$run_dir/jobs"
cat >"$run_dir/jobs/compact.yaml" <<EOF
name: compact
schedule: "*/$schedule * * * * *"
kind: compact
EOF
{
  echo "name: bench_fresh"
  bench_source "$table" "$slot" "$run_dir/capture" topic.prefix=bench publication.autocreate.mode=filtered
  bench_engine
  cat <<EOF
journal:
  dir: $run_dir/journal
audit:
  url: file://$run_dir/audit
target:
  url: mysql://root@127.0.0.1:$MYSQL_PORT/$mydb
jobs_dir: $run_dir/jobs
EOF
} >"$run_dir/config.yaml"

# --- 2. the daemon, streaming, with the target table created ------------------------------
log "starting db-sync run (compact every $schedule s); log in $run_dir/run.err"
"$bin" --config "$run_dir/config.yaml" run >"$run_dir/run.out" 2>"$run_dir/run.err" &
pid=$!

# await WHAT SECONDS CMD... — poll CMD every 0.2 s until it succeeds; dies (run dir kept)
# when the daemon exits or SECONDS pass.
await() {
  local what=$1 limit=$2 t0=$SECONDS
  shift 2
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      daemon_rc=0
      wait "$pid" || daemon_rc=$?
      pid=""
      keep=1
      tail -n 30 "$run_dir/run.err" >&2
      die "db-sync run exited with status $daemon_rc while waiting for $what (run dir kept: $run_dir)"
    fi
    if ((SECONDS - t0 > limit)); then
      keep=1
      tail -n 30 "$run_dir/run.err" >&2
      die "no $what after $limit s (run dir kept: $run_dir)"
    fi
    sleep 0.2
  done
}
slot_active() {
  [[ $(psql_db bench -Atc "select active from pg_replication_slots where slot_name = '$slot'" 2>/dev/null) == t ]]
}
warm_row_applied() {
  [[ $(my -N -e "SELECT COUNT(*) FROM $mydb.$table WHERE id = 0" 2>/dev/null) == 1 ]]
}
t_start=$(date +%s.%N)
await "streaming capture (active slot $slot)" 180 slot_active
t_stream=$(date +%s.%N)
psql_db bench -c "insert into public.$table values (0, clock_timestamp(), 'warm-up')"
t_warm=$(date +%s.%N)
await "warm-up row in $mydb.$table" $((schedule * 4 + 60)) warm_row_applied
t_warmed=$(date +%s.%N)
log "streaming after $(awk -v a="$t_start" -v b="$t_stream" 'BEGIN { printf "%.1f", b - a }') s; warm-up row applied after $(awk -v a="$t_warm" -v b="$t_warmed" 'BEGIN { printf "%.1f", b - a }') s"

# --- 3. the stream and the observers ------------------------------------------------------
log "committing $rate tx/s x $per_commit row(s) for $seconds s; polling every $poll_ms ms"
args=(--pg-port "$PG_PORT" --pg-password "$PG_SUPERPASS" --pg-db bench --table "$table"
  --my-port "$MYSQL_PORT" --my-db "$mydb" --audit "$run_dir/audit"
  --seconds "$seconds" --rate "$rate" --rows-per-commit "$per_commit" --poll-ms "$poll_ms"
  --wait-seconds "$wait_secs" --out-dir "$run_dir")
obs_rc=0
"$py" "$ROOT/scripts/bench/freshness.py" "${args[@]}" >"$run_dir/stats" || obs_rc=$?
((obs_rc == 0 || obs_rc == 3)) || { keep=1; die "scripts/bench/freshness.py failed with status $obs_rc (run dir kept: $run_dir)"; }
kill -0 "$pid" 2>/dev/null || {
  keep=1
  tail -n 30 "$run_dir/run.err" >&2
  die "db-sync run exited during the stream (run dir kept: $run_dir)"
}

# --- 4. SIGTERM -------------------------------------------------------------------------
# CPU time and peak RSS of the whole run (JVM included), read before it exits.
read -r utime stime < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
t_end=$(date +%s.%N)
daemon_secs=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.0f", b - a }')
cpu_secs=$(awk -v u="$utime" -v s="$stime" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (u + s) / hz }')
log "SIGTERM to db-sync run (pid $pid)"
t0=$(date +%s.%N)
term_note=""
if stop_daemon TERM 60; then
  term_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  term_note="exited $daemon_rc ${term_secs} s after SIGTERM"
else
  stop_daemon KILL 5 || true
  daemon_rc=timeout
  term_note="still running 60 s after SIGTERM; killed"
fi
runs=$(grep -c 'job done job=compact' "$run_dir/run.err" || true)
skipped=$(grep -c 'previous run is still going' "$run_dir/run.err" || true)

# --- 5. report --------------------------------------------------------------------------
val() { awk -v k="$1" '$1 == k { print $2 }' "$run_dir/stats"; }
rows=$(val rows)
echo
echo "freshness benchmark: db-sync run, compact every $schedule s (\"*/$schedule * * * * *\"), bench.public.$table -> MariaDB $(my -N -e 'SELECT VERSION()') + file:// audit"
echo "host: $(bench_host); load: $rate commits/s x $per_commit row(s) for $seconds s; observers poll every $poll_ms ms (times are late by up to that)"
echo
echo "rows $rows in $(val commits) commits over $(val stream_seconds) s; in target $(val in_target), in audit files $(val in_audit) ($(val audit_files) files, $(val audit_duplicates) rows in more than one); last rows arrived $(val drain_seconds) s after the stream"
printf '%-32s %8s %8s %8s %8s %8s\n' "seconds after commit" min p50 p99 max mean
for k in target audit; do
  [[ -n $(val "${k}_p50") ]] || continue
  printf '%-32s %8s %8s %8s %8s %8s\n' "row visible in the $k" "$(val "${k}_min")" "$(val "${k}_p50")" \
    "$(val "${k}_p99")" "$(val "${k}_max")" "$(val "${k}_mean")"
done
echo
fail=0
for k in target audit; do
  p99=$(val "${k}_p99")
  [[ -n $p99 ]] || continue
  awk -v p="$p99" -v b="$budget" -v k="$k" 'BEGIN {
    r = p / b
    printf "p99 commit -> %s = %.2f s; ratio p99 / (schedule + 10 s = %d s) = %.2f (target <= 1): %s\n", k, p, b, r, (r <= 1 ? "PASS" : "MISS")
  }'
done
if [[ $(val in_target) != "$rows" || $(val in_audit) != "$rows" ]]; then
  echo "MISS: $((rows - $(val in_target))) row(s) never reached the target and $((rows - $(val in_audit))) never an audit file within $wait_secs s"
  fail=1
fi
((rows > 0)) || fail=1
if [[ $(val audit_duplicates) != 0 || $(val unexpected_ids) != 0 ]]; then
  echo "MISS: $(val audit_duplicates) row(s) in more than one audit file, $(val unexpected_ids) id(s) seen that were never committed"
  fail=1
fi
echo "commit time noted by the client minus _cdc_ts (db-sync's source commit time), median: $(val commit_minus_cdc_ts_p50_ms) ms"
echo "db-sync run: $term_note; $runs compact runs, $skipped ticks skipped (previous run still going); $cpu_secs CPU s in $daemon_secs s, peak RSS $((hwm_kb / 1024)) MB"
if [[ $daemon_rc != 0 ]]; then
  echo "MISS: db-sync run did not exit 0 on SIGTERM ($term_note); its log: $run_dir/run.err"
  keep=1
  fail=1
fi
echo
echo "command: BENCH_SECONDS=$seconds BENCH_RATE=$rate BENCH_ROWS_PER_COMMIT=$per_commit BENCH_SCHEDULE_SECONDS=$schedule BENCH_POLL_MS=$poll_ms scripts/bench/freshness.sh"
echo "(daemon) $(printf '%q ' "$bin" --config "$run_dir/config.yaml" run)"
((fail == 0)) || { keep=1; exit 1; }
