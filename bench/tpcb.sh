# Windows of the benchmark driven by a standard client (sourced by bench/run.sh, which sets up the
# server and the helpers P, url, log, now, elapsed, ratio, wait_until, PGBENCH, PGREPART, DIR, PORT).
#
# WORKLOAD=tpcb (SCENARIOS=tpcb): pgbench's built-in TPC-B-like script (`pgbench -b tpcb-like`,
# scale TPCB_SCALE, TPCB_CLIENTS clients) while pgrepart partitions pgbench_accounts by HASH (aid)
# into 8. WORKLOAD=sysbench (SCENARIOS=sysbench): sysbench's oltp_read_write (one table of
# SB_ROWS rows, TPCB_CLIENTS threads) while pgrepart partitions sbtest1 by HASH (id) into 8; its
# latency is the 95th percentile of each second, as sysbench reports it. Default settings
# otherwise: auto cutover, the check before it. Two workloads:
#   open loop:   `-R` / `--rate` at half the rate the closed loop reached alone (an application
#                that sends its transactions at its own pace: its latency is what moves);
#   closed loop: as many transactions as the clients can make (the machine saturated: its
#                throughput is what moves).
# Each: the workload alone before and after (the reference is the mean of the two), then the
# migration at default settings, with --max-impact 0, and with the previous governor
# (OLD_PGREPART=path to its binary; skipped when unset). A migration not done after TPCB_LIMIT
# seconds is stopped and aborted, and reported as such with the rows it copied.
# Per migration, from the client's per-second lines over the migration's window:
#   duration / the unloaded run's (the same migration, no workload);
#   latency (weighted by transactions) / alone; the worst 10 s window / alone;
#   the latency excess integrated over the window (ms x s: each second's latency less the
#   alone latency, summed); throughput / alone.
TPCB_SCALE=${TPCB_SCALE:-20}
TPCB_CLIENTS=${TPCB_CLIENTS:-4}
TPCB_ALONE_S=${TPCB_ALONE_S:-20}
TPCB_LIMIT=${TPCB_LIMIT:-240}
TPCB_LEAD=5
# TPCB_LOOPS: which loops to run ("open closed", the default; "open" alone for a quicker look).
# TPCB_RUNS: which migrations in each ("default max-impact-0 previous", the default).
TPCB_LOOPS=${TPCB_LOOPS:-open closed}
TPCB_RUNS=${TPCB_RUNS:-default max-impact-0 previous}
TPCB_TAIL=5
WORKLOAD=${WORKLOAD:-tpcb}
SB_ROWS=${SB_ROWS:-1000000}
SYSBENCH_OPTS=(oltp_read_write --db-driver=pgsql --pgsql-host=127.0.0.1 --pgsql-port="$PORT"
    --pgsql-user=postgres --tables=1 --table-size="$SB_ROWS")
if [ "$WORKLOAD" = sysbench ]; then
    command -v sysbench >/dev/null || { echo "sysbench is needed (apt-get install sysbench)" >&2; exit 1; }
    W_TABLE=sbtest1
    TPCB_ARGS=(--table sbtest1 --partition-by "HASH (id)" --modulus 8 --cutover auto)
    W_TITLE="sysbench oltp_read_write ($SB_ROWS rows, $TPCB_CLIENTS threads): sbtest1 by HASH (id) into 8"
    W_LAT="p95 latency"
else
    W_TABLE=pgbench_accounts
    TPCB_ARGS=(--table pgbench_accounts --partition-by "HASH (aid)" --modulus 8 --cutover auto)
    W_TITLE="TPC-B-like (pgbench -b tpcb-like, scale $TPCB_SCALE, $TPCB_CLIENTS clients): pgbench_accounts ($(( TPCB_SCALE * 100000 )) rows) by HASH (aid) into 8"
    W_LAT="mean latency"
fi

