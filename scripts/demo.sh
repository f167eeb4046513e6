#!/usr/bin/env bash
# A real migration on a throwaway local server, start to finish:
#   1. initdb a temporary cluster (wal_level=logical) on a free port;
#   2. create the seed table orders_flat with ROWS rows (some with large TOASTed details);
#   3. start pgbench writers (inserts, updates, region moves, deletes) and `pgrepart run --cutover manual`;
#   4. stop the writers, wait for zero lag, compare old and new table row by row;
#   5. `pgrepart cutover` while writers run again, and show the result;
#   6. stop and remove the cluster.
# Usage: scripts/demo.sh [MAJOR]   (default 15; 14 and 18 after scripts/fetch-pg.sh 14 18)
# Env: ROWS (default 200000), KEEP=1 keeps the cluster running at the end.
set -euo pipefail
MAJOR=${1:-15}
ROWS=${ROWS:-200000}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

find_bin() {
    local var="PGREPART_PG${MAJOR}_BIN"
    for d in "${!var:-}" "$REPO/.pg/$MAJOR/bin" "/usr/lib/postgresql/$MAJOR/bin"; do
        [ -n "$d" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
    done
    echo "no PostgreSQL $MAJOR binaries: run scripts/fetch-pg.sh $MAJOR (or set $var)" >&2
    exit 1
}
BIN=$(find_bin)
CLIENT_BIN=/usr/lib/postgresql/15/bin   # psql and pgbench work against every major
command -v psql >/dev/null || { [ -x "$CLIENT_BIN/psql" ] || { echo "psql is needed: apt-get install postgresql-client" >&2; exit 1; }; }
PSQL=$(command -v psql || echo "$CLIENT_BIN/psql")
PGBENCH=$( [ -x "$CLIENT_BIN/pgbench" ] && echo "$CLIENT_BIN/pgbench" || command -v pgbench)

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

echo "==> building pgrepart (release)"
cargo build --release --quiet
PGREPART=$REPO/target/release/pgrepart

DIR=$(mktemp -d /tmp/pgrepart-demo.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    [ -n "${RUN:-}" ] && kill "$RUN" 2>/dev/null || true
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
"$PSQL" -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE DATABASE shop"
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
bench() { "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres -f "$DIR/writes.sql" -c 3 -T "$1" shop 2>&1 | grep -E "tps|failed" || true; }

RUN_ARGS=(--source "$URL" --table orders_flat --partition-by "LIST (region)"
  --partition "orders_flat_us=FOR VALUES IN ('US')" --partition "orders_flat_eu=FOR VALUES IN ('EU')"
  --partition "orders_flat_asia=FOR VALUES IN ('ASIA')" --partition "orders_flat_default=DEFAULT")

echo "==> pgrepart plan"
"$PGREPART" plan "${RUN_ARGS[@]}"

echo "==> writers for 20 s while pgrepart copies and streams"
bench 20 > "$DIR/bench1" &
BENCH=$!
"$PGREPART" run "${RUN_ARGS[@]}" --cutover manual 2>"$DIR/run.log" &
RUN=$!
wait "$BENCH"; cat "$DIR/bench1"
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
bench 6 > "$DIR/bench2" &
BENCH=$!
sleep 1
"$PGREPART" cutover --source "$URL" --table orders_flat
wait "$RUN"
grep -h "now partitioned" "$DIR/run.log" || true
wait "$BENCH"; cat "$DIR/bench2"
P -c "SELECT 'orders_flat is now: ' || CASE relkind WHEN 'p' THEN 'partitioned' ELSE 'plain' END || ', rows: ' || (SELECT count(*) FROM orders_flat) FROM pg_class WHERE relname = 'orders_flat'"
P -c "SELECT 'slots left: ' || count(*) FROM pg_replication_slots"
echo "==> demo finished"
