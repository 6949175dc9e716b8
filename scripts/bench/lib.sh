# shellcheck shell=bash
# Helpers shared by the benchmarks, scripts/bench/*.sh. Source it after `set -euo pipefail`;
# it sources scripts/lib.sh (ROOT, CACHE_DIR, ports, log/die, psql_db, ...) and starts nothing.
#
#   bench_setup SERVICE                  set-up, services, a JDK, /usr/bin/time; sets `bin`
#   bench_table TABLE N [SQL]            bench.public.TABLE holding exactly N generated rows
#   bench_timed KEY CMD...               run CMD once under /usr/bin/time -v into $run_dir
#   drop_slot_and_publication DB NAME    drop a run's replication slot and publication

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

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

# bench_table TABLE N [SQL] — database bench with public.TABLE holding exactly N generated
# rows (SQL, default scripts/sql/bench_rows.sql); recreated only when the count differs.
# Returns 0 when it (re)filled the table, 1 when the table was already right.
bench_table() {
  local table=$1 n=$2 sql=${3:-$ROOT/scripts/sql/bench_rows.sql} have=none
  if [[ -z $(psql_db postgres -Atc "select 1 from pg_database where datname = 'bench'") ]]; then
    log "creating database bench"
    psql_db postgres -c "create database bench"
  fi
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