P postgres -c "CREATE DATABASE tpcb_tpl"
if [ "$WORKLOAD" = sysbench ]; then
    log "(sysbench) sysbench oltp_read_write prepare, $SB_ROWS rows (template database)"
    sysbench "${SYSBENCH_OPTS[@]}" --pgsql-db=tpcb_tpl prepare >"$DIR/tpcb.init" 2>&1
else
    log "(tpcb) pgbench -i -s $TPCB_SCALE (template database)"
    "$PGBENCH" -i -q -s "$TPCB_SCALE" -h 127.0.0.1 -p "$PORT" -U postgres tpcb_tpl >"$DIR/tpcb.init" 2>&1
fi
P tpcb_tpl -c "VACUUM ANALYZE"
P tpcb_tpl -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null 2>&1 || true
[ "${STATEMENTS:-1}" = 1 ] && P tpcb_tpl -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

tpcb_fresh() {
    P postgres -c "CREATE DATABASE $1 TEMPLATE tpcb_tpl STRATEGY FILE_COPY"
    P "$1" -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')" >/dev/null 2>&1 || true
    P "$1" -c CHECKPOINT
    sync
    wait_until 600 "autovacuum to finish" autovacuum_idle
}

# tpcb_migrate BIN DB [extra...]: the migration in the foreground, at most TPCB_LIMIT s; sets
# TM_SECONDS and TM_DONE (1 when it finished, else 0 and TM_COPIED, the rows it had copied).
tpcb_migrate() {
    local bin=$1 db=$2; shift 2
    local t0 rc=0
    t0=$(now)
    env -u PGREPART_MAX_IMPACT timeout -s INT "$TPCB_LIMIT" "$bin" run --source "$(url "$db")" \
        "${TPCB_ARGS[@]}" "$@" >"$DIR/tpcb.run.out" 2>"$DIR/tpcb.run.log" || rc=$?
    TM_SECONDS=$(elapsed "$t0" "$(now)")
    # TPCB_LOGS=DIR keeps every migration's log there.
    if [ -n "${TPCB_LOGS:-}" ]; then cp "$DIR/tpcb.run.log" "$TPCB_LOGS/$db.log"; fi
    TM_DONE=1; TM_COPIED=""
    if [ "$rc" != 0 ]; then
        TM_DONE=0
        TM_COPIED=$("$bin" status --source "$(url "$db")" --table "$W_TABLE" --json 2>/dev/null \
            | python3 -c 'import json, sys; v = json.load(sys.stdin); print("%s of %s rows copied" % (v.get("rows_copied"), v.get("rows_total_estimate")))' 2>/dev/null || echo "unknown")
        "$bin" abort --yes --source "$(url "$db")" --table "$W_TABLE" >/dev/null 2>&1 || true
    fi
}

# progress NAME: the client's per-second lines of window NAME as pgbench prints them
# ("progress: T s, TPS tps, lat MS ms ..."); sysbench's ("[ Ts ] thds: N tps: TPS ... lat
# (ms,95%): MS ...") are turned into that shape.
progress() {
    if [ "$WORKLOAD" = sysbench ]; then
        awk '/^\[ *[0-9]+s \]/ {
                t = $0; sub(/^\[ */, "", t); sub(/s \].*/, "", t); tps = ""; lat = ""
                for (i = 1; i < NF; i++) {
                    if ($i == "tps:") tps = $(i + 1)
                    if ($i ~ /^\(ms,[0-9]+%\):$/) lat = $(i + 1)
                }
                if (tps != "" && lat != "") printf "progress: %d.0 s, %s tps, lat %s ms\n", t, tps, lat
            }' "$DIR/tpcb.$1.out" 2>/dev/null
    else
        cat "$DIR/tpcb.$1.out" 2>/dev/null
    fi
}
# has_progress NAME T: the client has reported second T of window NAME.
has_progress() { [ "$(progress "$1" | grep -c "^progress: $2\\.")" -gt 0 ]; }

