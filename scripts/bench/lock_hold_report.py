#!/usr/bin/env python3
"""Turns what scripts/lock-hold.sh left in its runs directory into tables
and, given a path, a JSON file.

    lock_hold_report.py RUNS_DIR [JSON_PATH]

Each RUNS_DIR/NN-METHOD-RTT-REP/ holds meta (key=value lines), events.tsv
(id, epoch of `at`, detail of the tool's 'held' events) and tx.* (pgbench's
per-transaction logs: client, transaction, latency us, script, epoch s,
epoch us, schedule lag us)."""
import datetime
import glob
import json
import os
import re
import statistics
import sys

# Slack on each side of a locked section's window: the event's time and
# pgbench's are taken by different processes, a few scheduler ticks apart.
MARGIN_MS = 2.0

HELD = re.compile(r"^(.*?): ([0-9.]+) ms(?: \(its LOCK waited ([0-9.]+) ms\))?")


def read_meta(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def transactions(run):
    """(start, end, latency ms, lag ms) of every committed transaction, and
    the number that failed. Under -R the latency counts from the scheduled
    start, so it includes waiting behind the client's previous transaction:
    what the application sees."""
    out, failed = [], 0
    for path in glob.glob(os.path.join(run, "tx.*")):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6:
                    continue
                if not p[2].isdigit():
                    failed += 1
                    continue
                end = int(p[4]) + int(p[5]) / 1e6
                lat = int(p[2]) / 1000
                lag = int(p[6]) / 1000 if len(p) > 6 and p[6].isdigit() else 0.0
                out.append((end - lat / 1000, end, lat, lag))
    out.sort(key=lambda x: x[1])
    return out, failed


def sections(run):
    out, seen = [], {}
    path = os.path.join(run, "events.tsv")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 3:
                continue
            m = HELD.match(p[2])
            if not m:
                continue
            name = m.group(1)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}#{seen[name]}"
            out.append({"section": name, "at": float(p[1]), "held_ms": float(m.group(2)),
                        "lock_wait_ms": num(m.group(3)), "detail": p[2]})
    return out


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*)$")
COMMITTED = re.compile(r'runner: committed phase="([^"]+)"')


def tool_log(run):
    """(epoch, message) of every line of the tool's log, and the times its
    locked sections committed, as the tool saw them."""
    lines, commits = [], []
    path = os.path.join(run, "migrate.log")
    if not os.path.exists(path):
        return lines, commits
    with open(path) as f:
        for line in f:
            m = LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f")
            t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
            lines.append((t, m.group(2)))
            c = COMMITTED.search(m.group(2))
            if c:
                commits.append((c.group(1), t))
    return lines, commits


def proxy_requests(run):
    """Per connection through the proxy, (time, tag) of every chunk that
    came from the tool; None when the run went direct."""
    path = os.path.join(run, "proxy.trace")
    if not os.path.exists(path):
        return None
    out = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 4 and p[1] == "c":
                out.setdefault(p[0], []).append((float(p[2]), p[4].split(",") if len(p) > 4 else []))
    return out


def count_requests(requests, t_end, locked):
    """Requests a section sent while it held its locks: those after its
    LOCK (or, without one, its BEGIN) up to and including its COMMIT, the
    last COMMIT before the tool logged the section's commit. Each waits
    for its reply, so each is one round trip inside the hold; a chunk of
    nothing but Close and Sync is not awaited (the driver closes a dropped
    statement in passing) and does not count."""
    opener = "Q:LOCK_TABLE" if locked else "Q:BEGIN"
    best = None
    for chunks in requests.values():
        ends = [i for i, (t, tags) in enumerate(chunks) if t <= t_end and "Q:COMMIT" in tags]
        if not ends:
            continue
        e = ends[-1]
        b = next((i for i in range(e, -1, -1) if opener in chunks[i][1]), None)
        if b is None:
            continue
        n = sum(1 for _, tags in chunks[b + 1:e + 1] if not set(tags) <= {"C", "S"})
        if best is None or chunks[e][0] > best[0]:
            best = (chunks[e][0], n)
    return best[1] if best else None


