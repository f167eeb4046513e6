#!/usr/bin/env bash
# Benchmark: pgrepart against the seed's backfill and native logical replication,
# measured side by side on one throwaway PostgreSQL server.
#
#   1. initdb a temporary cluster on a free port (wal_level=logical, bench settings);
#   2. build the seed dataset once in a template database: orders_flat with ROWS rows, ~1% of them
#      with a large TOASTed `details` (about 400 MB at 2,000,000 rows), plus the two secondary
#      indexes on order_date and customer_id; every scenario gets its own copy of it;
#   3. copy:  (a) the seed's INSERT INTO orders_list SELECT * FROM orders_flat into the seed's
#                 partitioned target (PK (id, region), 4 LIST partitions, both indexes);
#             (a2) the practical limit: two binary COPY streams into that target with its primary
#                 key only, then the secondary indexes; (a3) the same while a slot on the same
#                 database is decoded;
#             (b) native logical replication: a subscription in another database into the same
#                 target, timed until every pg_subscription_rel row is 'r';
#             (c) a whole `pgrepart run` (auto cutover, no load, --verify off): setup, copy,
#                 indexes, catch-up, cutover; (c2) the same at default settings, which adds the
#                 check of the whole table before the cutover;
#   4. apply: a backlog of BACKLOG_UPDATES single-row UPDATEs plus BACKLOG_INSERTS INSERTs and
#             BACKLOG_DELETES DELETEs (one statement per transaction, pgbench), made while the
#             consumer is held, then timed until a marker row written after it is visible on the
#             target (the consumer applies in stream order, so the marker is the last change):
#             pgrepart (`run --cutover manual`, SIGSTOP while the backlog is made, SIGCONT) and a
#             native subscription (REPLICA IDENTITY FULL on the source, disabled while the backlog
#             is made, then enabled);
#   5. workload: the slowdown of a pgbench workload on the source while a migration copies and
#             while it streams, and with nothing but a slot's decoding (see (e) below);
#   6. peak RSS of both pgrepart processes (/usr/bin/time -v) and the cutover lock time they print;
#   7. one table with the figures and the ratios; the server is stopped and removed.
#
# Usage: bench/run.sh            (ROWS=2000000, a few minutes)
#        ROWS=200000 bench/run.sh   (a quick run)
# Env: ROWS, BACKLOG_UPDATES (100000), BACKLOG_INSERTS (5000), BACKLOG_DELETES (5000),
#      WORKLOAD=0 skips (e), WORKLOAD_SECONDS (30) the length of each of its windows,
#      JOBS (pgrepart --jobs; default: its own default, the number of cores),
#      MAJOR (15), KEEP=1 keeps the cluster, OUT=FILE also writes the table to FILE.
#      SCENARIOS=tpcb runs only the TPC-B-like windows (bench/tpcb.sh: pgbench -b tpcb-like while
#      pgbench_accounts is partitioned; TPCB_SCALE (20), TPCB_CLIENTS (4), TPCB_ALONE_S (20),
#      TPCB_LIMIT (240), OLD_PGREPART=path adds the previous governor's binary, TPCB_OUT=FILE,
#      TPCB_LOGS=DIR keeps each migration's log and the client's output, TPCB_LOOPS ("open closed")
#      and TPCB_RUNS ("default max-impact-0 previous") choose the windows);
#      SCENARIOS=sysbench runs the same windows driven by sysbench oltp_read_write (SB_ROWS
#      (1000000) rows in sbtest1, partitioned by HASH (id); TPCB_CLIENTS threads);
#      SCENARIOS=rollback runs only the rollback window's figures (bench/rollback.sh: the forward
#      and the reverse apply of the same backlog, the cutover's and the revert's lock times).
#      SCENARIOS=all (the default) runs the TPC-B-like windows after the rest. PGREPART_BIN=path: that binary
#      rather than a fresh release build.
set -euo pipefail
SCENARIOS=${SCENARIOS:-all}
case "$SCENARIOS" in all|tpcb|sysbench|rollback) ;; *) echo "SCENARIOS is all, tpcb, sysbench or rollback" >&2; exit 2 ;; esac
ROWS=${ROWS:-2000000}
BACKLOG_UPDATES=${BACKLOG_UPDATES:-100000}
BACKLOG_INSERTS=${BACKLOG_INSERTS:-5000}
BACKLOG_DELETES=${BACKLOG_DELETES:-5000}
MAJOR=${MAJOR:-15}
CLIENTS=4
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
# pg_stat_statements is loaded (as on most production servers) so that the load governor can read
# the application's own statements; the TPC-B-like windows create it (STATEMENTS=0: neither).
PRELOAD=()
[ "${STATEMENTS:-1}" = 1 ] && PRELOAD=(-c shared_preload_libraries=pg_stat_statements)
start_cluster pgrepart-bench -c max_logical_replication_workers=8 -c max_worker_processes=16 "${PRELOAD[@]}"

SEED_TARGET_SQL() { # $1: table name
    cat <<SQL
CREATE TABLE $1 (
    id BIGINT NOT NULL, order_date TIMESTAMP NOT NULL, customer_id INT NOT NULL,
    region TEXT NOT NULL, amount NUMERIC(10,2), details TEXT,
    CONSTRAINT ${1}_pk PRIMARY KEY (id, region)
) PARTITION BY LIST (region);
CREATE TABLE ${1}_us PARTITION OF $1 FOR VALUES IN ('US');
CREATE TABLE ${1}_eu PARTITION OF $1 FOR VALUES IN ('EU');
CREATE TABLE ${1}_asia PARTITION OF $1 FOR VALUES IN ('ASIA');
CREATE TABLE ${1}_default PARTITION OF $1 DEFAULT;
CREATE INDEX ON $1 (order_date);
CREATE INDEX ON $1 (customer_id);
SQL
}

