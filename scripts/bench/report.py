#!/usr/bin/env python3
"""Turns the raw measurements scripts/bench.sh left in its directory into
the printed table and the JSON file.

    report.py report DIR JSON_PATH   # print the tables, write the JSON
    report.py traffic-wall DIR       # seconds the longest run with traffic took ("" = none ran)

DIR/c/NN-NAME/ holds one contender: meta (key=value lines), timed.json (wall
time, peak memory), and as the kind has them batches.tsv and events.tsv (the
tool's control tables), migrate.log (its stderr), batch_ms and batch_rows
(psql's timing of each id-range batch and its rows), notices (pg_partman's
batch NOTICEs with their arrival times) and traffic/ (pgbench's
per-transaction logs)."""
import datetime
import glob
import json
import math
import os
import re
import statistics
import sys


def read_kv(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    out[k] = v
    return out


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def percentile(sorted_vals, p):
    """Nearest rank."""
    if not sorted_vals:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def tenths(batches):
    """Milliseconds per 1,000 rows of the batches ((rows, ms) in order) that
    moved the first and the last tenth of the rows. Per row rather than per
    batch: the tool's batch size changes as it tunes itself."""
    batches = [(r, ms) for r, ms in batches if r > 0]
    if len(batches) < 2:
        return None, None, None

    def tenth(bs):
        want, rows, ms = sum(r for r, _ in batches) / 10, 0, 0.0
        for r, t in bs:
            rows, ms = rows + r, ms + t
            if rows >= want:
                break
        return ms / rows * 1000
    first, last = tenth(batches), tenth(reversed(batches))
    return first, last, (last / first if first > 0 else None)


def tool_figures(d):
    """Batches of the main pass (those started before the first sweep) and
    the strong-lock transactions, from the control tables."""
    batches, events = [], []
    if os.path.exists(f"{d}/batches.tsv"):
        with open(f"{d}/batches.tsv") as f:
            for line in f:
                no, rows, start, end = line.rstrip("\n").split("\t")
                batches.append((int(no), int(rows), float(start), float(end)))
    if os.path.exists(f"{d}/events.tsv"):
        with open(f"{d}/events.tsv") as f:
            for line in f:
                at, kind, detail = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                events.append((float(at), kind, detail))
    sweep_at = min((at for at, kind, _ in events if kind == "sweep"), default=math.inf)
    main = [b for b in batches if b[2] < sweep_at]
    out = {
        "batches": len(main),
        "sweep_batches": len(batches) - len(main),
        "rows_moved": sum(b[1] for b in batches),
        "batch_rows_ms": [(b[1], (b[3] - b[2]) * 1000) for b in main],
        "copy_s": (max(b[3] for b in main) - min(b[2] for b in main)) if main else None,
        "mean_batch_rows": statistics.mean(b[1] for b in main) if main else None,
        "held": {},
    }
    for at, kind, detail in events:
        m = re.match(r"(\w+): ([\d.]+) ms(?: \(its LOCK waited ([\d.]+) ms\))?", detail)
        if kind == "held" and m:
            ms = float(m.group(2))
            wait = float(m.group(3)) if m.group(3) else 0.0
            # Recorded just after the commit; the locks were held for the ms
            # before, and requested (the application queueing behind the
            # request) for the wait before that.
            out["held"][m.group(1)] = {"ms": ms, "lock_wait_ms": wait, "from": at - (ms + wait) / 1000, "to": at}
    # The latency budget's baseline and changes of course, in seconds from
    # the first batch (the baseline's before it).
    t0 = min((b[2] for b in batches), default=None)
    out["latency_course"] = [(round(at - t0, 1) if t0 else None, detail)
                             for at, kind, detail in events if kind == "latency"]
    out["course_t0"] = t0
    out["swapped_at"] = min((at for at, kind, _ in events if kind == "swapped"), default=None)
    # Sync builds its non-unique indexes after the backfill and advances to
    # 'backfilled' once they (and an ANALYZE) are done.
    done = min((at for at, kind, _ in events if kind in ("backfilled", "verify")), default=None)
    if batches and done is not None:
        out["index_build_s"] = done - max(b[3] for b in batches)
    if os.path.exists(f"{d}/migrate.log"):
        with open(f"{d}/migrate.log", errors="replace") as f:
            m = re.search(r"partition indexes built.*?secs=([\d.]+)", f.read())
        if m:
            out["index_build_log_s"] = float(m.group(1))
    return out


def partman_batches(d, start):
    """(rows, ms) of each batch from the arrival of its 'Batch: N, Rows moved: M' NOTICE."""
    out, prev = [], start
    if os.path.exists(f"{d}/notices"):
        with open(f"{d}/notices") as f:
            for line in f:
                t, _, text = line.partition(" ")
                m = re.search(r"Batch:.*Rows moved: (\d+)", text)
                if m:
                    out.append((int(m.group(1)), (float(t) - prev) * 1000))
                    prev = float(t)
    return out


def traffic(d, window, swap=None, course_t0=None):
    """Latencies (from the scheduled start, as pgbench logs them under -R) of
    the transactions that finished inside the window, and the worst one that
    overlapped the swap's locks; with course_t0 (a budgeted run's first
    batch), the same without lag for each 3 seconds from it, to be read
    beside the run's latency course."""
    lines = []
    for path in glob.glob(f"{d}/traffic/log*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6:
                    continue
                end = int(p[4]) + int(p[5]) / 1e6
                lag = int(p[6]) / 1000 if len(p) > 6 and p[6].isdigit() else 0.0
                if p[2].isdigit():
                    lines.append((end, int(p[2]) / 1000, int(p[3]), False, lag))
                else:   # "failed" (or "skipped")
                    lines.append((end, None, int(p[3]), True, lag))
    lo, hi = window
    inside = [x for x in lines if lo <= x[0] <= hi]
    lat = sorted(x[1] for x in inside if not x[3])
    # Without the schedule lag: the time the server took, less the time
    # pgbench itself waited for a CPU.
    service = sorted(x[1] - x[4] for x in inside if not x[3])
    aborted = errors = summary_failed = 0
    out_path = f"{d}/traffic/pgbench.out"
    if os.path.exists(out_path):
        with open(out_path) as f:
            for line in f:
                if re.search(r"client \d+ aborted", line):
                    aborted += 1
                if "pgbench exited with an error" in line:
                    errors += 1
                m = re.match(r"number of failed transactions: (\d+)", line)
                if m:
                    summary_failed += int(m.group(1))
    res = {
        "window_s": hi - lo,
        "transactions": len(inside),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else None,
        "p50_without_lag_ms": percentile(service, 50),
        "p99_without_lag_ms": percentile(service, 99),
        "failed": sum(1 for x in inside if x[3]),
        "failed_whole_run": summary_failed,
        "clients_aborted": aborted,
        "pgbench_errors": errors,
    }
    by_script = {}
    for name, no in (("insert", 0), ("update", 1), ("select", 2)):
        s = sorted(x[1] for x in inside if x[2] == no and not x[3])
        sv = sorted(x[1] - x[4] for x in inside if x[2] == no and not x[3])
        by_script[name] = {"p50_ms": percentile(s, 50), "p99_ms": percentile(s, 99),
                           "p99_without_lag_ms": percentile(sv, 99), "n": len(s)}
    res["by_statement"] = by_script
    if course_t0 is not None:
        course = []
        t = course_t0
        while t < hi:
            sv = sorted(x[1] - x[4] for x in inside if not x[3] and t <= x[0] < t + 3)
            if sv:
                course.append((round(t + 3 - course_t0, 1), len(sv), percentile(sv, 99),
                               round(statistics.mean(sv), 3)))
            t += 3
        res["course_without_lag"] = course
    res["waits"] = waits(f"{d}/traffic/waits", window)
    for what, h in (swap or {}).items():
        # A transaction overlapped the locks if it ended after they were
        # taken and started (was scheduled) before they were released.
        hit = [x for x in lines if not x[3] and x[0] >= h["from"] and x[0] - x[1] / 1000 <= h["to"]]
        res[f"{what}_window"] = {
            "held_ms": h["ms"],
            "lock_wait_ms": h.get("lock_wait_ms"),
            "transactions": len(hit),
            "worst_latency_ms": max((x[1] for x in hit), default=None),
        }
    return res


# Wait events of the application's active statements, in classes.
WAIT_CLASSES = (
    ("cpu", "running (no wait event)"),
    ("wal", "WAL: write, flush, insert"),
    ("locks", "row and table locks"),
    ("data_io", "data file I/O"),
    ("other", "other"),
)


def wait_class(kind, event):
    if not kind:
        return "cpu"
    if event.startswith("WAL"):
        return "wal"
    if kind == "Lock":
        return "locks"
    if kind == "IO" and event.startswith("DataFile"):
        return "data_io"
    return "other"


def waits(path, window):
    """Shares of the samples of active application statements (taken every
    10 ms inside the window) by what they were waiting on."""
    if not os.path.exists(path):
        return None
    lo, hi = window
    counts = {k: 0 for k, _ in WAIT_CLASSES}
    events = {}
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("|")
            if len(p) < 4 or not re.fullmatch(r"[0-9.]+", p[0]) or not lo <= float(p[0]) <= hi:
                continue
            k = wait_class(p[1], p[2])
            counts[k] += 1
            if p[1]:
                events[f"{p[1]}:{p[2]}"] = events.get(f"{p[1]}:{p[2]}", 0) + 1
    n = sum(counts.values())
    return {
        "samples": n,
        "shares": {k: (v / n if n else None) for k, v in counts.items()},
        "top_events": dict(sorted(events.items(), key=lambda kv: -kv[1])[:5]),
    }


def contenders(base):
    out = []
    for d in sorted(glob.glob(f"{base}/c/*")):
        meta = read_kv(f"{d}/meta")
        timed = {}
        if os.path.exists(f"{d}/timed.json"):
            with open(f"{d}/timed.json") as f:
                timed = json.load(f)
        c = {
            "name": meta.get("name"),
            "label": meta.get("label"),
            "kind": meta.get("kind"),
            "status": meta.get("status", "failed"),
            "note": meta.get("note"),
            "wall_s": timed.get("wall_s"),
            "wal_bytes": int(meta["wal_bytes"]) if meta.get("wal_bytes") else None,
            "peak_rss_kb": timed.get("peak_rss_kb") if meta.get("kind") == "tool" else None,
            "rows": int(meta["rows"]) if meta.get("rows") else None,
            "partitions": int(meta["partitions"]) if meta.get("partitions") else None,
            "load_start": num(meta.get("load_start")),
            "load_end": num(meta.get("load_end")),
            "traffic": meta.get("traffic") == "yes",
        }
        if meta.get("binary"):
            c["binary"] = meta["binary"]
        bs = []
        if c["kind"] == "tool" and c["status"] == "ok":
            t = tool_figures(d)
            bs = t.pop("batch_rows_ms")
            c.update(t)
            # What the user waits for: from the command's start to the
            # swap's commit, when the table under its name is partitioned.
            if t.get("swapped_at") and timed.get("start"):
                c["to_swap_s"] = t["swapped_at"] - timed["start"]
            c["method"] = meta.get("method")
            c["latency_budget"] = meta.get("latency_budget") or None
            c["partial"] = meta.get("partial") == "yes"
            c["partitioned"] = meta.get("partitioned") == "t"
        elif c["kind"] == "idrange":
            read = lambda name: open(f"{d}/{name}").read().split() if os.path.exists(f"{d}/{name}") else []
            ms, rows = [float(x) for x in read("batch_ms")], [int(x) for x in read("batch_rows")]
            bs = list(zip(rows, ms)) if len(rows) == len(ms) else []
            c["batches"] = len(ms)
            c["copy_s"] = c["wall_s"]
        elif c["kind"] == "partman" and c["status"] == "ok":
            bs = partman_batches(d, timed.get("start", 0))
            c["batches"] = len(bs)
            c["copy_s"] = c["wall_s"]
            c["partman_version"] = meta.get("partman_version")
            c["left_in_default"] = int(meta.get("left_in_default") or 0)
        elif c["kind"] in ("single", "singlemove", "limitloop", "serverloop"):
            c["copy_s"] = c["wall_s"]
        first, last, ratio = tenths(bs)
        c["ms_per_1k_rows_first_tenth"], c["ms_per_1k_rows_last_tenth"], c["ms_per_1k_rows_ratio"] = first, last, ratio
        if c.get("copy_s") and c.get("rows"):
            c["rows_per_s"] = c["rows"] / c["copy_s"]
        if meta.get("traffic") == "yes" and c["status"] == "ok":
            if c["kind"] in ("baseline", "view"):
                window = (float(meta["window_start"]), float(meta["window_end"]))
            else:
                window = (timed["start"], timed["end"])
            c["application"] = traffic(d, window, c.get("held"), c.get("course_t0") if c.get("latency_course") else None)
        out.append(c)
    # The faster run of the limit: ratios then err against the contenders.
    limits = [c for c in out if c["kind"] == "single" and c["status"] == "ok" and c.get("copy_s")]
    limit = min(limits, key=lambda c: c["copy_s"]) if limits else None
    singlemove = next((c for c in out if c["kind"] == "singlemove" and c["status"] == "ok" and c.get("copy_s")), None)
    for c in out:
        # Speeds relative to the limit: 1.00 is as fast, above 1 faster.
        if limit and c.get("copy_s"):
            c["x_limit"] = limit["copy_s"] / c["copy_s"]
        if limit and c.get("to_swap_s"):
            c["to_swap_x_limit"] = limit["wall_s"] / c["to_swap_s"]
        # The move's own limit: a copy and a delete in one statement.
        if singlemove and c.get("copy_s") and c["kind"] == "tool":
            c["x_single_move"] = singlemove["copy_s"] / c["copy_s"]
        if limit and c.get("wall_s") and c["kind"] not in ("baseline", "view") and c["status"] == "ok":
            c["wall_x_limit"] = limit["wall_s"] / c["wall_s"]
    return out


def best(cs, method):
    """The fastest quiet run of the method, by the time its rows took to move."""
    runs = [c for c in cs if c["kind"] == "tool" and c["status"] == "ok" and c.get("copy_s")
            and re.fullmatch(rf"{method}-(default|\d+)", c["name"] or "")]
    return min(runs, key=lambda c: c["copy_s"]) if runs else None


def f(v, fmt="{:.1f}", na="n/a"):
    return na if v is None else fmt.format(v)


def print_tables(run, cs):
    best_names = {b["name"] for b in (best(cs, "move"), best(cs, "sync")) if b}
    print()
    print(f"Repartitioning {int(run['rows']):,} rows ({int(run['table_bytes']) / 2**20:,.0f} MB with indexes) "
          f"into monthly partitions; PostgreSQL {run['server_version']}, {run['cpus']} CPUs; migrate {run['migrate_commit']}")
    print("wall s: the whole command (the tool: apply, with its index builds, analyze, swap and drop);"
          " to swap s: the tool, from its start to the swap's commit (the table partitioned under its name);"
          " × 1-stmt move: the single-statement move's copy s over the contender's (the move's own limit);"
          " copy s: the rows' part (the tool: its first batch to its last, main pass; sync: the backfill);"
          " × limit and wall × limit: speed relative to the physical limit, the faster of its two runs' copy s (wall s) over the"
          " contender's, 1.00 as fast, above 1 faster; ms/1k: the batches' own time per 1,000 rows"
          " in the first and the last tenth of the rows; index s: sync's deferred index build after"
          " the backfill; * the best batch size")
    print()
    head = ["contender", "wall s", "to swap s", "to swap × limit", "copy s", "rows/s", "× limit", "× 1-stmt move", "wall × limit", "batches",
            "ms/1k first 10%", "ms/1k last 10%", "last/first", "index s", "WAL MB", "RSS MB", "swap held ms"]
    rows = []
    for c in cs:
        if c["kind"] in ("baseline", "view"):
            continue
        label = c["label"] + (" *" if c["name"] in best_names else "")
        if c["status"] != "ok":
            rows.append([label, c["note"] or "failed"])
            continue
        rows.append([
            label, f(c["wall_s"]), f(c.get("to_swap_s")), f(c.get("to_swap_x_limit"), "{:.2f}"),
            f(c.get("copy_s")), f(c.get("rows_per_s"), "{:,.0f}"),
            f(c.get("x_limit"), "{:.2f}"), f(c.get("x_single_move"), "{:.2f}"), f(c.get("wall_x_limit"), "{:.2f}"),
            f(c.get("batches"), "{:d}"),
            f(c["ms_per_1k_rows_first_tenth"], "{:.2f}"), f(c["ms_per_1k_rows_last_tenth"], "{:.2f}"),
            f(c["ms_per_1k_rows_ratio"], "{:.2f}"),
            f(c.get("index_build_s") if c.get("method") == "sync" else None),
            f(c["wal_bytes"] / 2**20 if c["wal_bytes"] is not None else None, "{:,.0f}"),
            f(c["peak_rss_kb"] / 1024 if c["peak_rss_kb"] else None, "{:.1f}"),
            f(c.get("held", {}).get("swap", {}).get("ms")),
        ])
    table(head, rows)
    print("WAL of the runs with traffic includes the application's writes. pg_partman's batches are months;"
          " its first is a partial one.")
    loads = [c[k] for c in cs for k in ("load_start", "load_end") if c.get(k) is not None]
    if loads:
        print(f"Load average (1 min) around the contenders: {min(loads):.2f} to {max(loads):.2f}"
              f" on {run['cpus']} CPUs; well above 2 means other work shared the machine.")

    periods = [c for c in cs if c["kind"] == "baseline" or c["name"].endswith("-traffic")]
    if periods:
        print()
        print(f"The application: pgbench -M prepared, 4 clients at {run['rate']} transactions/s, "
              f"each connection {run.get('connection_life', '5')} s long "
              "(a single-row insert, an update by id, a read by id), latency from the scheduled start;"
              " failed: transactions that failed, aborted: clients that gave up")
        print()
        base = next((c.get("application") for c in cs if c["kind"] == "baseline" and c.get("application")), None)
        head = ["period", "secs", "txns", "p50 ms", "p99 ms", "max ms", "p50 ×base", "p99 ×base",
                "p99 w/o lag ms", "w/o lag ×base", "insert", "update", "select", "failed", "aborted"]
        rows = []
        for c in periods:
            a = c.get("application")
            if not a:
                rows.append([c["label"], c["note"] or "failed"])
                continue
            ratio = lambda k: (a[k] / base[k]) if base and a[k] and base[k] else None
            kind = lambda k: f(a["by_statement"][k]["p99_without_lag_ms"], "{:.2f}")
            rows.append([c["label"], f(a["window_s"]), f(a["transactions"], "{:d}"), f(a["p50_ms"], "{:.2f}"),
                         f(a["p99_ms"], "{:.2f}"), f(a["max_ms"], "{:.1f}"), f(ratio("p50_ms"), "{:.2f}"),
                         f(ratio("p99_ms"), "{:.2f}"), f(a["p99_without_lag_ms"], "{:.2f}"),
                         f(ratio("p99_without_lag_ms"), "{:.2f}"), kind("insert"), kind("update"), kind("select"),
                         f(max(a["failed"], a["failed_whole_run"]), "{:d}"),
                         f(a["clients_aborted"], "{:d}")])
        table(head, rows)
        print("insert, update, select: each statement's p99 without lag, ms")

        budgets = [c for c in periods if c.get("method") and c["kind"] == "tool"]
        if base and any(c.get("latency_budget") for c in budgets):
            print()
            print("The latency budget (throttle.latency): the application's p99 as pgbench measures it, against the"
                  " baseline period's, and the tool's speed; target: with 2x, p99 within 2x of the baseline while"
                  " the move runs at 0.3x the limit or faster")
            print()
            head = ["method", "budget", "p99 ms", "p99 ×base", "p99 w/o lag ms", "w/o lag ×base", "rows/s",
                    "× limit", "to swap s", "note"]
            rows = []
            for c in sorted(budgets, key=lambda c: (c["method"], c.get("latency_budget") or "~")):
                a = c.get("application")
                if not a:
                    continue
                ratio = lambda k: (a[k] / base[k]) if a[k] and base[k] else None
                rows.append([c["method"], c.get("latency_budget") or "none", f(a["p99_ms"], "{:.2f}"),
                             f(ratio("p99_ms"), "{:.2f}"), f(a["p99_without_lag_ms"], "{:.2f}"),
                             f(ratio("p99_without_lag_ms"), "{:.2f}"), f(c.get("rows_per_s"), "{:,.0f}"),
                             f(c.get("x_limit"), "{:.2f}"), f(c.get("to_swap_s")),
                             (c.get("note") or "") if c.get("partial") else ""])
            table(head, rows)

        print()
        print("What the application's statements waited on: shares of the samples of its active statements"
              " (pg_stat_activity every 10 ms)")
        print()
        head = ["period", "samples"] + [label for _, label in WAIT_CLASSES] + ["most sampled waits"]
        rows = []
        for c in periods:
            w = (c.get("application") or {}).get("waits")
            if not w:
                continue
            top = ", ".join(f"{k} {v}" for k, v in list(w["top_events"].items())[:3])
            rows.append([c["label"], f(w["samples"], "{:d}")]
                        + [f(100 * w["shares"][k] if w["shares"][k] is not None else None, "{:.0f}%")
                           for k, _ in WAIT_CLASSES] + [top or "-"])
        table(head, rows)

    print()
    print("The swap (and the move's route): how long the LOCK statement waited for its strong locks (the"
          " application's statements queue behind it meanwhile), how long they were held, and the worst"
          " latency of the application's transactions that overlapped either")
    print()
    head = ["run", "lock", "lock wait ms", "held ms", "overlapping txns", "worst latency ms"]
    rows = []
    for c in cs:
        a = c.get("application") or {}
        for what in ("route", "swap"):
            h = c.get("held", {}).get(what)
            if not h or (what == "route" and not a):
                continue
            w = a.get(f"{what}_window", {})
            rows.append([c["label"], what, f(h.get("lock_wait_ms")), f(h["ms"]), f(w.get("transactions"), "{:d}", "-"),
                         f(w.get("worst_latency_ms"), "{:.1f}", "none" if w else "-")])
    table(head, rows)
    print()
    counts = {c["label"]: c["partitions"] for c in cs if c.get("partitions")}
    if len(set(counts.values())) > 1:
        print("warning: the contenders' partition counts differ: " +
              ", ".join(f"{k}: {v}" for k, v in counts.items()))
        print()


def table(head, rows):
    widths = [len(h) for h in head]
    for r in rows:
        if len(r) == len(head):
            widths = [max(w, len(str(x))) for w, x in zip(widths, r)]
    line = lambda r: "  ".join(str(x).ljust(widths[0]) if i == 0 else str(x).rjust(widths[i]) for i, x in enumerate(r))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r) if len(r) == len(head) else f"{str(r[0]).ljust(widths[0])}  {r[1]}")


