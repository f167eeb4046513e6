#!/usr/bin/env bash
# Benchmark: a whole `pgrepart run` over keys of different kinds, on one throwaway PostgreSQL server.
#
#   1. initdb a temporary cluster on a free port (wal_level=logical, the settings of bench/run.sh);
#   2. build the seed's `orders_flat` (ROWS rows, 1% with a TOASTed `details`, indexes on
#      order_date and customer_id) four times, in four template databases, the same rows with
#      another primary key each:
#        dense      id bigint 1..ROWS
#        uuid       id uuid (md5 of the row number)
#        composite  (tenant_id int, id bigint), tenant_id = row number % 50
#        skewed     id bigint, 1% of the rows near 2^62 (the others 1..ROWS; not the rows with
#                   the large TOASTed details, so that only the keys are skewed)
#   3. for each, a whole `pgrepart run` (auto cutover, no load, --verify off) on a fresh copy,
#      LIST-partitioned by region, timed, REPEAT times in turns (dense, uuid, composite, skewed,
#      dense, ...), the median kept; while it runs, the oldest transaction holding back the
#      database's xmin horizon (`now() - xact_start` of the oldest backend with a backend_xmin,
#      from pg_stat_activity) is sampled every second; after it, the rows copied per range
#      (`pgrepart.ranges`);
#      Also, on each template, one range's read as the copy does it (the rows between two keys,
#      1/30 of the table in the key's order, by the plan the server picks): the pages it touches
#      (EXPLAIN (ANALYZE, BUFFERS)) against the heap's pages;
#   4. a long copy: the uuid table again with the copy held to COPY_RATE rows/s (so the copy lasts
#      ROWS / COPY_RATE seconds), the same samples;
#   5. routing under a backlog: the uuid and dense tables again, the run stopped (SIGSTOP) during
#      the copy while BACKLOG single-row UPDATEs are committed (pgbench), then let go (SIGCONT)
#      and timed to its end. A uuid key's changes are routed to their range by the server, in
#      batches; its log says how many keys in how many round trips;
#   6. the routing statement alone (pgbench, one client, on the uuid run's cut points): keys per
#      second with one key per round trip (how pgrepart routed before it batched) and with
#      4096 keys per round trip (the statement it runs now);
#   7. one table: each run's duration and its ratio to the dense run, the oldest xmin horizon seen,
#      the rows per range (max/min).
#
# Usage: bench/keys.sh               (ROWS=1000000, about 10 minutes)
#        ROWS=200000 bench/keys.sh   (a quick run)
# Env: ROWS, REPEAT (3), COPY_RATE (15000; 0 skips step 4), BACKLOG (50000; 0 skips step 5), JOBS (pgrepart
#      --jobs; default its own), MAJOR (15), PGREPART_BIN (a pgrepart binary to use instead of
#      building one), KEEP=1 keeps the cluster, OUT=FILE also writes the table to FILE.
set -euo pipefail
ROWS=${ROWS:-1000000}
COPY_RATE=${COPY_RATE:-15000}
BACKLOG=${BACKLOG:-50000}
REPEAT=${REPEAT:-3}
MAJOR=${MAJOR:-15}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
start_cluster pgrepart-keys

# template KIND: database tpl_KIND holding orders_flat with KIND's key (see the header).
template() {
    local kind=$1 id key extra=""
    case $kind in
        dense)     id="i::bigint"; key="id bigint" ;;
        uuid)      id="md5(i::text)::uuid"; key="id uuid" ;;
        composite) id="i::bigint"; key="id bigint"; extra="tenant_id int NOT NULL," ;;
        # Not the rows with the TOASTed details (i % 100 = 0): the skew is in the keys alone.
        skewed)    id="CASE WHEN i % 100 = 50 THEN (1::bigint << 62) + i ELSE i END"; key="id bigint" ;;
    esac
    local pk="PRIMARY KEY (id)" tenant="" tenant_col=""
    if [ "$kind" = composite ]; then pk="PRIMARY KEY (tenant_id, id)"; tenant="i % 50,"; tenant_col="tenant_id,"; fi
    P postgres -c "CREATE DATABASE tpl_$kind"
    P "tpl_$kind" <<SQL
