#!/usr/bin/env bash
# Set up and run the main job on the embedded defaults: local PostgreSQL + MariaDB,
# `db-sync --config config/config.yaml run` in the background while a workload changes
# public.customers/orders, then SIGTERM (db-sync finishes its batch and exits 0), a look at
# the journal, and one compaction into Parquet audit files under data/audit and the MySQL
# target (the local MariaDB, database `target`).
#
# Usage: scripts/demo.sh
#   DEMO_SECONDS (20)      how long the workload runs
#   DEMO_DRAIN_SECONDS (3) pause after the workload so capture catches up
# db-sync's own output goes to data/demo.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=${DEMO_SECONDS:-20}
drain=${DEMO_DRAIN_SECONDS:-3}
[[ $seconds =~ ^[0-9]+$ ]] || die "DEMO_SECONDS must be a whole number of seconds, got '$seconds'"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/services.sh" start all
psql_shop -f "$ROOT/scripts/sql/shop.sql"

# config/config.yaml interpolates these; the local PostgreSQL wants a password over TCP.
export PG_PORT MYSQL_PORT
export PG_PASSWORD=${PG_PASSWORD:-$PG_SUPERPASS} MYSQL_PASSWORD=${MYSQL_PASSWORD:-syncpw}

bin=$CARGO_TARGET_DIR/release/db-sync
[[ -x $bin ]] || die "$bin is missing: run scripts/setup.sh without SETUP_SKIP_CARGO=1"
cd "$ROOT" # the config's relative paths (data/, debezium/lib, jobs/) start here
mkdir -p data
run_log=$ROOT/data/demo.log

log "starting db-sync run (output: data/demo.log)"
"$bin" --config config/config.yaml run >"$run_log" 2>&1 &
pid=$!
# Never leave db-sync behind, whatever stops this script.
trap 'kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null' EXIT

sleep 2
if ! kill -0 "$pid" 2>/dev/null; then
  tail -n 20 "$run_log" >&2
  die "db-sync run exited at start-up (output above, full log data/demo.log)"
fi

log "workload on shop for ${seconds}s"
psql_shop -v seconds="$seconds" -f "$ROOT/scripts/sql/workload.sql"
sleep "$drain"

log "stopping db-sync (SIGTERM)"
trap - EXIT
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
if ((rc != 0)); then
  tail -n 20 "$run_log" >&2
  die "db-sync run exited with status $rc after SIGTERM (log: data/demo.log)"
fi

dump=$(mktemp)
trap 'rm -f "$dump"' EXIT
"$bin" --config config/config.yaml journal dump >"$dump" ||
  die "db-sync journal dump failed (output above)"
echo "--- last 10 journal records"
tail -n 10 "$dump"
echo "--- journal records: $(wc -l <"$dump") (by op: $(grep -o '"op":"[a-z]"' "$dump" | sort | uniq -c | awk '{printf "%s%s=%s", sep, substr($2, 7, 1), $1; sep=" "}'))"

# Compaction: the journal into Parquet audit files under data/audit (audit.url).
echo "--- db-sync compact --once"
"$bin" --config config/config.yaml compact --once || die "db-sync compact failed (output above)"
echo "--- audit files"
(cd "$ROOT/data/audit" 2>/dev/null && find . -name '*.parquet' | sort | sed 's#^\./#data/audit/#' | tail -n 10)

# Apply: the same compaction merged the changes into the MySQL target (MariaDB, database
# `target`); its tables now match the source's.
echo "--- source (PostgreSQL shop) and target (MariaDB target) after the apply"
for t in customers orders; do
  printf '%-10s source %s rows (sum of ids %s), target %s rows (sum of ids %s)\n' "$t" \
    "$(psql_shop -Atc "select count(*) from $t")" "$(psql_shop -Atc "select coalesce(sum(id), 0) from $t")" \
    "$(mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -uroot -N -e "select count(*) from target.$t")" \
    "$(mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -uroot -N -e "select coalesce(sum(id), 0) from target.$t")"
done

# Query: DuckDB over the audit files; public.orders is the table's state at the last
# compaction, public.orders_changes every change.
echo "--- db-sync query \"select count(*), sum(id) from public.orders\""
"$bin" --config config/config.yaml query "select count(*) as orders, sum(id) as sum_of_ids from public.orders" ||
  die "db-sync query failed (output above)"
echo "--- db-sync query \"select _cdc_op, count(*) from public.orders_changes group by all\""
"$bin" --config config/config.yaml query "select _cdc_op, count(*) as changes from public.orders_changes group by all order by 1" ||
  die "db-sync query failed (output above)"
