#!/usr/bin/env python3
"""Runs a command and writes its start, end, wall time, exit code and peak
resident memory as JSON.

    timed.py OUT.json [--stamp FILE] -- COMMAND ARGS...

Peak memory is VmHWM from /proc/PID/status, polled while the command runs:
the kernel's ru_maxrss would also count the interpreter that forked it.
With --stamp, every line the command writes to stderr is passed through and
also written to FILE prefixed with the time it arrived (pg_partman reports
its batches only as NOTICEs)."""
import json
import os
import subprocess
import sys
import threading
import time


def poll_hwm(pid, peak, done):
    path = f"/proc/{pid}/status"
    while not done.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        done.wait(0.05)


def main():
    args = sys.argv[1:]
    out = args.pop(0)
    stamp = None
    if args and args[0] == "--stamp":
        args.pop(0)
        stamp = args.pop(0)
    if args and args[0] == "--":
        args.pop(0)
    start = time.time()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE if stamp else None)
    peak, done = [0], threading.Event()
    poller = threading.Thread(target=poll_hwm, args=(proc.pid, peak, done), daemon=True)
    poller.start()
    if stamp:
        with open(stamp, "w") as f:
            for line in proc.stderr:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
                f.write(f"{time.time():.6f} {line.decode(errors='replace').rstrip()}\n")
                f.flush()
    rc = proc.wait()
    end = time.time()
    done.set()
    poller.join()
    with open(out, "w") as f:
        json.dump({"start": start, "end": end, "wall_s": end - start, "rc": rc,
                   "peak_rss_kb": peak[0] or None}, f)
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
