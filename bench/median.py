#!/usr/bin/env python3
"""median.py -- medians of several presence-bench --json runs, as the Markdown tables of
bench/RESULTS.md.

  median.py RUN.json...                      per (op, backend): median ops/s, p50, p99,
                                             p99.9, max over the runs, and each other
                                             backend's ratio to shm (computed within each
                                             run, then the median of those ratios); then
                                             prune, events and population figures
  median.py --scale LABEL RUN.json... [--scale LABEL RUN.json...]...
                                             the same rows per population, side by side,
                                             with p50 and ops/s ratios to the first group

Only the Python standard library. Percentiles are the harness's own (from merged
histograms); this script never combines percentiles across runs, it takes medians of
each run's figure.
"""
import json
import statistics
import sys


def load(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    return runs


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns < 1000:
        return "%.0f ns" % ns
    if ns < 1e6:
        return "%.3g us" % (ns / 1e3)
    if ns < 1e9:
        return "%.3g ms" % (ns / 1e6)
    return "%.3g s" % (ns / 1e9)


def fmt_rate(v):
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return "%.3g%s" % (v / div, unit)
    return "%.3g" % v


def fx(v):
    return "%.2f" % v if v is not None else "-"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rows_of(runs):
    """Ordered (op, backend) keys as they appear."""
    keys = []
    for r in runs:
        for be, ops in r["results"].items():
            for op in ops:
                if (op, be) not in keys:
                    keys.append((op, be))
    order = {}
    for op, _ in keys:
        order.setdefault(op, len(order))
    bes = []
    for r in runs:
        for be in r["config"]["backends"]:
            if be not in bes:
                bes.append(be)
    return sorted(keys, key=lambda k: (order[k[0]], bes.index(k[1]) if k[1] in bes else 99))


def get(run, be, op, field):
    try:
        return run["results"][be][op][field]
    except KeyError:
        return None


def table(runs):
    print("| op | backend | ops/s | p50 | p99 | p99.9 | max | ops/s vs shm | p50 vs shm | p99 vs shm |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op, be in rows_of(runs):
        f = {k: med(get(r, be, op, k) for r in runs)
             for k in ("throughput", "p50_ns", "p99_ns", "p999_ns", "max_ns")}
        ratios = []
        for k in ("throughput", "p50_ns", "p99_ns"):
            if be == "shm":
                ratios.append("")
                continue
            per = []
            for r in runs:
                a, b = get(r, be, op, k), get(r, "shm", op, k)
                if a and b:
                    per.append(a / b)
            m = med(per)
            ratios.append("x%.3g" % m if m is not None else "-")
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            op, be, fmt_rate(f["throughput"]), fmt_ns(f["p50_ns"]), fmt_ns(f["p99_ns"]),
            fmt_ns(f["p999_ns"]), fmt_ns(f["max_ns"]), *ratios))
    print()
    print("%d runs; medians of each run's figure; ratios computed within each run, then "
          "their median (ops/s below 1 = slower than shm, latency above 1 = slower)." % len(runs))