def analyse(run):
    meta = read_meta(os.path.join(run, "meta"))
    txs, failed = transactions(run)
    rtt = num(meta.get("rtt_measured_ms")) or num(meta.get("rtt_ms")) or 0.0
    start, end = float(meta["start"]), float(meta["end"])
    secs = sections(run)
    log, commits = tool_log(run)
    # The tool logs each commit the moment COMMIT returns; the event row is
    # inserted after that, a round trip or two later (its INSERT is
    # prepared first), so the log places the window better when it has
    # the same sections in the same order.
    from_log = len(commits) == len(secs) and all(
        c[0] == s["section"].split("#")[0] for c, s in zip(commits, secs))
    requests = proxy_requests(run)
    windows = []
    for i, s in enumerate(secs):
        s["requests"] = None
        if requests is not None and from_log:
            s["requests"] = count_requests(requests, commits[i][1], s["lock_wait_ms"] is not None)
        # What the round trips do not explain: the server's own work, and
        # the tool's and the proxy's time between a reply and the next request.
        s["beyond_round_trips_ms"] = (None if s["requests"] is None
                                      else round(s["held_ms"] - s["requests"] * rtt, 1))
        # The tool times the hold from the LOCK's reply to COMMIT's reply;
        # on the server both happened about half a round trip earlier. The
        # LOCK's own wait counts too: the application queues behind it.
        if from_log:
            end_ = commits[i][1] - rtt / 2000
            s["window_from"] = "log"
        else:
            end_ = s["at"] - 2 * rtt / 1000
            s["window_from"] = "event"
        lo = end_ - (s["held_ms"] + (s["lock_wait_ms"] or 0) + MARGIN_MS) / 1000
        hi = end_ + MARGIN_MS / 1000 if from_log else s["at"] + MARGIN_MS / 1000
        windows.append((lo, hi))
        hit = [t for t in txs if t[1] >= lo and t[0] <= hi]
        s["window_ms"] = round((hi - lo) * 1000, 2)
        s["app_transactions"] = len(hit)
        s["app_longest_ms"] = max((t[2] for t in hit), default=None)
        s["app_longest_without_lag_ms"] = max((t[2] - t[3] for t in hit), default=None)
        del s["at"]
    # The worst wait that no locked section explains, with what the tool
    # had last logged when it ended.
    outside = [t for t in txs if start <= t[1] <= end
               and not any(t[1] >= lo and t[0] <= hi for lo, hi in windows)]
    worst_out = max(outside, key=lambda t: t[2], default=None)
    worst_outside = None
    if worst_out:
        said = [m for (lt, m) in log if lt <= worst_out[1]]
        worst_outside = {"latency_ms": worst_out[2], "started_s": round(worst_out[0] - start, 3),
                         "ended_s": round(worst_out[1] - start, 3),
                         "tool_last_logged": said[-1] if said else None}
    during = [t[2] for t in txs if start <= t[1] <= end]
    before = [t[2] for t in txs if t[1] < start]
    return {
        "method": meta["method"], "rtt_ms": num(meta["rtt_ms"]), "rep": int(meta["rep"]),
        "rtt_measured_ms": num(meta.get("rtt_measured_ms")), "rows": int(meta["rows"]),
        "status": meta["status"], "wall_s": round(end - start, 2), "load": meta.get("load"),
        "sections": secs,
        "application": {
            "transactions": len(during), "failed": failed,
            "p50_ms": percentile(during, 50), "p99_ms": percentile(during, 99),
            "max_ms": max(during, default=None),
            "before_tool_p99_ms": percentile(before, 99),
            "worst_outside_sections": worst_outside,
        },
    }