# No autovacuum worker at work anywhere in the cluster (one vacuuming an earlier scenario's 2,000,000
# fresh rows takes a core from the next timed step).
autovacuum_idle() { [ "$(P postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ]; }
drop_db() { P postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }

# SCENARIOS=tpcb or sysbench: only that client's windows (bench/tpcb.sh), on their own dataset.
if [ "$SCENARIOS" = tpcb ] || [ "$SCENARIOS" = sysbench ]; then
    WORKLOAD=$SCENARIOS
    . "$REPO/bench/tpcb.sh"
    exit 0
fi

log "building the dataset (template database)"
P postgres -c "CREATE DATABASE tpl"
t0=$(now)
P tpl <<SQL
CREATE TABLE orders_flat (
    id BIGSERIAL PRIMARY KEY, order_date TIMESTAMP NOT NULL, customer_id INT NOT NULL,
    region TEXT NOT NULL, amount NUMERIC(10,2), details TEXT);
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
SELECT timestamp '2024-01-01' + i * interval '1 minute', i % 5000, (ARRAY['US','EU','ASIA','LATAM'])[1 + i % 4],
       CASE WHEN i % 50 = 0 THEN NULL ELSE (i % 100000) / 100.0 END,
       CASE WHEN i % 100 = 0 THEN (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 300) j)
            ELSE 'order ' || i END
FROM generate_series(1, $ROWS) i;
CREATE INDEX ON orders_flat (order_date);
CREATE INDEX ON orders_flat (customer_id);
VACUUM ANALYZE orders_flat;
SQL
TABLE_MB=$(P tpl -c "SELECT pg_total_relation_size('orders_flat') / 1048576")
HEAP_MB=$(P tpl -c "SELECT pg_table_size('orders_flat') / 1048576")
log "dataset built in $(elapsed "$t0" "$(now)") s: orders_flat ${TABLE_MB} MB with indexes (${HEAP_MB} MB heap + TOAST)"
P tpl -c CHECKPOINT

# fresh DB: a new database holding a pristine copy of the dataset, read once to warm the OS cache.
fresh() {
    P postgres -c "CREATE DATABASE $1 TEMPLATE tpl STRATEGY FILE_COPY"
    P "$1" -c "SELECT count(*), sum(length(details)) FROM orders_flat" >/dev/null
    P "$1" -c CHECKPOINT
    # The WAL and files of earlier steps written out by the kernel now, not during the next one.
    sync
    wait_until 600 "autovacuum to finish" autovacuum_idle
}

# What `pgrepart run` is given in every scenario.
RUN_ARGS=(--table orders_flat --partition-by "LIST (region)"
  --partition "orders_flat_us=FOR VALUES IN ('US')" --partition "orders_flat_eu=FOR VALUES IN ('EU')"
  --partition "orders_flat_asia=FOR VALUES IN ('ASIA')" --partition "orders_flat_default=DEFAULT")
[ -n "${JOBS:-}" ] && RUN_ARGS+=(--jobs "$JOBS")

# The backlog of (d) and of the rollback scenario: single-row UPDATEs, INSERTs and DELETEs.
cat > "$DIR/upd.sql" <<SQL
\set id random(1, $ROWS)
UPDATE orders_flat SET amount = coalesce(amount, 0) + 1 WHERE id = :id;
SQL
cat > "$DIR/ins.sql" <<SQL
\set c random(1, 5000)
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
VALUES (now(), :c, (ARRAY['US','EU','ASIA','LATAM'])[1 + :c % 4], 1.50, 'new');
SQL
cat > "$DIR/del.sql" <<SQL
\set id random(1, $ROWS)
DELETE FROM orders_flat WHERE id = :id;
SQL
chmod a+r "$DIR"/*.sql
# backlog DB [MARKER [SEED]]: the same statements (same random seeds, SEED to SEED + 2, default 42)
# on the database's orders_flat, then a marker row (id MARKER, default -1) written last; prints the
# changes made (tuples updated/inserted/deleted).
backlog() {
    local db=$1 marker=${2:--1} seed=${3:-42}
    P "$db" -c "SELECT pg_stat_reset()" >/dev/null
    local per=$(( BACKLOG_UPDATES / CLIENTS )) i=$(( BACKLOG_INSERTS / CLIENTS )) d=$(( BACKLOG_DELETES / CLIENTS ))
    local t0; t0=$(now)
    # Only the making of the backlog skips the commit flush; the consumers run at default settings.
    export PGOPTIONS="-c synchronous_commit=off"
    "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres --random-seed=$seed -c $CLIENTS -j 1 -t $per -f "$DIR/upd.sql" "$db" >"$DIR/pgbench.$db.upd" 2>&1
    "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres --random-seed=$(( seed + 1 )) -c $CLIENTS -j 1 -t $i -f "$DIR/ins.sql" "$db" >"$DIR/pgbench.$db.ins" 2>&1
    "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres --random-seed=$(( seed + 2 )) -c $CLIENTS -j 1 -t $d -f "$DIR/del.sql" "$db" >"$DIR/pgbench.$db.del" 2>&1
    unset PGOPTIONS
    P "$db" -c "INSERT INTO orders_flat (id, order_date, customer_id, region, amount, details) VALUES ($marker, now(), 0, 'US', 0, 'bench marker')"
    log "backlog made in $(elapsed "$t0" "$(now)") s"
    # pgbench's sessions report their statistics as they exit: wait for them (printed counts only).
    # (summed over the partitions when orders_flat is partitioned: the rollback scenario's window)
    local stats="FROM pg_stat_user_tables WHERE relid = 'orders_flat'::regclass OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'orders_flat'::regclass)"
    # The marker's insert is counted once psql's session, which ran after every pgbench one, has
    # reported. (An UPDATE or DELETE of a row an earlier backlog deleted changes nothing.)
    stats_in() { [ "$(P "$db" -c "SELECT sum(n_tup_ins) > $BACKLOG_INSERTS $stats")" = t ]; }
    wait_until 30 "pgbench's statistics" stats_in
    P "$db" -c "SELECT sum(n_tup_upd) || ' updates, ' || sum(n_tup_ins) || ' inserts, ' || sum(n_tup_del) || ' deletes' $stats"
}
# marker_in DB TABLE [MARKER]: the marker row is in TABLE.
marker_in() { [ "$(P "$1" -c "SELECT count(*) FROM $2 WHERE id = ${3:--1}")" = 1 ]; }

# SCENARIOS=rollback: only the rollback window's figures (bench/rollback.sh), on this dataset.
if [ "$SCENARIOS" = rollback ]; then
    . "$REPO/bench/rollback.sh"
    exit 0
fi

#####################################################################################
# (a) the seed's backfill
log "(a) seed backfill: INSERT INTO orders_list SELECT * FROM orders_flat"
fresh seed_a
SEED_TARGET_SQL orders_list | P seed_a
t0=$(now)
P seed_a -c "INSERT INTO orders_list SELECT * FROM orders_flat"
T_SEED=$(elapsed "$t0" "$(now)")
log "(a) ${T_SEED} s"
drop_db seed_a

#####################################################################################
# (a2) the practical limit of a copy: two binary COPY streams (psql | psql, one per half of
# the key space) into the seed's target with its primary key only, then the two secondary indexes
# built (one session each); TOASTed values get lz4, as pgrepart's copy gives them by default. No
# ANALYZE, no slot. (a3) the same while a slot on the same database is decoded (pg_recvlogical
# into /dev/null): a same-database consumer's walsender decodes the copy's own inserts too, so
# this is the floor for pgrepart's copy into the source database.
RECVLOGICAL=$( [ -x "$CLIENT_BIN/pg_recvlogical" ] && echo "$CLIENT_BIN/pg_recvlogical" || command -v pg_recvlogical)
# start_decoding DB: a publication of orders_flat and a slot (both named decodeonly) on DB, decoded
# by pg_recvlogical into /dev/null (what any logical consumer costs before it applies anything);
# returns once the slot is active. stop_decoding DB: stops it and drops the slot.
decoding() { [ "$(P "$1" -c "SELECT active FROM pg_replication_slots WHERE slot_name = 'decodeonly'")" = t ]; }
start_decoding() {
    P "$1" -c "CREATE PUBLICATION decodeonly FOR TABLE orders_flat"
    P "$1" -c "SELECT pg_create_logical_replication_slot('decodeonly', 'pgoutput')" >/dev/null
    "$RECVLOGICAL" -h 127.0.0.1 -p "$PORT" -U postgres -d "$1" -S decodeonly --start -o proto_version=1 \
        -o publication_names=decodeonly -f /dev/null &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    wait_until 30 "pg_recvlogical to start" decoding "$1"
}
stop_decoding() {
    kill "$RECV_PID"; wait "$RECV_PID" 2>/dev/null || true
    wait_until 30 "pg_recvlogical to stop" eval "! decoding $1"
    P "$1" -c "SELECT pg_drop_replication_slot('decodeonly')" >/dev/null
}
# raw_copy DB: sets T_RAW_COPY, T_RAW_INDEX and their sum T_RAW_TOTAL (s).
raw_copy() {
    local db=$1 mid p1 p2 t0 t1
    SEED_TARGET_SQL orders_list | grep -v '^CREATE INDEX' | P "$db"
    mid=$(P "$db" -c "SELECT (min(id) + max(id)) / 2 FROM orders_flat")
    t0=$(now)
    P "$db" -c "COPY (SELECT * FROM orders_flat WHERE id <= $mid) TO STDOUT (FORMAT binary)" \
        | P "$db" -c "SET default_toast_compression = lz4" -c "COPY orders_list FROM STDIN (FORMAT binary)" &
    p1=$!
    P "$db" -c "COPY (SELECT * FROM orders_flat WHERE id > $mid) TO STDOUT (FORMAT binary)" \
        | P "$db" -c "SET default_toast_compression = lz4" -c "COPY orders_list FROM STDIN (FORMAT binary)" &
    p2=$!
    wait "$p1" && wait "$p2"
    t1=$(now)
    P "$db" -c "CREATE INDEX ON orders_list (order_date)" & p1=$!
    P "$db" -c "CREATE INDEX ON orders_list (customer_id)" & p2=$!
    wait "$p1" && wait "$p2"
    T_RAW_COPY=$(elapsed "$t0" "$t1"); T_RAW_INDEX=$(elapsed "$t1" "$(now)")
    T_RAW_TOTAL=$(awk -v a="$T_RAW_COPY" -v b="$T_RAW_INDEX" 'BEGIN { printf "%.2f", a + b }')
    [ "$(P "$db" -c "SELECT count(*) FROM orders_list")" = "$ROWS" ] || { echo "raw copy: row count differs" >&2; exit 1; }
}
log "(a2) practical limit: two binary COPY streams, then the secondary indexes"
fresh raw_a
raw_copy raw_a
T_RAW=$T_RAW_TOTAL
log "(a2) ${T_RAW} s (copy ${T_RAW_COPY} s, indexes ${T_RAW_INDEX} s)"
drop_db raw_a

log "(a3) the same while a slot on the same database is decoded"
fresh raw_s
start_decoding raw_s
raw_copy raw_s
T_RAW_SLOT=$T_RAW_TOTAL
stop_decoding raw_s
log "(a3) ${T_RAW_SLOT} s (copy ${T_RAW_COPY} s, indexes ${T_RAW_INDEX} s)"
drop_db raw_s

#####################################################################################
# (b) native logical replication, initial sync
log "(b) native logical replication: subscription in another database, until all tables are 'r'"
fresh nat_src
P postgres -c "CREATE DATABASE nat_dst"
SEED_TARGET_SQL orders_flat | P nat_dst
P nat_src -c "CREATE PUBLICATION natpub FOR TABLE orders_flat"
# Same cluster: the slot must not be created by CREATE SUBSCRIPTION itself.
P nat_src -c "SELECT pg_create_logical_replication_slot('natsub', 'pgoutput')" >/dev/null
t0=$(now)
P nat_dst -c "CREATE SUBSCRIPTION natsub CONNECTION 'host=127.0.0.1 port=$PORT user=postgres dbname=nat_src' PUBLICATION natpub WITH (create_slot = false, slot_name = 'natsub')"
sub_ready() { [ "$(P nat_dst -c "SELECT count(*) FILTER (WHERE srsubstate <> 'r') || '/' || count(*) FROM pg_subscription_rel")" = "0/1" ]; }
wait_until 3600 "the native initial sync" sub_ready
T_NATIVE_COPY=$(elapsed "$t0" "$(now)")
log "(b) ${T_NATIVE_COPY} s"
P nat_dst -c "ALTER SUBSCRIPTION natsub DISABLE"
# Its 2,000,000 new rows vacuumed and analyzed now, not by autovacuum during the next steps.
P nat_dst -c "VACUUM ANALYZE"

#####################################################################################
# (c) a whole pgrepart run

# run_c DB OUT [args...]: a whole `pgrepart run` on a fresh DB; sets T_C, RSS_C_MB, LOCK_C_MS and
# leaves its log in $DIR/OUT.log.
run_c() {
    local db=$1 out=$2; shift 2
    fresh "$db"
    local t0; t0=$(now)
    /usr/bin/time -v -o "$DIR/$out.time" "$PGREPART" run --source "$(url "$db")" "${RUN_ARGS[@]}" "$@" \
        >"$DIR/$out.out" 2>"$DIR/$out.log" || { cat "$DIR/$out.log" "$DIR/$out.out" >&2; exit 1; }
    T_C=$(elapsed "$t0" "$(now)")
    cat "$DIR/$out.out" >&2
    RSS_C_MB=$(awk -F: '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$DIR/$out.time")
    LOCK_C_MS=$(sed -n 's/.*lock held \([0-9]*\) ms.*/\1/p' "$DIR/$out.out")
    local new old
    new=$(P "$db" -c "SELECT count(*) FROM orders_flat")
    old=$(P "$db" -c "SELECT count(*) FROM orders_flat_old")
    [ "$new" = "$old" ] || { echo "pgrepart run: $new rows in the new table, $old in the old one" >&2; exit 1; }
    drop_db "$db"
}

