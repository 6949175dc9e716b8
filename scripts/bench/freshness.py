"""Load and observers for scripts/bench/freshness.sh (run from the venv of scripts/setup.sh).

One process, three threads, one clock (time.time(), the host's wall clock, which the local
PostgreSQL, MariaDB and db-sync share):

  writer   commits --rate transactions a second for --seconds, each inserting
           --rows-per-commit rows with increasing ids from --first-id; a row's commit time
           is the moment its COMMIT returned. Commits follow a fixed timetable (the k-th at
           start + k / rate), so a slow commit does not shift the ones after it.
  target   every --poll-ms, reads the ids at or above the lowest one not yet seen from the
           target table (MariaDB, autocommit: each SELECT sees the latest committed state);
           an id's target time is the start of the first poll that returned it.
  audit    every --poll-ms, lists <audit>/<schema>.<table>/**/*.parquet and reads the ids
           (and _cdc_ts) of each file not read before with DuckDB; an id's audit time is the
           start of the listing that found its file. db-sync makes a file visible only when
           it is complete (rename into place), so a listed file is whole.

So each observed time is late by at most one poll interval. After the stream the observers
keep going until every committed id has been seen in both places, or --wait-seconds pass.

Output: --out-dir/rows.csv (id, commit, target and audit times in seconds since the epoch,
_cdc_ts, copies in audit files) and, on stdout, `key value` lines the shell script reads
(rows, commits, percentiles in seconds, ...). Progress goes to stderr every 10 s.
Exit status: 0 when every row was seen in both places, 3 when some were not, 1 on error.
"""

import argparse
import csv
import math
import os
import sys
import threading
import time

import duckdb
import psycopg
import pymysql


def log(msg):
    print(f"bench-freshness: {msg}", file=sys.stderr, flush=True)


