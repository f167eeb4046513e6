#!/usr/bin/env python3
"""CPU seconds of a migration, by kind of process: the server's processes (children of the
postmaster PM) and pgrepart's (processes whose command line holds BIN), sampled from /proc every
50 ms until the file STOP exists; each second of CPU is counted under what the process was doing
then (its title: COPY, walsender, ANALYZE...).

    bench/cpu.py PM BIN STOP
"""
import collections
import os
import re
import sys
import time

pm, binary, stop = sys.argv[1], sys.argv[2], sys.argv[3]
tick = os.sysconf("SC_CLK_TCK")


def kind(title):
    if binary in title:
        return "pgrepart"
    if "walsender" in title:
        return "walsender (decoding)"
    words = title.split()
    if len(words) < 2 or words[0] != "postgres:":
        return "postmaster"
    if len(words) < 5:  # checkpointer, walwriter, autovacuum launcher...
        return words[1]
    if words[1] in ("autovacuum", "parallel", "logical", "background"):
        return " ".join(words[1:3])
    # "postgres: USER DB HOST(PORT) ACTIVITY [waiting]"
    return "backend: " + " ".join(w for w in words[4:] if w != "waiting")


last, by_kind = {}, collections.Counter()
while not os.path.exists(stop):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[1] != pm and binary not in title:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        key = (pid, fields[19])  # the pid and its start time: a pid reused is another process
        if key in last:
            by_kind[kind(title)] += cpu - last[key]
        last[key] = cpu
    time.sleep(0.05)
total = sum(by_kind.values())
print(f"CPU seconds, total {total:.2f}: " + ", ".join(
    f"{k} {v:.2f}" for k, v in by_kind.most_common() if v >= 0.01))