CREATE TABLE orders_flat (
    $extra $key NOT NULL, order_date TIMESTAMP NOT NULL, customer_id INT NOT NULL,
    region TEXT NOT NULL, amount NUMERIC(10,2), details TEXT, $pk);
INSERT INTO orders_flat ($tenant_col id, order_date, customer_id, region, amount, details)
SELECT $tenant $id, timestamp '2024-01-01' + i * interval '1 minute', i % 5000, (ARRAY['US','EU','ASIA','LATAM'])[1 + i % 4],
       CASE WHEN i % 50 = 0 THEN NULL ELSE (i % 100000) / 100.0 END,
       CASE WHEN i % 100 = 0 THEN (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 300) j)
            ELSE 'order ' || i END
FROM generate_series(1, $ROWS) i;
CREATE INDEX ON orders_flat (order_date);
CREATE INDEX ON orders_flat (customer_id);
VACUUM ANALYZE orders_flat;
SQL
}

log "building the four tables (template databases)"
t0=$(now)
for k in dense uuid composite skewed; do template "$k"; done
TABLE_MB=$(P tpl_dense -c "SELECT pg_total_relation_size('orders_flat') / 1048576")
log "built in $(elapsed "$t0" "$(now)") s: orders_flat ${TABLE_MB} MB with indexes (dense)"
P postgres -c CHECKPOINT

# range_pages KIND: "TOUCHED HEAP_PAGES" for one range of 1/30 of KIND's rows, in the middle of the key.
range_pages() {
    local cols="id" lo hi
    [ "$1" = composite ] && cols="tenant_id, id"
    lo=$(P "tpl_$1" -c "SELECT ($cols) FROM orders_flat ORDER BY $cols OFFSET $(( ROWS / 2 )) LIMIT 1")
    hi=$(P "tpl_$1" -c "SELECT ($cols) FROM orders_flat ORDER BY $cols OFFSET $(( ROWS / 2 + ROWS / 30 )) LIMIT 1")
    local cast="::uuid"; [ "$1" = uuid ] || cast=""
    local where="id >= '$lo'$cast AND id < '$hi'$cast"
    [ "$1" = composite ] && where="(tenant_id, id) >= ($(echo "$lo" | tr -d '()')) AND (tenant_id, id) < ($(echo "$hi" | tr -d '()'))"
    P "tpl_$1" -c "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM orders_flat WHERE $where" \
        | python3 -c 'import json, sys; p = json.load(sys.stdin)[0]["Plan"]; print(p.get("Shared Hit Blocks", 0) + p.get("Shared Read Blocks", 0))'
}
declare -A PAGES
HEAP_PAGES=$(P tpl_dense -c "SELECT pg_relation_size('orders_flat') / current_setting('block_size')::int")
for k in dense uuid composite skewed; do
    PAGES[$k]=$(range_pages "$k")
    log "$k: one range of 1/30 of the rows touches ${PAGES[$k]} pages (the dense heap has $HEAP_PAGES)"
done