# tpcb_window NAME RATE HOOK...: the client on a fresh database (RATE: its rate, or 0 for a closed
# loop); HOOK (a command, given the database) runs after TPCB_LEAD s, or the workload runs
# TPCB_ALONE_S s with HOOK ":". Leaves the client's output in $DIR/tpcb.NAME.out and the hook's
# window (seconds from the client's start) in W_FROM, W_TO.
tpcb_window() {
    local name=$1 rate=$2; shift 2
    local db="tpcb_$name" pgb t_pgb t0 t1
    local rate_args=()
    [ "$rate" != 0 ] && rate_args=(-R "$rate")
    tpcb_fresh "$db"
    t_pgb=$(now)
    local seconds=$(( TPCB_LEAD + TPCB_LIMIT + 60 ))
    if [ "$WORKLOAD" = sysbench ]; then
        [ "$rate" != 0 ] && rate_args=(--rate="$rate")
        sysbench "${SYSBENCH_OPTS[@]}" --pgsql-db="$db" --threads="$TPCB_CLIENTS" --time="$seconds" \
            --report-interval=1 "${rate_args[@]}" run >"$DIR/tpcb.$name.out" 2>&1 &
    else
        "$PGBENCH" -n -b tpcb-like -h 127.0.0.1 -p "$PORT" -U postgres -c "$TPCB_CLIENTS" -j 2 \
            -T "$seconds" -P 1 "${rate_args[@]}" "$db" >"$DIR/tpcb.$name.out" 2>&1 &
    fi
    pgb=$!
    wait_until 30 "the client's lead" has_progress "$name" "$TPCB_LEAD"
    t0=$(now)
    if [ "$1" = : ]; then sleep "$TPCB_ALONE_S"; else "$@" "$db"; fi
    t1=$(now)
    W_FROM=$(elapsed "$t_pgb" "$t0"); W_TO=$(elapsed "$t_pgb" "$t1")
    # The tail: the seconds after the migration, so that its last second is in the output.
    local last
    last=$(awk -v to="$W_TO" 'BEGIN { printf "%d", to + 5 }')
    if ! kill -0 "$pgb" 2>/dev/null; then
        echo "the workload's client stopped during window $name:" >&2; tail -5 "$DIR/tpcb.$name.out" >&2; exit 1
    fi
    wait_until 60 "the client's tail" has_progress "$name" "$last"
    # (a background job of a script ignores SIGINT)
    kill -TERM "$pgb" 2>/dev/null || true
    wait "$pgb" 2>/dev/null || true
    if [ -n "${TPCB_LOGS:-}" ]; then
        cp "$DIR/tpcb.$name.out" "$TPCB_LOGS/$db.client"
        echo "$W_FROM $W_TO" >"$TPCB_LOGS/$db.window"
        # The server's log so far (autovacuum and checkpoints are logged), for what else ran.
        cp "$DIR/log" "$TPCB_LOGS/server.log"
    fi
    drop_db "$db"
}

# tpcb_stats NAME: "TPS LAT WORST10 SECONDS" over the window W_FROM..W_TO: transactions per
# second, their mean latency (ms), the worst 10 s window's mean latency, and the seconds counted.
tpcb_stats() {
    awk -v from="$W_FROM" -v to="$W_TO" '
        /^progress:/ { t = $2 + 0; if (t > from && t <= to + 1) { n++; tps[n] = $4; lat[n] = $7 } }
        END {
            if (!n) { print "0 0 0 0"; exit }
            for (i = 1; i <= n; i++) { x += tps[i]; w += tps[i] * lat[i] }
            worst = 0
            for (i = 1; i <= n; i++) {
                k = (n < 10) ? n : 10; if (i + k - 1 > n) break
                sx = 0; sw = 0
                for (j = i; j < i + k; j++) { sx += tps[j]; sw += tps[j] * lat[j] }
                if (sx > 0 && sw / sx > worst) worst = sw / sx
            }
            printf "%.0f %.3f %.3f %d\n", x / n, (x > 0 ? w / x : 0), worst, n
        }' <(progress "$1")
}