# The whole run: setup, copy, indexes, catch-up, cutover; without the check before cutover
# (verify), which (c2) measures.
log "(c) pgrepart run (auto cutover, no load, --verify off)"
run_c pgr_run run --verify off
T_RUN=$T_C; RSS_RUN_MB=$RSS_C_MB; LOCK_RUN_MS=$LOCK_C_MS
# Where the time went, from the run's own log.
PHASES=$(grep -E "copying|copy finished|primary key|building index|copy and indexes done|cut over" "$DIR/run.log" \
    | sed -E 's/\x1b\[[0-9;]*m//g' | awk '{ print "    " $0 }' || true)
log "(c) ${T_RUN} s, peak RSS ${RSS_RUN_MB} MB, lock held ${LOCK_RUN_MS} ms"

log "(c2) pgrepart run at its default settings (the whole table checked before the cutover)"
run_c pgr_run2 run2
T_RUN_FULL=$T_C
# The check's own time, from its summary line: "... in N s".
VERIFY_LINE=$(sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/run2.log" | grep -o 'verify (full): equal: .*' | head -1 || true)
T_VERIFY=$(echo "$VERIFY_LINE" | sed -n 's/.* in \([0-9.]*\) s.*/\1/p')
T_VERIFY=${T_VERIFY:-0}
log "(c2) ${T_RUN_FULL} s (its check ${T_VERIFY} s)"

#####################################################################################
# (d) apply of a backlog (the backlog is made by `backlog`, defined above)

log "(d) pgrepart apply: run --cutover manual, wait for streaming, SIGSTOP, backlog, SIGCONT"
fresh pgr_apply
/usr/bin/time -v -o "$DIR/apply.time" "$PGREPART" run --source "$(url pgr_apply)" "${RUN_ARGS[@]}" --cutover manual \
    >"$DIR/apply.out" 2>"$DIR/apply.log" &
TIME_PID=$!
PIDS+=("$TIME_PID")
wait_until 60 "the pgrepart process" pgrep -P "$TIME_PID" -x pgrepart >/dev/null
PGR_PID=$(pgrep -P "$TIME_PID" -x pgrepart)
PIDS+=("$PGR_PID")
status_json() { "$PGREPART" status --source "$(url pgr_apply)" --table orders_flat --json 2>/dev/null; }
streaming_and_idle() {
    kill -0 "$PGR_PID" 2>/dev/null || { cat "$DIR/apply.log" >&2; exit 1; }
    local s; s=$(status_json) || return 1
    echo "$s" | grep -q '"phase": "streaming"' && echo "$s" | grep -qE '"lag_bytes": [0-9]{1,5},'
}
wait_until 3600 "the manual-cutover migration to stream" streaming_and_idle
kill -STOP "$PGR_PID"
BACKLOG_PGR=$(backlog pgr_apply)
kill -CONT "$PGR_PID"
t0=$(now)
wait_until 3600 "pgrepart to apply the backlog" marker_in pgr_apply orders_flat_repart
T_APPLY_PGR=$(elapsed "$t0" "$(now)")
log "(d) pgrepart drained the backlog ($BACKLOG_PGR) in ${T_APPLY_PGR} s"
# A standalone `pgrepart verify` of the streaming migration (no load).
t0=$(now)
"$PGREPART" verify --source "$(url pgr_apply)" --table orders_flat ${JOBS:+--jobs "$JOBS"} >"$DIR/verify.out" 2>"$DIR/verify.log" \
    || { cat "$DIR/verify.out" "$DIR/verify.log" >&2; exit 1; }
T_VERIFY_CLI=$(elapsed "$t0" "$(now)")
log "(d) pgrepart verify: ${T_VERIFY_CLI} s"
"$PGREPART" cutover --source "$(url pgr_apply)" --table orders_flat >/dev/null
wait "$TIME_PID" || { cat "$DIR/apply.log" >&2; exit 1; }
RSS_APPLY_MB=$(awk -F: '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$DIR/apply.time")
LOCK_APPLY_MS=$(sed -n 's/.*lock held \([0-9]*\) ms.*/\1/p' "$DIR/apply.out")
drop_db pgr_apply

log "(d) native apply: REPLICA IDENTITY FULL, subscription disabled during the backlog, then enabled"
P nat_src -c "ALTER TABLE orders_flat REPLICA IDENTITY FULL"
slot_inactive() { [ "$(P nat_src -c "SELECT active FROM pg_replication_slots WHERE slot_name = 'natsub'")" = f ]; }
wait_until 60 "the native subscription's walsender to stop" slot_inactive
BACKLOG_NAT=$(backlog nat_src)
END_LSN=$(P nat_src -c "SELECT pg_current_wal_lsn()")
t0=$(now)
P nat_dst -c "ALTER SUBSCRIPTION natsub ENABLE"
wait_until 3600 "the native subscription to apply the backlog" marker_in nat_dst orders_flat
T_APPLY_NAT=$(elapsed "$t0" "$(now)")
log "(d) native apply drained the backlog ($BACKLOG_NAT) in ${T_APPLY_NAT} s (end LSN $END_LSN)"
P nat_dst -c "ALTER SUBSCRIPTION natsub DISABLE"
P nat_dst -c "ALTER SUBSCRIPTION natsub SET (slot_name = NONE)"
P nat_dst -c "DROP SUBSCRIPTION natsub"

#####################################################################################
# (e) the source's own workload while a migration runs: pgbench, 4 clients, each transaction
# reads a row, updates one and inserts one on orders_flat. The workload runs LEAD seconds first
# (a migration starts on a live database), then WORKLOAD_SECONDS are measured (pgbench's per-second
# progress lines): alone; during the copy (pgrepart started at the window's start with default
# settings, so its load governor is on); the same with --max-impact 0 (no governor); with nothing
# but a slot being decoded (pg_recvlogical into /dev/null: what any logical-replication consumer
# costs the source, before it applies anything); during streaming (the copy done) at default
# settings, where the load governor paces the apply and the lag it leaves is printed, and with
# --max-impact 0, where the apply keeps up; and an open loop at 40% of the alone rate, alone and during the copy. Closed loop: the
# workload's throughput; open loop: its latency.
if [ "${WORKLOAD:-1}" = 1 ]; then
cat > "$DIR/wl.sql" <<SQL
\set id random(1, $ROWS)
\set c random(1, 5000)
BEGIN;
SELECT amount FROM orders_flat WHERE id = :id;
UPDATE orders_flat SET amount = coalesce(amount, 0) + 1 WHERE id = :id;
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
VALUES (now(), :c, (ARRAY['US','EU','ASIA','LATAM'])[1 + :c % 4], 1.50, 'new');
COMMIT;
SQL
chmod a+r "$DIR/wl.sql"
WS=${WORKLOAD_SECONDS:-30}
LEAD=3
# workload DB HOOK [pgbench args...]: runs the workload for LEAD + WS seconds, calls HOOK (a
# function name, or :) when the window starts, and sets WL_TPS and WL_LAT (ms) over the window.
workload() {
    local db=$1 hook=$2; shift 2
    # The table and its indexes in shared buffers first (pg_prewarm, where the server has it), so
    # that no window is slower for reading them in than another.
    if P "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null 2>&1; then
        P "$db" -c "SELECT sum(pg_prewarm(oid)) FROM pg_class WHERE oid = 'orders_flat'::regclass
                    OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'orders_flat'::regclass)" >/dev/null
    fi
    "$PGBENCH" -n -h 127.0.0.1 -p "$PORT" -U postgres -c $CLIENTS -j 2 -T $(( LEAD + WS )) -P 1 "$@" \
        -f "$DIR/wl.sql" "$db" >"$DIR/wl.out" 2>&1 &
    local pgb=$!
    wait_until 30 "pgbench's first progress line" grep -q '^progress: 1\.' "$DIR/wl.out"
    wait_until 30 "pgbench's lead" grep -q "^progress: $LEAD\\." "$DIR/wl.out"
    "$hook" "$db"
    wait "$pgb" || { cat "$DIR/wl.out" >&2; exit 1; }
    read -r WL_TPS WL_LAT < <(awk -v lead="$LEAD" '/^progress:/ { t = $2 + 0; if (t > lead) { n++; tps += $4; lat += $7 } }
        END { if (n) printf "%.0f %.2f\n", tps / n, lat / n; else print "0 0" }' "$DIR/wl.out")
}
RUN_EXTRA=()
# start_run DB: starts pgrepart run (manual cutover, RUN_EXTRA) in the background.
start_run() {
    "$PGREPART" run --source "$(url "$1")" "${RUN_ARGS[@]}" --cutover manual "${RUN_EXTRA[@]}" \
        >"$DIR/wl.run.out" 2>"$DIR/wl.run.log" &
    WL_PID=$!
    PIDS+=("$WL_PID")
}
# Rows of the ranges the run has committed so far, and its governor's decisions, from its log.
# (No grep here: one that finds nothing would end the script through pipefail.)
copied_rows() {
    sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/wl.run.log" \
        | awk '/range copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^rows=/) { split($i, kv, "="); n += kv[2] } } END { print n + 0 }'
}
governor_log() {
    sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9T:.-]*Z +//' "$DIR/wl.run.log" \
        | awk '/load governor|copy slowed|copy limit|apply slowed|apply pace|stream parked: the workload|unparked/ && n < 16 { print "    " $0; n++ }'
}
# The run's lag and apply pace now, from its status: "LAG_S s (LAG_MB MB), paced to N changes/s".
lag_now() {
    "$PGREPART" status --source "$(url "$1")" --table orders_flat --json 2>/dev/null \
        | python3 -c 'import json, sys
v = json.load(sys.stdin)
pace = v.get("apply_rate_limit")
print("lag %.1f s (%d MB), apply %s" % (v.get("lag_seconds") or 0, (v.get("lag_bytes") or 0) // 1048576,
      "not paced" if pace is None else "stream parked" if pace == 0 else "paced to %d changes/s" % pace))' 2>/dev/null || echo "lag unknown"
}
stop_run() {
    kill -INT "$WL_PID" 2>/dev/null || true
    wait "$WL_PID" || true
    "$PGREPART" abort --yes --source "$(url "$1")" --table orders_flat >/dev/null 2>&1 || true
    drop_db "$1"
}
log "(e) workload alone, ${WS} s"
fresh wl_a; workload wl_a :; TPS_ALONE1=$WL_TPS; LAT_ALONE1=$WL_LAT; drop_db wl_a
log "(e) alone: $TPS_ALONE1 tps, $LAT_ALONE1 ms"

log "(e) workload during the copy (default settings)"
fresh wl_b; workload wl_b start_run; TPS_COPY=$WL_TPS; LAT_COPY=$WL_LAT
COPIED_GOV=$(copied_rows); GOV_DEFAULT=$(governor_log); LAG_COPY=$(lag_now wl_b); stop_run wl_b
log "(e) during the copy: $TPS_COPY tps, $LAT_COPY ms (${COPIED_GOV} rows copied in the window)"

log "(e) workload during the copy, --max-impact 0"
RUN_EXTRA=(--max-impact 0)
fresh wl_c; workload wl_c start_run; TPS_NOGOV=$WL_TPS; LAT_NOGOV=$WL_LAT
COPIED_NOGOV=$(copied_rows); stop_run wl_c
RUN_EXTRA=()
log "(e) during the copy without the governor: $TPS_NOGOV tps, $LAT_NOGOV ms (${COPIED_NOGOV} rows copied)"

log "(e) workload with only a slot's decoding (pg_recvlogical into /dev/null): the floor of any logical consumer"
fresh wl_g
start_decoding wl_g
workload wl_g :; TPS_DECODE=$WL_TPS; LAT_DECODE=$WL_LAT
stop_decoding wl_g
drop_db wl_g
log "(e) decoding only: $TPS_DECODE tps, $LAT_DECODE ms"

# streaming DB: the migration of DB has entered its streaming phase.
streaming() { "$PGREPART" status --source "$(url "$1")" --table orders_flat --json 2>/dev/null | grep -q '"phase": "streaming"'; }
# streaming_window DB: a run (RUN_EXTRA) of a fresh DB, once it streams the workload's window; sets
# WL_TPS and WL_LAT, WL_GOV (the governor's decisions) and WL_LAG (the lag at the window's end).
streaming_window() {
    fresh "$1"; start_run "$1"
    wait_until 3600 "the migration to stream" streaming "$1"
    workload "$1" :
    WL_GOV=$(governor_log); WL_LAG=$(lag_now "$1")
    stop_run "$1"
}
log "(e) workload during streaming"
streaming_window wl_d; TPS_STREAM=$WL_TPS; LAT_STREAM=$WL_LAT; GOV_STREAM=$WL_GOV; LAG_STREAM=$WL_LAG
log "(e) during streaming: $TPS_STREAM tps, $LAT_STREAM ms ($LAG_STREAM)"

# The same over a window three times as long: the governor parks the stream for 30 s at a time, so
# a 30 s window may see one park; this one sees parks, reopenings (each decodes up to ~15 s of WAL
# again from the slot's restart point) and the floor pace in between.
log "(e) workload during streaming, default settings, a $(( WS * 3 )) s window"
WS_SHORT=$WS; WS=$(( WS * 3 ))
streaming_window wl_j; TPS_STREAML=$WL_TPS; LAT_STREAML=$WL_LAT; GOV_STREAML=$WL_GOV; LAG_STREAML=$WL_LAG
WS=$WS_SHORT
log "(e) during streaming, long window: $TPS_STREAML tps, $LAT_STREAML ms ($LAG_STREAML)"

log "(e) workload during streaming, --max-impact 0 (the apply keeps up, unpaced)"
RUN_EXTRA=(--max-impact 0)
streaming_window wl_i; TPS_STREAM0=$WL_TPS; LAT_STREAM0=$WL_LAT; LAG_STREAM0=$WL_LAG
RUN_EXTRA=()
log "(e) during streaming, unpaced: $TPS_STREAM0 tps, $LAT_STREAM0 ms ($LAG_STREAM0)"

log "(e) workload alone again, ${WS} s (the reference is the mean of the two)"
fresh wl_h; workload wl_h :; TPS_ALONE2=$WL_TPS; LAT_ALONE2=$WL_LAT; drop_db wl_h
TPS_ALONE=$(( (TPS_ALONE1 + TPS_ALONE2) / 2 ))
LAT_ALONE=$(awk -v a="$LAT_ALONE1" -v b="$LAT_ALONE2" 'BEGIN { printf "%.2f", (a + b) / 2 }')
log "(e) alone again: $TPS_ALONE2 tps, $LAT_ALONE2 ms"

RATE=$(( TPS_ALONE * 40 / 100 ))
log "(e) open loop at $RATE tps, alone and during the copy"
fresh wl_e; workload wl_e : -R "$RATE"; OTPS_ALONE=$WL_TPS; OLAT_ALONE=$WL_LAT; drop_db wl_e
fresh wl_f; workload wl_f start_run -R "$RATE"; OTPS_COPY=$WL_TPS; OLAT_COPY=$WL_LAT
COPIED_OPEN=$(copied_rows); GOV_OPEN=$(governor_log); stop_run wl_f
log "(e) open loop: alone $OTPS_ALONE tps $OLAT_ALONE ms; during the copy $OTPS_COPY tps $OLAT_COPY ms (${COPIED_OPEN} rows copied)"
fi

#####################################################################################
CHANGES=$(( BACKLOG_UPDATES + BACKLOG_INSERTS + BACKLOG_DELETES + 1 ))
rate() { awk -v n="$CHANGES" -v t="$1" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "-" }'; }
R_RUN=$(ratio "$T_RUN" "$T_SEED")
R_APPLY=$(ratio "$T_APPLY_NAT" "$T_APPLY_PGR")
verdict() { awk -v v="$1" -v lim="$2" -v dir="$3" 'BEGIN { ok = (dir == "le") ? (v <= lim) : (v >= lim); print ok ? "met" : "NOT met" }'; }
{
echo
echo "pgrepart benchmark: $ROWS rows, orders_flat $TABLE_MB MB with indexes; $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo), PostgreSQL $("$BIN/postgres" -V | awk '{ print $3 }'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
printf '| %-62s | %12s |\n' "measure" "value"
printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..64})" "$(printf -- '-%.0s' {1..14})"
printf '| %-62s | %10s s |\n' "copy: seed INSERT INTO orders_list SELECT * (a)" "$T_SEED"
printf '| %-62s | %10s s |\n' "copy: native logical replication initial sync (b)" "$T_NATIVE_COPY"
printf '| %-62s | %10s s |\n' "practical limit: 2 binary COPY streams + indexes after (a2)" "$T_RAW"
printf '| %-62s | %10s s |\n' "the same while a same-database slot is decoded (a3)" "$T_RAW_SLOT"
printf '| %-62s | %10s s |\n' "copy: whole pgrepart run, --verify off, no load (c)" "$T_RUN"
printf '| %-62s | %12s |\n' "ratio pgrepart run (c) / seed INSERT ... SELECT (target <= 0.6)" "$R_RUN"
printf '| %-62s | %12s |\n' "ratio pgrepart run (c) / native initial sync" "$(ratio "$T_RUN" "$T_NATIVE_COPY")"
printf '| %-62s | %12s |\n' "ratio pgrepart run (c) / practical limit (a2)" "$(ratio "$T_RUN" "$T_RAW")"
printf '| %-62s | %12s |\n' "ratio pgrepart run (c) / limit with a decoded slot (a3)" "$(ratio "$T_RUN" "$T_RAW_SLOT")"
printf '| %-62s | %10s s |\n' "whole pgrepart run, default settings (c2)" "$T_RUN_FULL"
printf '| %-62s | %12s |\n' "ratio pgrepart run (c2) / seed INSERT ... SELECT" "$(ratio "$T_RUN_FULL" "$T_SEED")"
printf '| %-62s | %10s s |\n' "verify: run's check before cutover (c2)" "$T_VERIFY"
printf '| %-62s | %10s s |\n' "verify: pgrepart verify, standalone (d)" "$T_VERIFY_CLI"
printf '| %-62s | %12s |\n' "ratio verify (c2) / run (c) (target <= 0.5)" "$(ratio "$T_VERIFY" "$T_RUN")"
printf '| %-62s | %10s s |\n' "apply: pgrepart drains the backlog (d)" "$T_APPLY_PGR"
printf '| %-62s | %10s s |\n' "apply: native subscription drains the backlog (d)" "$T_APPLY_NAT"
printf '| %-62s | %10s/s |\n' "apply: pgrepart changes per second" "$(rate "$T_APPLY_PGR")"
printf '| %-62s | %10s/s |\n' "apply: native changes per second" "$(rate "$T_APPLY_NAT")"
printf '| %-62s | %12s |\n' "ratio pgrepart apply throughput / native (target >= 3)" "$R_APPLY"
printf '| %-62s | %9s MB |\n' "peak RSS, pgrepart run (c) (target < 200)" "$RSS_RUN_MB"
printf '| %-62s | %9s MB |\n' "peak RSS, pgrepart run with the backlog (d) (target < 200)" "$RSS_APPLY_MB"
printf '| %-62s | %9s ms |\n' "cutover lock held, run (c)" "${LOCK_RUN_MS:--}"
printf '| %-62s | %9s ms |\n' "cutover lock held, manual cutover (d)" "${LOCK_APPLY_MS:--}"
if [ "${WORKLOAD:-1}" = 1 ]; then
slow() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", (1 - a / b) * 100; else print "-" }'; }
printf '| %-62s | %12s |\n' "workload alone, closed loop (e), first: tps / latency" "$TPS_ALONE1 / $LAT_ALONE1 ms"
printf '| %-62s | %12s |\n' "workload alone, closed loop (e), last: tps / latency" "$TPS_ALONE2 / $LAT_ALONE2 ms"
printf '| %-62s | %12s |\n' "workload alone, the mean of the two (the reference)" "$TPS_ALONE / $LAT_ALONE ms"
printf '| %-62s | %12s |\n' "workload during the copy, default settings: tps / latency" "$TPS_COPY / $LAT_COPY ms"
printf '| %-62s | %12s |\n' "  its slowdown (target < 15%)" "$(slow "$TPS_COPY" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "workload during the copy, --max-impact 0: tps / latency" "$TPS_NOGOV / $LAT_NOGOV ms"
printf '| %-62s | %12s |\n' "  its slowdown" "$(slow "$TPS_NOGOV" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "workload with only a slot's decoding: tps / latency" "$TPS_DECODE / $LAT_DECODE ms"
printf '| %-62s | %12s |\n' "  its slowdown (the floor of any logical consumer)" "$(slow "$TPS_DECODE" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "workload during streaming, default settings: tps / latency" "$TPS_STREAM / $LAT_STREAM ms"
printf '| %-62s | %12s |\n' "  its slowdown (target < 15%)" "$(slow "$TPS_STREAM" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "workload during streaming, default, $(( WS * 3 )) s window: tps / latency" "$TPS_STREAML / $LAT_STREAML ms"
printf '| %-62s | %12s |\n' "  its slowdown" "$(slow "$TPS_STREAML" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "workload during streaming, --max-impact 0: tps / latency" "$TPS_STREAM0 / $LAT_STREAM0 ms"
printf '| %-62s | %12s |\n' "  its slowdown (the apply keeps up)" "$(slow "$TPS_STREAM0" "$TPS_ALONE")"
printf '| %-62s | %12s |\n' "open loop at 40%: alone tps / latency" "$OTPS_ALONE / $OLAT_ALONE ms"
printf '| %-62s | %12s |\n' "open loop at 40%: during the copy tps / latency" "$OTPS_COPY / $OLAT_COPY ms"
echo
echo "(e) rows copied in the ${WS} s window: ${COPIED_GOV} (default), ${COPIED_NOGOV} (--max-impact 0), ${COPIED_OPEN} (open loop, default)"
echo "(e) at the end of the window: during the copy (default) $LAG_COPY; during streaming (default) $LAG_STREAM; during streaming (--max-impact 0) $LAG_STREAM0"
echo "(e) the governor, closed loop:"
echo "$GOV_DEFAULT"
echo "(e) the governor, streaming:"
echo "$GOV_STREAM"
echo "(e) the governor, streaming, $(( WS * 3 )) s window ($LAG_STREAML at its end):"
echo "$GOV_STREAML"
echo "(e) the governor, open loop:"
echo "$GOV_OPEN"
fi
echo
echo "backlog (d): pgrepart source: $BACKLOG_PGR; native source: $BACKLOG_NAT (+1 marker row each)"
echo "targets: run/INSERT-SELECT <= 0.6: $(verdict "$R_RUN" 0.6 le); apply >= 3x native: $(verdict "$R_APPLY" 3 ge); RSS < 200 MB: $(verdict "$(( RSS_RUN_MB > RSS_APPLY_MB ? RSS_RUN_MB : RSS_APPLY_MB ))" 199.999 le)"
echo "pgrepart run (c), from its log:"
echo "$PHASES"
} | tee ${OUT:+"$OUT"}

if [ "${TPCB:-1}" = 1 ]; then
    . "$REPO/bench/tpcb.sh"
fi