def rounded(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


def main():
    cmd, base = sys.argv[1], sys.argv[2]
    if cmd == "traffic-wall":
        walls = [c["wall_s"] for c in contenders(base) if c["kind"] == "tool" and c["traffic"] and c["wall_s"]]
        print(f"{max(1.0, *walls):.1f}" if walls else "")
        return
    run = read_kv(f"{base}/run.meta")
    cs = contenders(base)
    print_tables(run, cs)
    doc = {
        "version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "postgres": run.get("postgres"),
        "server_version": run.get("server_version"),
        "rows": int(run["rows"]),
        "table_bytes": int(run["table_bytes"]),
        "heap_bytes": int(run["heap_bytes"]),
        "migrate_commit": run.get("migrate_commit"),
        "migrate_version": run.get("migrate_version"),
        "cpus": int(run["cpus"]),
        "memory_kb": int(run["memory_kb"]),
        "id_range_step": int(run["id_step"]),
        "traffic_rate": int(run["rate"]),
        "traffic_connection_life_s": int(run.get("connection_life", 5)),
        "batch_sizes_tried": run["sizes"].split(),
        "only": run.get("only") or None,
        "migrate_bin": run.get("migrate_bin") or None,
        "figures": {
            "x_limit": "the physical limit's copy_s (the faster of its two runs) over the contender's: 1 as fast, above 1 faster",
            "wall_x_limit": "the physical limit's wall_s over the contender's",
            "to_swap_s": "the tool: from the command's start to the swap's commit (the table under its name partitioned)",
            "to_swap_x_limit": "the physical limit's wall_s over the contender's to_swap_s",
            "x_single_move": "the single-statement move's copy_s over the contender's copy_s (the move method's own limit)",
            "ms_per_1k_rows_first_tenth": "the batches' own time per 1,000 rows, over those that moved the first tenth of the rows (last_tenth likewise)",
            "index_build_s": "sync: from the last backfill batch's end to the phase 'backfilled' (index builds and ANALYZE)",
            "index_build_log_s": "sync: the tool's 'partition indexes built' log line",
        },
        "best": {m: (b["name"] if b else None) for m, b in (("move", best(cs, "move")), ("sync", best(cs, "sync")))},
        "bench_wall_s": int(run["bench_wall_s"]),
        "contenders": cs,
    }
    path = sys.argv[3]
    with open(path, "w") as fh:
        json.dump(rounded(doc), fh, indent=2)
        fh.write("\n")
    print(f"figures written to {path}; the benchmark took {int(run['bench_wall_s']) // 60} min {int(run['bench_wall_s']) % 60} s")


if __name__ == "__main__":
    main()