class Shared:
    """What the threads share; one lock guards it all (a few hundred updates a second at most)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.commit = {}  # id -> commit time
        self.target = {}  # id -> first seen in the target
        self.audit = {}  # id -> first seen in an audit file
        self.audit_copies = {}  # id -> rows holding it across audit files
        self.cdc_ts = {}  # id -> _cdc_ts (source commit time that db-sync recorded), seconds
        self.files = 0
        self.commits = 0  # transactions the writer committed
        self.stream_secs = 0.0  # first commit due to the last one returned
        self.writer_done = threading.Event()
        self.stop = threading.Event()
        self.errors = []

    def unseen(self, seen):
        with self.lock:
            return len(self.commit) - sum(1 for i in self.commit if i in seen)


def writer(args, sh):
    conn = psycopg.connect(
        host="127.0.0.1", port=args.pg_port, user="postgres", password=args.pg_password,
        dbname=args.pg_db, application_name="bench-freshness",
    )
    table = f'"{args.schema}"."{args.table}"'
    payload = "x" * args.payload_bytes
    next_id = args.first_id
    start = time.time()
    k = 0
    try:
        while True:
            due = start + k / args.rate
            if due >= start + args.seconds:
                break
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            ids = list(range(next_id, next_id + args.rows_per_commit))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} (id, committed_at, payload) VALUES (%s, clock_timestamp(), %s)",
                    [(i, payload) for i in ids],
                )
            conn.commit()
            t = time.time()
            with sh.lock:
                for i in ids:
                    sh.commit[i] = t
            next_id += args.rows_per_commit
            k += 1
    finally:
        sh.commits, sh.stream_secs = k, time.time() - start
        conn.close()
        sh.writer_done.set()


def target_observer(args, sh):
    conn = None
    low = args.first_id  # every id below it has been seen
    query = f"SELECT id FROM `{args.my_db}`.`{args.table}` WHERE id >= %s"
    while not sh.stop.is_set():
        t = time.time()
        try:
            if conn is None:
                conn = pymysql.connect(host="127.0.0.1", port=args.my_port, user="root",
                                       password="", autocommit=True, connect_timeout=5)
            with conn.cursor() as cur:
                cur.execute(query, (low,))
                ids = [r[0] for r in cur.fetchall()]
            with sh.lock:
                for i in ids:
                    if i not in sh.target:
                        sh.target[i] = t
                while low in sh.target:
                    low += 1
        except pymysql.err.ProgrammingError as e:
            if e.args[0] != 1146:  # the table does not exist yet: db-sync creates it
                raise
        except pymysql.err.OperationalError as e:
            log(f"target poll failed, retrying: {e}")
            conn = None
        sh.stop.wait(max(0.0, t + args.poll_ms / 1000 - time.time()))


def audit_observer(args, sh):
    root = os.path.join(args.audit, f"{args.schema}.{args.table}")
    done = set()
    db = duckdb.connect()
    while not sh.stop.is_set():
        t = time.time()
        new = []
        for d, _, names in os.walk(root):
            new.extend(os.path.join(d, n) for n in names if n.endswith(".parquet"))
        new = sorted(p for p in new if p not in done)
        for p in new:
            rows = db.execute(
                "SELECT id, epoch_us(_cdc_ts) FROM read_parquet(?, hive_partitioning = false)", [p]
            ).fetchall()
            with sh.lock:
                for i, ts in rows:
                    if i < args.first_id:  # the shell script's warm-up row
                        continue
                    sh.audit_copies[i] = sh.audit_copies.get(i, 0) + 1
                    if i not in sh.audit:
                        sh.audit[i] = t
                        sh.cdc_ts[i] = ts / 1e6 if ts is not None else None
                sh.files += 1
            done.add(p)
        sh.stop.wait(max(0.0, t + args.poll_ms / 1000 - time.time()))


def run_thread(sh, fn, *a):
    def body():
        try:
            fn(*a)
        except Exception as e:  # reported by main, which stops the run
            sh.errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")
            sh.stop.set()

    th = threading.Thread(target=body, name=fn.__name__, daemon=True)
    th.start()
    return th


def pct(sorted_xs, p):
    """Nearest-rank percentile of a sorted list."""
    return sorted_xs[max(0, math.ceil(p / 100 * len(sorted_xs)) - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--pg-password", required=True)
    ap.add_argument("--pg-db", required=True)
    ap.add_argument("--schema", default="public")
    ap.add_argument("--table", required=True)
    ap.add_argument("--my-port", type=int, required=True)
    ap.add_argument("--my-db", required=True)
    ap.add_argument("--audit", required=True, help="the audit directory (file:// URL's path)")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, required=True, help="commits per second")
    ap.add_argument("--rows-per-commit", type=int, default=1)
    ap.add_argument("--payload-bytes", type=int, default=100)
    ap.add_argument("--first-id", type=int, default=1)
    ap.add_argument("--poll-ms", type=float, default=150)
    ap.add_argument("--wait-seconds", type=float, required=True)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()

    sh = Shared()
    observers = [run_thread(sh, target_observer, args, sh), run_thread(sh, audit_observer, args, sh)]
    run_thread(sh, writer, args, sh)

    last_report = time.time()
    stream_end = None
    drained = False
    while True:
        time.sleep(0.2)
        now = time.time()
        if sh.errors:
            break
        if stream_end is None and sh.writer_done.is_set():
            stream_end = now
            log(f"stream done: {len(sh.commit)} rows in {sh.commits} commits; "
                f"waiting up to {args.wait_seconds:.0f} s for them in the target and the audit files")
        if stream_end is not None and sh.unseen(sh.target) == 0 and sh.unseen(sh.audit) == 0:
            drained = True
            break
        if stream_end is not None and now - stream_end > args.wait_seconds:
            break
        if now - last_report >= 10:
            last_report = now
            with sh.lock:
                log(f"committed {len(sh.commit)}, in target {len(sh.target)}, "
                    f"in audit {len(sh.audit)} ({sh.files} files)")
    drain_secs = time.time() - stream_end if stream_end is not None else float("nan")
    sh.stop.set()
    for th in observers:
        th.join(timeout=10)
    if sh.errors:
        for e in sh.errors:
            log(f"error: {e}")
        return 1

    with sh.lock:
        ids = sorted(sh.commit)
        with open(os.path.join(args.out_dir, "rows.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "commit", "target", "audit", "cdc_ts", "audit_copies"])
            for i in ids:
                w.writerow([i, f"{sh.commit[i]:.6f}",
                            f"{sh.target[i]:.6f}" if i in sh.target else "",
                            f"{sh.audit[i]:.6f}" if i in sh.audit else "",
                            f"{sh.cdc_ts[i]:.6f}" if sh.cdc_ts.get(i) is not None else "",
                            sh.audit_copies.get(i, 0)])
        out = {
            "rows": len(ids),
            "commits": sh.commits,
            "stream_seconds": f"{sh.stream_secs:.3f}",
            "drain_seconds": f"{drain_secs:.3f}",
            "in_target": sum(1 for i in ids if i in sh.target),
            "in_audit": sum(1 for i in ids if i in sh.audit),
            "audit_files": sh.files,
            "audit_duplicates": sum(1 for i in ids if sh.audit_copies.get(i, 0) > 1),
            "unexpected_ids": len((set(sh.target) | set(sh.audit)) - set(ids)),
        }
        for name, seen in (("target", sh.target), ("audit", sh.audit)):
            lat = sorted(seen[i] - sh.commit[i] for i in ids if i in seen)
            if lat:
                out[f"{name}_min"] = f"{lat[0]:.3f}"
                out[f"{name}_p50"] = f"{pct(lat, 50):.3f}"
                out[f"{name}_p99"] = f"{pct(lat, 99):.3f}"
                out[f"{name}_max"] = f"{lat[-1]:.3f}"
                out[f"{name}_mean"] = f"{sum(lat) / len(lat):.3f}"
        # How far the commit time we took lies after the one db-sync recorded from the source:
        # a few ms when both clocks agree.
        skew = sorted(sh.commit[i] - sh.cdc_ts[i] for i in ids if sh.cdc_ts.get(i) is not None)
        if skew:
            out["commit_minus_cdc_ts_p50_ms"] = f"{pct(skew, 50) * 1000:.1f}"
    for k, v in out.items():
        print(k, v)
    return 0 if drained else 3


if __name__ == "__main__":
    sys.exit(main())