def extras(runs):
    lines = []
    for be in ("shm", "rwlock", "redis", "redis-pipe"):
        wall = [get(r, be, "prune", "max_ns") for r in runs]
        if not any(wall):
            continue
        cpu = [get(r, be, "prune", "cpu_ns") for r in runs]
        ratio = []
        for r in runs:
            busy, idle = get(r, be, "prune_read", "p99_ns"), get(r, be, "prune_idle_read", "p99_ns")
            if busy and idle:
                ratio.append(busy / idle)
        lines.append("- prune of %s expired (%s): wall %s (runs: %s), caller's CPU %s; readers' "
                     "here_now p99 during it / idle p99 in the same run: x%s (runs: %s)" % (
                         get(runs[0], be, "prune", "removed"), be, fmt_ns(med(wall)),
                         ", ".join(fmt_ns(w) for w in wall), fmt_ns(med(cpu)),
                         "%.2f" % med(ratio) if ratio else "-",
                         ", ".join("%.2f" % x for x in ratio)))
    wk = [get(r, "shm", "events_wakeup", "p50_ns") for r in runs]
    if any(wk):
        raw = [get(r, "shm", "eventfd_pingpong", "p50_ns") for r in runs]
        rel = [get(r, "shm", "eventfd_relay", "p50_ns") for r in runs]
        wk99 = [get(r, "shm", "events_wakeup", "p99_ns") for r in runs]
        raw99 = [get(r, "shm", "eventfd_pingpong", "p99_ns") for r in runs]
        rel99 = [get(r, "shm", "eventfd_relay", "p99_ns") for r in runs]
        q = [a / b for a, b in zip(wk, raw) if a and b]
        q2 = [a / b for a, b in zip(wk, rel) if a and b]
        lines.append("- events wake-up p50 %s (p99 %s); raw eventfd ping-pong p50 %s (p99 %s); "
                     "relayed eventfd p50 %s (p99 %s); wake-up/raw p50 x%s (runs: %s); "
                     "wake-up/relay p50 x%s (runs: %s)" % (
                         fmt_ns(med(wk)), fmt_ns(med(wk99)), fmt_ns(med(raw)),
                         fmt_ns(med(raw99)), fmt_ns(med(rel)), fmt_ns(med(rel99)), fx(med(q)),
                         ", ".join("%.2f" % x for x in q), fx(med(q2)),
                         ", ".join("%.2f" % x for x in q2)))
        fe = [get(r, "shm", "events_wakeup_from_event", "p50_ns") for r in runs]
        if any(fe):
            qf = [a / b for a, b in zip(fe, raw) if a and b]
            lines.append("- events wake-up from the event's own stamp p50 %s; / raw eventfd "
                         "p50 x%s (runs: %s)" % (fmt_ns(med([x for x in fe if x])), fx(med(qf)),
                                                 ", ".join("%.2f" % x for x in qf)))
        fr = [get(r, "shm", "events_flood_read", "throughput") for r in runs]
        prod = [get(r, "shm", "events_flood_write", "produced") for r in runs]
        dl = [get(r, "shm", "events_flood_read", "delivered") for r in runs]
        lap = [get(r, "shm", "events_flood_read", "lapped") for r in runs]
        dr = [get(r, "shm", "events_drain", "throughput") for r in runs]
        lines.append("- events flood: one subscriber read %s events/s while the producer wrote "
                     "(delivered/produced per run: %s; lapped: %s); drain of events written "
                     "ahead: %s events/s" % (
                         fmt_rate(med(fr)),
                         ", ".join("%s/%s" % (d, p) for d, p in zip(dl, prod)),
                         ", ".join(str(x) for x in lap), fmt_rate(med(dr))))
    for line in lines:
        print(line)
    stores = {}
    for r in runs:
        for s in r.get("stores", []):
            stores.setdefault((s["workload"], s["backend"]), []).append(s)
    if stores:
        print()
        print("| population of | backend | presences | load (median) | settle | store | "
              "store/presence | record | names+state/presence |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for (wl, be), ss in stores.items():
            s0 = ss[0]
            load_s = med(s["populate_s"] for s in ss)
            settle = med(s.get("settle_s") for s in ss)
            if "store_bytes" in s0:
                sb = "%.1f MiB" % (s0["store_bytes"] / 2**20)
                per = "%.0f B" % (s0["store_bytes"] / s0["presences"])
                rec = "%d B" % s0["bytes_per_presence"]
                nm = "%.0f B" % (s0["names_bytes"] / s0["presences"])
            else:
                sb = per = rec = nm = "-"
            print("| %s | %s | %s | %.3g s | %s | %s | %s | %s | %s |" % (
                wl, be, s0["population"], load_s, fmt_ns(settle * 1e9 if settle else None),
                sb, per, rec, nm))


def scale(groups):
    labels = [g[0] for g in groups]
    runs = [load(g[1]) for g in groups]
    keys = rows_of(runs[0])
    head = "| op |" + "".join(" %s ops/s | %s p50 |" % (l, l) for l in labels)
    head += "".join(" p50 %s/%s | ops/s %s/%s |" % (l, labels[0], labels[0], l)
                    for l in labels[1:])
    print(head)
    print("|---|" + "---:|" * (2 * len(labels) + 2 * (len(labels) - 1)))
    for op, be in keys:
        cells = []
        p50s, tps = [], []
        for rs in runs:
            tp = med(get(r, be, op, "throughput") for r in rs)
            p50 = med(get(r, be, op, "p50_ns") for r in rs)
            tps.append(tp)
            p50s.append(p50)
            cells.append(" %s | %s |" % (fmt_rate(tp), fmt_ns(p50)))
        for i in range(1, len(labels)):
            a = "x%.2f" % (p50s[i] / p50s[0]) if p50s[i] and p50s[0] else "-"
            b = "x%.2f" % (tps[0] / tps[i]) if tps[i] and tps[0] else "-"
            cells.append(" %s | %s |" % (a, b))
        print("| %s |%s" % (op, "".join(cells)))
    print()
    print("Medians of %s runs per population; ratios above 1 = slower than at %s." % (
        "/".join(str(len(r)) for r in runs), labels[0]))


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--scale":
        groups, cur = [], None
        i = 0
        while i < len(argv):
            if argv[i] == "--scale":
                cur = (argv[i + 1], [])
                groups.append(cur)
                i += 2
            else:
                cur[1].append(argv[i])
                i += 1
        scale(groups)
        return 0
    runs = load(argv)
    table(runs)
    print()
    extras(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