# tpcb_excess NAME ALONE_LAT: the latency excess integrated over the window (ms x s).
tpcb_excess() {
    awk -v from="$W_FROM" -v to="$W_TO" -v alone="$2" '
        /^progress:/ { t = $2 + 0; if (t > from && t <= to + 1) s += $7 - alone }
        END { printf "%.0f\n", s }' <(progress "$1")
}

# The governor's lines of the last migration, for the record; with none (`--max-impact 0`, or a
# governor that could not start), the copy's own lines and what the log says of the governor.
tpcb_governor_log() {
    local lines
    lines=$(sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9T:.-]*Z +//' "$DIR/tpcb.run.log" \
        | awk '/load governor|copy slowed|copy limit|apply slowed|apply pace|stream parked: the workload|unparked/ && n < 16 { print "    " $0; n++ }')
    if [ -n "$lines" ]; then
        printf '%s\n' "$lines"
    else
        echo "    (no governor's decision in the log: $(grep -c . "$DIR/tpcb.run.log") lines, e.g.)"
        sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9T:.-]*Z +//' "$DIR/tpcb.run.log" \
            | grep -E 'copying|governor|copied in|cutover' | head -4 | sed 's/^/    /'
    fi
}

log "(tpcb) the migration with no workload"
tpcb_fresh tpcb_unloaded
# Where the unloaded migration's CPU goes (bench/cpu.py): the server's processes by what they do,
# and pgrepart's.
rm -f "$DIR/cpu.stop"
python3 "$REPO/bench/cpu.py" "$(head -1 "$DIR/data/postmaster.pid")" "$PGREPART" "$DIR/cpu.stop" >"$DIR/cpu.out" &
CPU_PID=$!
tpcb_migrate "$PGREPART" tpcb_unloaded
touch "$DIR/cpu.stop"; wait "$CPU_PID" || true
CPU_UNLOADED=$(cat "$DIR/cpu.out")
[ "$TM_DONE" = 1 ] || { echo "the unloaded migration did not finish: $TM_COPIED" >&2; cat "$DIR/tpcb.run.log" >&2; exit 1; }
T_UNLOADED=$TM_SECONDS
drop_db tpcb_unloaded
log "(tpcb) unloaded: ${T_UNLOADED} s; $CPU_UNLOADED"

# alone NAME RATE: sets A_TPS A_LAT.
alone() {
    tpcb_window "$1" "$2" :
    read -r A_TPS A_LAT _ _ < <(tpcb_stats "$1")
}
WINDOWS=()
GOVLOG=()
# migration_window MODE NAME RATE BIN [extra...]: one migration under the workload; its window is
# kept for the table (ratios against the mean of the alone windows before and after).
migration_window() {
    local mode=$1 name=$2 rate=$3 bin=$4; shift 4
    mig() { tpcb_migrate "$bin" "$1" "${EXTRA[@]}"; }
    EXTRA=("$@")
    local key="${mode}_${name//-/_}"
    log "(tpcb) $mode loop, $name"
    tpcb_window "$key" "$rate" mig
    local done_text="done"
    [ "$TM_DONE" = 1 ] || done_text="NOT done after ${TPCB_LIMIT} s ($TM_COPIED)"
    WINDOWS+=("$mode|$name|$key|$W_FROM|$W_TO|$TM_SECONDS|$done_text")
    GOVLOG+=("$mode loop, $name:" "$(tpcb_governor_log)")
    log "(tpcb) $mode, $name: ${TM_SECONDS} s, $(tpcb_stats "$key") (tps, ms, worst 10 s ms, seconds); $done_text"
}
# row MODE NAME KEY FROM TO SECONDS DONE REF_TPS REF_LAT: one line of the table.
row() {
    local tps lat worst n excess
    W_FROM=$4; W_TO=$5
    read -r tps lat worst n < <(tpcb_stats "$3")
    excess=$(tpcb_excess "$3" "$9")
    printf '| %s | %s | %s s | %s | %s | %s | %s ms | %s | %s ms | %s | %s | %s |\n' \
        "$1" "$2" "$6" "$(ratio "$6" "$T_UNLOADED")" "$tps" "$(ratio "$tps" "$8")" \
        "$lat" "$(ratio "$lat" "$9")" "$worst" "$(ratio "$worst" "$9")" "$excess" "$7"
}

