# Shared by the bench scripts: the server binaries, the pgrepart binary, one throwaway cluster on a
# free port (stopped and removed on exit unless KEEP=1), and small helpers. Sourced after MAJOR and
# REPO are set; `start_cluster NAME [SETTINGS...]` starts the cluster.

find_bin() {
    local var="PGREPART_PG${MAJOR}_BIN"
    for d in "${!var:-}" "$REPO/.pg/$MAJOR/bin" "/usr/lib/postgresql/$MAJOR/bin"; do
        [ -n "$d" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
    done
    echo "no PostgreSQL $MAJOR binaries (set $var)" >&2
    exit 1
}
BIN=$(find_bin)
CLIENT_BIN=/usr/lib/postgresql/15/bin
PSQL=$( [ -x "$CLIENT_BIN/psql" ] && echo "$CLIENT_BIN/psql" || command -v psql)
PGBENCH=$( [ -x "$CLIENT_BIN/pgbench" ] && echo "$CLIENT_BIN/pgbench" || command -v pgbench)

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { printf '%s ==> %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

COMMIT=$(git -C "$REPO" rev-parse --short HEAD)
if [ -n "${PGREPART_BIN:-}" ]; then
    PGREPART=$PGREPART_BIN
else
    log "building pgrepart (release)"
    cargo build --release --quiet
    PGREPART=$REPO/target/release/pgrepart
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ]; then
        as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$DIR"
    else
        echo "cluster kept: $DIR (port $PORT)" >&2
    fi
}

# start_cluster NAME [SETTING...]: initdb into /tmp/NAME.XXXXXX ($DIR) and start it on a free port
# ($PORT) with the bench settings plus SETTINGs (`-c name=value` words).
start_cluster() {
    local name=$1; shift
    DIR=$(mktemp -d "/tmp/$name.XXXXXX")
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    trap cleanup EXIT
    log "PostgreSQL $MAJOR on 127.0.0.1:$PORT ($DIR), $ROWS rows"
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
    local settings="-c wal_level=logical -c max_wal_size=8GB -c shared_buffers=1GB -c checkpoint_timeout=30min \
 -c maintenance_work_mem=256MB -c max_replication_slots=20 -c max_wal_senders=20 -c wal_sender_timeout=10min \
 -c log_autovacuum_min_duration=0 -c log_checkpoints=on $*"
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 120 \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 $settings" start >/dev/null
}
url() { echo "postgresql://postgres@127.0.0.1:$PORT/$1"; }
# P DB [psql args...]: quiet, unaligned, stops on the first error.
P() { local db=$1; shift; "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$db" "$@"; }

# wait_until DEADLINE_S DESCRIPTION COMMAND...: polls COMMAND every 50 ms until it succeeds.
wait_until() {
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@"; do
        if [ "$(date +%s)" -ge "$end" ]; then echo "timed out after ${limit}s waiting for: $what" >&2; exit 1; fi
        sleep 0.05
    done
}
