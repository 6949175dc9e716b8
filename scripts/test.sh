#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs through .ci/run):
# the import-cycle check, setup.sh, the crate docs' links, local PostgreSQL + MariaDB, the shop
# schema, fmt + clippy, then the tests.
#
# Usage: scripts/test.sh [ARGS...]   ARGS go to `cargo nextest run` (or `cargo test`),
#                                    e.g. a test-name filter.
# Tests find the services through PG_PORT, MYSQL_PORT, PG_PASSWORD, MYSQL_PASSWORD,
# S3_PORT, S3_ENDPOINT (moto: bucket `audit`, keys test/test, region us-east-1),
# SERVICES_DIR and DB_SYNC_ROOT (the repo root; scripts/services.sh lives under it).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# First, as it takes a second: modules import one another in one direction only.
python3 "$ROOT/scripts/check_imports.py" "$ROOT/src" ||
  die "import cycles among the modules under src/ (above): break them, then rerun scripts/test.sh"
"$ROOT/scripts/setup.sh"
# Next, as early as it can run (src/build.rs needs the DuckDB library setup.sh fetches): the
# crate docs, where the design lives, with every intra-doc link resolved, so a reference can
# never point nowhere. Private items are documented, so links to them resolve and are checked
# like any other (hence private_intra_doc_links allowed). rustdoc checks the item a link names,
# not a `#heading` in it: keep headings that links name. --release: the profile of clippy
# --release below, so the two share most dependency builds.
doc_lints="-D rustdoc::broken_intra_doc_links -A rustdoc::private_intra_doc_links"
(cd "$ROOT" &&
  RUSTDOCFLAGS=$doc_lints cargo doc --release --no-deps --document-private-items --quiet) ||
  die "cargo doc found a broken intra-doc link (above): fix it, then rerun scripts/test.sh"
"$ROOT/scripts/services.sh" start all
psql_shop -f "$ROOT/scripts/sql/shop.sql"

export PG_PORT MYSQL_PORT S3_PORT S3_ENDPOINT=http://127.0.0.1:$S3_PORT SERVICES_DIR DB_SYNC_ROOT=$ROOT
export PG_PASSWORD=${PG_PASSWORD:-$PG_SUPERPASS} MYSQL_PASSWORD=${MYSQL_PASSWORD:-syncpw}

cd "$ROOT"
[[ -f Cargo.toml ]] || die "no Cargo.toml in $ROOT: nothing to test"
cargo fmt --all -- --check || die "cargo fmt --check failed: run 'cargo fmt --all'"
# --release: shares build-script and proc-macro builds with setup.sh's release build.
cargo clippy --release --all-targets -- -D warnings ||
  die "clippy reported problems (above): fix them, then rerun scripts/test.sh"
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --release --no-fail-fast "$@"
else
  exec cargo test --release --no-fail-fast "$@"
fi