log "(tpcb) closed loop alone (the machine's capacity)"
alone closed_a1 0; C_TPS1=$A_TPS; C_LAT1=$A_LAT
RATE_HALF=$(( C_TPS1 / 2 ))
log "(tpcb) closed loop alone: $C_TPS1 tps, $C_LAT1 ms; the open loop runs at $RATE_HALF tps"

wanted() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }
# migrations MODE RATE: the migrations of TPCB_RUNS in one loop.
migrations() {
    local mode=$1 rate=$2
    if wanted "$TPCB_RUNS" default; then migration_window "$mode" default "$rate" "$PGREPART"; fi
    if wanted "$TPCB_RUNS" max-impact-0; then
        migration_window "$mode" max-impact-0 "$rate" "$PGREPART" --max-impact 0
    fi
    if wanted "$TPCB_RUNS" previous && [ -n "${OLD_PGREPART:-}" ]; then
        migration_window "$mode" previous "$rate" "$OLD_PGREPART"
    fi
}

O_TPS1=0 O_LAT1=0 O_TPS2=0 O_LAT2=0 O_TPS=0 O_LAT=0
if wanted "$TPCB_LOOPS" open; then
    log "(tpcb) open loop alone, before"
    alone open_a1 "$RATE_HALF"; O_TPS1=$A_TPS; O_LAT1=$A_LAT
    migrations open "$RATE_HALF"
    log "(tpcb) open loop alone, after"
    alone open_a2 "$RATE_HALF"; O_TPS2=$A_TPS; O_LAT2=$A_LAT
    O_TPS=$(( (O_TPS1 + O_TPS2) / 2 ))
    O_LAT=$(awk -v a="$O_LAT1" -v b="$O_LAT2" 'BEGIN { printf "%.3f", (a + b) / 2 }')
fi

C_TPS2=$C_TPS1 C_LAT2=$C_LAT1
if wanted "$TPCB_LOOPS" closed; then
    migrations closed 0
    log "(tpcb) closed loop alone, after"
    alone closed_a2 0; C_TPS2=$A_TPS; C_LAT2=$A_LAT
fi
C_TPS=$(( (C_TPS1 + C_TPS2) / 2 ))
C_LAT=$(awk -v a="$C_LAT1" -v b="$C_LAT2" 'BEGIN { printf "%.3f", (a + b) / 2 }')

{
echo
echo "$W_TITLE; $(nproc) cores, PostgreSQL $("$BIN/postgres" -V | awk '{ print $3 }'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "unloaded migration: ${T_UNLOADED} s; $CPU_UNLOADED"
echo "open loop at ${RATE_HALF} tps, alone: before $O_TPS1 tps, $O_LAT1 ms; after $O_TPS2 tps, $O_LAT2 ms; the reference is the mean: $O_TPS tps, $O_LAT ms"
echo "closed loop, alone: before $C_TPS1 tps, $C_LAT1 ms; after $C_TPS2 tps, $C_LAT2 ms; the reference is the mean: $C_TPS tps, $C_LAT ms"
echo
echo "| loop | migration | duration | x unloaded | tps | x alone | $W_LAT | x alone | worst 10 s | x alone | excess ms x s | |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for w in "${WINDOWS[@]}"; do
    IFS='|' read -r mode name key from to secs done_text <<<"$w"
    if [ "$mode" = open ]; then row "$mode" "$name" "$key" "$from" "$to" "$secs" "$done_text" "$O_TPS" "$O_LAT"
    else row "$mode" "$name" "$key" "$from" "$to" "$secs" "$done_text" "$C_TPS" "$C_LAT"; fi
done
echo
echo "the governor's first decisions:"
printf '%s\n' "${GOVLOG[@]}"
} | tee ${TPCB_OUT:+"$TPCB_OUT"}
