#!/usr/bin/env bash
# Reads the audit files of one table as they are, the way a warehouse load would: DuckDB,
# pyarrow and Spark (local[2]), each with Hive partitions (date=...) and the schemas of all
# files merged by column name. The README's "Loading a warehouse" shows this output.
#
# Usage: scripts/warehouse-examples.sh [AUDIT_DIR] [TABLE]   (data/audit public.orders)
# Installs duckdb, pyarrow and pyspark into $DB_SYNC_CACHE/wh-venv on first use (~400 MB);
# Spark needs the JDK 17 that scripts/setup.sh installs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

audit=${1:-data/audit}
table=${2:-public.orders}
dir=$audit/$table
[[ -d $dir ]] || die "no audit files at $dir; run scripts/demo.sh (or db-sync compact --once) first"
venv=$CACHE_DIR/wh-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import duckdb, pyarrow, pyspark' 2>/dev/null; then
  log "installing duckdb, pyarrow and pyspark into $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed; run scripts/setup.sh (it installs python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check "duckdb==2.0.1" "pyarrow==26.0.1" "pyspark==4.3.0" ||
    die "pip could not install duckdb, pyarrow, pyspark into $venv; check PyPI access"
fi
use_java || die "no JDK >= 17 found (Spark needs one); run scripts/setup.sh"
export JAVA_HOME DIR=$dir

echo "--- DuckDB"
"$venv/bin/python" - <<'EOF'
import os, duckdb
print(duckdb.sql(f"""
SELECT date, _cdc_op, count(*) AS changes, max(_cdc_ts) AS last_commit
FROM read_parquet('{os.environ["DIR"]}/**/*.parquet', union_by_name = true, hive_partitioning = true)
GROUP BY ALL ORDER BY ALL"""))
EOF

echo "--- pyarrow"
"$venv/bin/python" - <<'EOF'
import os
import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
d = os.environ["DIR"]
found = ds.dataset(d, format="parquet", partitioning="hive")
# Columns added at the source appear in later files: merge every file's schema by name.
schema = pa.unify_schemas([pq.read_schema(f) for f in found.files] + [found.partitioning.schema])
table = ds.dataset(d, format="parquet", partitioning="hive", schema=schema).to_table()
print(table.num_rows, "rows; columns:", ", ".join(f"{f.name} {f.type}" for f in table.schema))
print(table.group_by("_cdc_op").aggregate([("_cdc_seq", "count")]).sort_by("_cdc_op").to_pylist())
EOF

echo "--- Spark"
"$venv/bin/python" - 2> >(grep -v -E 'WARN|log level|setLogLevel|^\s*$' >&2) <<'EOF'
import os
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[2]").config("spark.ui.showConsoleProgress", "false").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.option("mergeSchema", "true").parquet(os.environ["DIR"])
df.printSchema()
df.groupBy("date", "_cdc_op").count().orderBy("date", "_cdc_op").show()
spark.stop()
EOF