def f(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    runs_dir = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    runs = [analyse(d) for d in sorted(glob.glob(os.path.join(runs_dir, "*"))) if os.path.isdir(d)]

    print("\nEach run: the locked sections in order; the application's longest transaction that overlapped")
    print(f"the section's window on the server (its LOCK's wait + held, {MARGIN_MS:g} ms slack each side);")
    print("through the proxy, the requests sent inside the hold, and the held time beyond requests x RTT")
    print(f"{'method':7} {'rtt':>4} {'meas':>5} {'rep':>3} {'section':14} {'held ms':>8} {'LOCK wait':>9} "
          f"{'app longest':>11} {'app tx':>6} {'requests':>8} {'beyond':>7}")
    for r in runs:
        for s in r["sections"]:
            print(f"{r['method']:7} {f(r['rtt_ms'], 0):>4} {f(r['rtt_measured_ms'], 2):>5} {r['rep']:>3} "
                  f"{s['section']:14} {f(s['held_ms']):>8} {f(s['lock_wait_ms']):>9} "
                  f"{f(s['app_longest_ms']):>11} {s['app_transactions']:>6} "
                  f"{'-' if s['requests'] is None else s['requests']:>8} {f(s['beyond_round_trips_ms']):>7}")
        a = r["application"]
        print(f"{r['method']:7} {f(r['rtt_ms'], 0):>4} {'':>5} {r['rep']:>3} {'(whole run)':14} "
              f"wall {r['wall_s']:.1f} s, {r['status']}; application p50 {f(a['p50_ms'])}, p99 {f(a['p99_ms'])}, "
              f"max {f(a['max_ms'])} ms over {a['transactions']} transactions, {a['failed']} failed; "
              f"p99 before the tool {f(a['before_tool_p99_ms'])} ms; load {r['load']}")
        w = a["worst_outside_sections"]
        if w:
            print(f"{'':7} {'':>4} {'':>5} {'':>3} {'(outside)':14} worst {w['latency_ms']:.1f} ms, "
                  f"+{w['started_s']:.2f}..+{w['ended_s']:.2f} s; the tool had last logged: "
                  f"{(w['tool_last_logged'] or '-')[:110]}")

    # Over the repetitions: medians, with the worst in brackets.
    groups = {}
    for r in runs:
        if r["status"] != "ok":
            continue
        for s in r["sections"]:
            groups.setdefault((r["method"], r["rtt_ms"], s["section"]), []).append(s)
    order = []
    for r in runs:
        for s in r["sections"]:
            k = (r["method"], r["rtt_ms"], s["section"])
            if k in groups and k not in order:
                order.append(k)
    order.sort(key=lambda k: (k[0], k[1]))

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    def worst(xs):
        xs = [x for x in xs if x is not None]
        return max(xs) if xs else None

    summary = []
    print("\nOver the repetitions: median [worst]")
    print(f"{'method':7} {'rtt':>4} {'section':14} {'n':>2} {'held ms':>16} {'LOCK wait ms':>14} {'app longest ms':>16} "
          f"{'requests':>8}")
    for k in order:
        g = groups[k]
        row = {"method": k[0], "rtt_ms": k[1], "section": k[2], "runs": len(g),
               "held_ms": med([s["held_ms"] for s in g]), "held_worst_ms": worst([s["held_ms"] for s in g]),
               "lock_wait_ms": med([s["lock_wait_ms"] for s in g]),
               "lock_wait_worst_ms": worst([s["lock_wait_ms"] for s in g]),
               "app_longest_ms": med([s["app_longest_ms"] for s in g]),
               "app_longest_worst_ms": worst([s["app_longest_ms"] for s in g]),
               "requests": med([s["requests"] for s in g])}
        summary.append(row)
        print(f"{k[0]:7} {f(k[1], 0):>4} {k[2]:14} {len(g):>2} "
              f"{f(row['held_ms']) + ' [' + f(row['held_worst_ms']) + ']':>16} "
              f"{f(row['lock_wait_ms']) + ' [' + f(row['lock_wait_worst_ms']) + ']':>14} "
              f"{f(row['app_longest_ms']) + ' [' + f(row['app_longest_worst_ms']) + ']':>16} "
              f"{f(row['requests'], 0) if row['requests'] is not None else '-':>8}")
    apps = {}
    for r in runs:
        if r["status"] == "ok":
            apps.setdefault((r["method"], r["rtt_ms"]), []).append(r["application"])
    print(f"\n{'method':7} {'rtt':>4} {'runs':>4} {'app p99 ms':>16} {'app max ms':>16}")
    app_summary = []
    for (m, rtt), g in sorted(apps.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row = {"method": m, "rtt_ms": rtt, "runs": len(g),
               "p99_ms": med([a["p99_ms"] for a in g]), "p99_worst_ms": worst([a["p99_ms"] for a in g]),
               "max_ms": med([a["max_ms"] for a in g]), "max_worst_ms": worst([a["max_ms"] for a in g])}
        app_summary.append(row)
        print(f"{m:7} {f(rtt, 0):>4} {len(g):>4} {f(row['p99_ms']) + ' [' + f(row['p99_worst_ms']) + ']':>16} "
              f"{f(row['max_ms']) + ' [' + f(row['max_worst_ms']) + ']':>16}")

    # How many round trips a section's hold spans: the extra hold per extra
    # millisecond of measured round trip, against the direct runs.
    rtts = {}
    for r in runs:
        if r["status"] == "ok" and r["rtt_measured_ms"] is not None:
            rtts.setdefault(r["rtt_ms"], []).append(r["rtt_measured_ms"])
    rtt_med = {k: statistics.median(v) for k, v in rtts.items()}
    trips = []
    if 0 in rtt_med and len(rtt_med) > 1:
        print("\nRound trips inside each hold: estimated, (held at RTT x - held direct) / (measured RTT x - measured")
        print("direct), from the medians; and counted, the requests the proxy saw (median)")
        print(f"{'method':7} {'section':14} " + " ".join(f"{'rtt ' + f(x, 0) + ' est':>12} {'counted':>8}"
                                                     for x in sorted(rtt_med) if x))
        base = {(row["method"], row["section"]): row["held_ms"] for row in summary if row["rtt_ms"] == 0}
        for (m, sec), h0 in base.items():
            cells = []
            for x in sorted(rtt_med):
                if not x:
                    continue
                hx = next((row["held_ms"] for row in summary
                           if row["method"] == m and row["section"] == sec and row["rtt_ms"] == x), None)
                d = rtt_med[x] - rtt_med[0]
                est = (hx - h0) / d if hx is not None and d > 0 else None
                counted = next((row["requests"] for row in summary
                                if row["method"] == m and row["section"] == sec and row["rtt_ms"] == x), None)
                trips.append({"method": m, "section": sec, "rtt_ms": x, "round_trips": est,
                              "requests_counted": counted})
                cells.append(f"{f(est):>12} {f(counted, 0) if counted is not None else '-':>8}")
            print(f"{m:7} {sec:14} " + " ".join(cells))
        print("measured RTT (median of psql's SELECT 1): "
              + ", ".join(f"{f(k, 0)} ms -> {v:.3f} ms" for k, v in sorted(rtt_med.items())))

    if out_path:
        with open(out_path, "w") as fh:
            json.dump({"runs": runs, "sections": summary, "application": app_summary,
                       "round_trips": trips, "rtt_measured_ms": rtt_med,
                       "margin_ms": MARGIN_MS}, fh, indent=1)
        print(f"\nJSON written to {out_path}")


if __name__ == "__main__":
    main()
