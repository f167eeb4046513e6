# The rollback window (`run --rollback-window`), sourced by bench/run.sh (SCENARIOS=rollback) after
# the dataset is built: the forward apply and the reverse apply drain the same backlog, and the
# revert's lock is timed.
#
#   1. `pgrepart run --cutover manual --rollback-window 1h` on a fresh copy; once it streams with
#      no lag, SIGSTOP; the backlog of (d) on orders_flat, marker id -1; SIGCONT; timed until the
#      marker is in orders_flat_repart: the forward apply rate;
#   2. `pgrepart cutover`: the window opens; once the reverse stream has no lag, SIGSTOP; a backlog
#      of the same size (other random ids: the first one's deletes are not repeated) on orders_flat,
#      now the partitioned table, marker id -2; SIGCONT; timed until the
#      marker is in orders_flat_old: the reverse apply rate;
#   3. `pgrepart revert`: the lock time the run prints for the swap back; then the row counts of
#      the table in use and of the partitioned table kept must agree.
# Uses from run.sh: fresh, backlog, marker_in, RUN_ARGS, P, url, wait_until and the rest of lib.sh.

DB=rb
log "(rollback) forward apply: run --cutover manual --rollback-window 1h, SIGSTOP, backlog, SIGCONT"
fresh "$DB"
"$PGREPART" run --source "$(url "$DB")" "${RUN_ARGS[@]}" --cutover manual --rollback-window 1h \
    >"$DIR/rb.out" 2>"$DIR/rb.log" &
RB_PID=$!
PIDS+=("$RB_PID")
rb_status() { "$PGREPART" status --source "$(url "$DB")" --table orders_flat --json 2>/dev/null; }
rb_alive() { kill -0 "$RB_PID" 2>/dev/null || { cat "$DIR/rb.log" "$DIR/rb.out" >&2; exit 1; }; }
# $1: the phase; $2: the lag field that must be below 100 kB.
rb_idle() {
    rb_alive
    local s; s=$(rb_status) || return 1
    echo "$s" | grep -q "\"phase\": \"$1\"" && echo "$s" | grep -qE "\"$2\": [0-9]{1,5},"
}
wait_until 3600 "the migration to stream with no lag" rb_idle streaming lag_bytes
kill -STOP "$RB_PID"
BACKLOG_FWD=$(backlog "$DB" -1)
kill -CONT "$RB_PID"
t0=$(now)
wait_until 3600 "the forward apply to drain the backlog" marker_in "$DB" orders_flat_repart -1
T_FWD=$(elapsed "$t0" "$(now)")
log "(rollback) forward: the backlog ($BACKLOG_FWD) drained in ${T_FWD} s"

log "(rollback) cutover, then the reverse apply: SIGSTOP, a backlog of the same size, SIGCONT"
"$PGREPART" cutover --source "$(url "$DB")" --table orders_flat >/dev/null
wait_open() { rb_idle done reverse_lag_bytes && rb_status | grep -q '"window_state": "open"'; }
wait_until 600 "the window to open with no reverse lag" wait_open
kill -STOP "$RB_PID"
BACKLOG_REV=$(backlog "$DB" -2 52)
kill -CONT "$RB_PID"
t0=$(now)
wait_until 3600 "the reverse apply to drain the backlog" marker_in "$DB" orders_flat_old -2
T_REV=$(elapsed "$t0" "$(now)")
log "(rollback) reverse: the backlog ($BACKLOG_REV) drained in ${T_REV} s"

log "(rollback) revert"
wait_until 600 "the reverse stream to have no lag" wait_open
"$PGREPART" revert --source "$(url "$DB")" --table orders_flat >/dev/null
wait "$RB_PID" || { cat "$DIR/rb.log" >&2; exit 1; }
LOCK_CUT_MS=$(sed -n 's/.*is now partitioned:.*lock held \([0-9]*\) ms.*/\1/p' "$DIR/rb.out" | head -1)
LOCK_REV_MS=$(sed -n 's/.*reverted): lock held \([0-9]*\) ms.*/\1/p' "$DIR/rb.out")
n_in_use=$(P "$DB" -c "SELECT count(*) FROM orders_flat")
n_repart=$(P "$DB" -c "SELECT count(*) FROM orders_flat_repart")
[ "$n_in_use" = "$n_repart" ] || { echo "after the revert: $n_in_use rows in orders_flat, $n_repart in orders_flat_repart" >&2; exit 1; }
drop_db "$DB"

# changes/s: $1 the seconds, $2 the backlog as `backlog` printed it (+1: the marker).
per_s() { echo "$2" | awk -v t="$1" '{ n = $1 + $3 + $5 + 1 } END { if (t > 0) printf "%.0f", n / t; else print "-" }'; }
{
echo
echo "pgrepart rollback window: $ROWS rows, orders_flat $TABLE_MB MB with indexes; $(nproc) cores, PostgreSQL $("$BIN/postgres" -V | awk '{ print $3 }'), commit $COMMIT, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
printf '| %-62s | %16s |\n' "measure" "value"
printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..64})" "$(printf -- '-%.0s' {1..18})"
printf '| %-62s | %16s |\n' "forward apply: the backlog into the partitioned table" "${T_FWD} s, $(per_s "$T_FWD" "$BACKLOG_FWD")/s"
printf '| %-62s | %16s |\n' "reverse apply: a backlog of that size back into the old table" "${T_REV} s, $(per_s "$T_REV" "$BACKLOG_REV")/s"
printf '| %-62s | %16s |\n' "ratio reverse / forward rate" "$(ratio "$(per_s "$T_REV" "$BACKLOG_REV")" "$(per_s "$T_FWD" "$BACKLOG_FWD")")"
printf '| %-62s | %13s ms |\n' "cutover lock held (manual cutover, window opened)" "${LOCK_CUT_MS:--}"
printf '| %-62s | %13s ms |\n' "revert lock held" "${LOCK_REV_MS:--}"
echo
echo "backlogs: forward $BACKLOG_FWD; reverse $BACKLOG_REV (+1 marker row each)"
} | tee ${OUT:+"$OUT"}