autovacuum_idle() { [ "$(P postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ]; }
fresh() { # fresh DB KIND
    P postgres -c "CREATE DATABASE $1 TEMPLATE tpl_$2 STRATEGY FILE_COPY"
    P "$1" -c "SELECT count(*), sum(length(details)) FROM orders_flat" >/dev/null
    P "$1" -c CHECKPOINT
    sync
    wait_until 600 "autovacuum to finish" autovacuum_idle
}
drop_db() { P postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }

# The oldest transaction holding back DB's xmin horizon, in seconds (0 when none).
XMIN_SQL="SELECT coalesce(round(extract(epoch FROM max(now() - xact_start))::numeric, 1), 0)
          FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid() AND datname = \$1"
# sample_xmin DB FILE: one line a second into FILE until killed.
sample_xmin() {
    while :; do
        "$PSQL" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres postgres \
            -c "PREPARE q(name) AS $XMIN_SQL" -c "EXECUTE q('$1')" >>"$2" 2>/dev/null || true
        sleep 1
    done
}
max_of() { sort -g "$1" | tail -1; }

RUN_ARGS=(--table orders_flat --partition-by "LIST (region)"
  --partition "orders_flat_us=FOR VALUES IN ('US')" --partition "orders_flat_eu=FOR VALUES IN ('EU')"
  --partition "orders_flat_asia=FOR VALUES IN ('ASIA')" --partition "orders_flat_default=DEFAULT"
  --cutover auto --verify off)
[ -n "${JOBS:-}" ] && RUN_ARGS+=(--jobs "$JOBS")

# "COPY INDEX": seconds between the log's "copying" and "copy finished" lines, and from there to
# "copy and indexes done" (the primary key and the secondary indexes built after the copy).
phase_seconds() {
    python3 - "$1" <<'PY'
import re, sys, datetime
t = {}
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\S+Z)\s+INFO\s+(copying|copy finished|copy and indexes done)\b", line)
    if m:
        t.setdefault(m.group(2), datetime.datetime.fromisoformat(m.group(1)[:26] + "+00:00"))
def span(a, b):
    return f"{(t[b] - t[a]).total_seconds():.1f}" if a in t and b in t else "-"
print(span("copying", "copy finished"), span("copy finished", "copy and indexes done"))
PY
}

# run_keys NAME KIND [args...]: a whole run on a fresh copy of KIND's table. Sets T_RUN, T_COPY,
# XMIN_MAX, RANGES (count), RANGE_MIN, RANGE_MAX, and checks the row count.
run_keys() {
    local name=$1 kind=$2; shift 2
    local db="run_$name"
    fresh "$db" "$kind"
    : >"$DIR/$name.xmin"
    sample_xmin "$db" "$DIR/$name.xmin" & local sampler=$!
    PIDS+=("$sampler")
    local t0; t0=$(now)
    "$PGREPART" run --source "$(url "$db")" "${RUN_ARGS[@]}" "$@" >"$DIR/$name.out" 2>"$DIR/$name.log" \
        || { cat "$DIR/$name.log" "$DIR/$name.out" >&2; exit 1; }
    T_RUN=$(elapsed "$t0" "$(now)")
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    read -r T_COPY T_INDEX < <(phase_seconds "$DIR/$name.log")
    XMIN_MAX=$(max_of "$DIR/$name.xmin")
    P "$db" -c "SELECT array_to_string(lo_text, ',') FROM pgrepart.ranges WHERE lo_text IS NOT NULL ORDER BY range_no" >"$DIR/$name.cuts"
    read -r RANGES RANGE_MIN RANGE_MAX < <(P "$db" -F ' ' -c "SELECT count(*), min(rows_copied), max(rows_copied) FROM pgrepart.ranges")
    local new old
    new=$(P "$db" -c "SELECT count(*) FROM orders_flat")
    old=$(P "$db" -c "SELECT count(*) FROM orders_flat_old")
    [ "$new" = "$old" ] && [ "$new" = "$ROWS" ] || { echo "$name: $new rows in the new table, $old in the old one" >&2; exit 1; }
    drop_db "$db"
    log "$name: run ${T_RUN} s (copy ${T_COPY} s, indexes ${T_INDEX} s), $RANGES ranges of $RANGE_MIN to $RANGE_MAX rows, oldest xmin ${XMIN_MAX} s"
}

# The median of a list of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A RUNS COPIES INDEXES XMIN NR RMIN RMAX RUN COPY INDEX
for i in $(seq 1 "$REPEAT"); do
    for k in dense uuid composite skewed; do
        log "run $i of $REPEAT: $k key"
        run_keys "$k" "$k"
        RUNS[$k]+=" $T_RUN"; COPIES[$k]+=" $T_COPY"; INDEXES[$k]+=" $T_INDEX"
        # The oldest xmin over every repeat; the ranges of the last (each run samples anew).
        XMIN[$k]=$(printf '%s\n' "$XMIN_MAX" "${XMIN[$k]:-0}" | sort -g | tail -1)
        NR[$k]=$RANGES; RMIN[$k]=$RANGE_MIN; RMAX[$k]=$RANGE_MAX
    done
done
for k in dense uuid composite skewed; do
    # shellcheck disable=SC2086
    RUN[$k]=$(median ${RUNS[$k]}); COPY[$k]=$(median ${COPIES[$k]}); INDEX[$k]=$(median ${INDEXES[$k]})
    log "$k: runs${RUNS[$k]} s, median ${RUN[$k]} s"
done

LONG=""
if [ "$COPY_RATE" != 0 ]; then
    log "long copy: uuid key, the copy held to $COPY_RATE rows/s"
    run_keys uuid_long uuid --max-copy-rate "$COPY_RATE"
    LONG="| uuid, copy held to $COPY_RATE rows/s (one run) | ${T_RUN} s (copy ${T_COPY} s, indexes ${T_INDEX} s) | - | $XMIN_MAX s | $RANGES | $RANGE_MIN / $RANGE_MAX |"
fi

# backlog_run NAME KIND: the run stopped during the copy while BACKLOG UPDATEs commit, then let go;
# sets T_BACKLOG (from SIGCONT to its end) and ROUTED (its routing summary line, if any).
backlog_run() {
    local name=$1 kind=$2 db="backlog_$1"
    fresh "$db" "$kind"
    # The keys to update, fixed per kind: BACKLOG distinct rows.
    P "$db" -c "CREATE TABLE bench_keys AS SELECT row_number() OVER () AS n, id FROM (SELECT id FROM orders_flat ORDER BY md5(id::text) LIMIT $BACKLOG) s"
    cat >"$DIR/$name.sql" <<SQL
\set n random(1, $BACKLOG)
UPDATE orders_flat SET amount = coalesce(amount, 0) + 1 WHERE id = (SELECT id FROM bench_keys WHERE n = :n);
SQL
    P "$db" -c "CREATE INDEX ON bench_keys (n)"
    chmod a+r "$DIR/$name.sql"
    "$PGREPART" run --source "$(url "$db")" "${RUN_ARGS[@]}" --max-copy-rate 50000 --primary-key before-copy >"$DIR/$name.out" 2>"$DIR/$name.log" &
    local pid=$!
    PIDS+=("$pid")
    copying() { grep -q "INFO.*copying" "$DIR/$name.log" 2>/dev/null; }
    wait_until 120 "the copy to start" copying
    kill -STOP "$pid"
    PGOPTIONS="-c synchronous_commit=off" "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres --random-seed=42 \
        -c 4 -j 1 -t $(( BACKLOG / 4 )) -f "$DIR/$name.sql" "$db" >"$DIR/$name.pgbench" 2>&1
    local t0; t0=$(now)
    kill -CONT "$pid"
    wait "$pid" || { cat "$DIR/$name.log" >&2; exit 1; }
    T_BACKLOG=$(elapsed "$t0" "$(now)")
    ROUTED=$(sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/$name.log" | grep -o 'routed by the source.*' | head -1 || true)
    [ "$(P "$db" -c "SELECT count(*) FROM orders_flat")" = "$ROWS" ] || { echo "$name: row count differs" >&2; exit 1; }
    drop_db "$db"
    log "$name: ${T_BACKLOG} s after SIGCONT; $ROUTED"
}

BACKLOG_ROWS=""
if [ "$BACKLOG" != 0 ]; then
    log "routing under a backlog of $BACKLOG UPDATEs made during the copy"
    backlog_run dense_backlog dense; B_DENSE=$T_BACKLOG
    backlog_run uuid_backlog uuid; B_UUID=$T_BACKLOG; B_ROUTED=$ROUTED
    BACKLOG_ROWS="| backlog: dense key, $BACKLOG UPDATEs made while the run was stopped during the copy, from SIGCONT to the end | ${B_DENSE} s | 1.00 | | | |
| backlog: uuid key, the same (${B_ROUTED:-no routing line}) | ${B_UUID} s | $(ratio "$B_UUID" "$B_DENSE") | | | |"
fi

# The routing statement alone, on the uuid run's cut points, in a database of its own.
ROUTE_ROWS=""
if [ -s "$DIR/uuid.cuts" ]; then
    P postgres -c "CREATE DATABASE routing"
    VALUES=$(sed "s/.*/(('&')::uuid)/" "$DIR/uuid.cuts" | paste -sd, -)
    BATCH_VALUES=$(sed "s/.*/(('&')::uuid, NULL::bigint)/" "$DIR/uuid.cuts" | paste -sd, -)
    cat >"$DIR/route1.sql" <<SQL
\set n random(1, $ROWS)
SELECT count(*) FROM (VALUES $VALUES) AS b(k1) WHERE b.k1 <= (md5(:n::text))::uuid;
SQL
    cat >"$DIR/route4096.sql" <<SQL
SELECT count(*) FROM (SELECT s.ord, s.below FROM (SELECT m.ord, count(*) FILTER (WHERE m.ord IS NULL)
 OVER (ORDER BY m.k1, m.ord NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS below
 FROM (VALUES $BATCH_VALUES UNION ALL SELECT (u.k1)::uuid, u.ord
       FROM unnest(ARRAY(SELECT md5((random() * $ROWS)::int::text) FROM generate_series(1, 4096))) WITH ORDINALITY AS u(k1, ord))
 AS m(k1, ord)) AS s WHERE s.ord IS NOT NULL ORDER BY s.ord) AS r;
SQL
    chmod a+r "$DIR"/route*.sql
    tps() { "$PGBENCH" -n -M prepared -h 127.0.0.1 -p "$PORT" -U postgres -c 1 -j 1 -T "$2" -f "$1" routing 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1; }
    TPS1=$(tps "$DIR/route1.sql" 10)
    TPS4096=$(tps "$DIR/route4096.sql" 10)
    K1=$(awk -v t="$TPS1" 'BEGIN { printf "%.0f", t }')
    K4096=$(awk -v t="$TPS4096" 'BEGIN { printf "%.0f", t * 4096 }')
    log "routing: $K1 keys/s one at a time, $K4096 keys/s 4096 at a time ($(wc -l <"$DIR/uuid.cuts") cut points)"
    ROUTE_ROWS="| routing statement alone, one uuid key per round trip ($(wc -l <"$DIR/uuid.cuts") cut points) | $K1 keys/s | | | | |
| routing statement alone, 4096 uuid keys per round trip | $K4096 keys/s ($(ratio "$K4096" "$K1") ×) | | | | |"
fi

row() { # KIND LABEL
    echo "| $2 | ${RUN[$1]} s (copy ${COPY[$1]} s, indexes ${INDEX[$1]} s) | $(ratio "${RUN[$1]}" "${RUN[dense]}") | ${XMIN[$1]} s | ${NR[$1]} | ${RMIN[$1]} / ${RMAX[$1]} ($(ratio "${RMAX[$1]}" "${RMIN[$1]}")) | ${PAGES[$1]} |"
}
TABLE=$(cat <<EOF
PostgreSQL $MAJOR, $ROWS rows (orders_flat, ${TABLE_MB} MB with indexes), pgrepart $COMMIT, $(nproc) cores

| run (auto cutover, no load, --verify off) | duration (median of $REPEAT) | × dense | oldest xmin held | ranges | rows per range min / max (max/min) | pages one range of 1/30 touches (the dense heap: $HEAP_PAGES) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(row dense "bigint key, dense")
$(row uuid "uuid key")
$(row composite "(tenant_id int, id bigint) key")
$(row skewed "bigint key, 1% near 2^62")
${LONG}
${BACKLOG_ROWS}
${ROUTE_ROWS}
EOF
)
echo "$TABLE"
[ -n "${OUT:-}" ] && echo "$TABLE" >"$OUT"
exit 0
