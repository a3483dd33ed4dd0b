#!/usr/bin/env python3
"""Plots delivery latency against offered load from kuiperbelt-bench JSON lines.

    python3 docs/plot_benchmarks.py [docs/benchmarks.json] [docs/latency-vs-load.png]

Uses the unicast sweep rows (`"mode": "open-loop"`), one set of lines per
`server` label, plus the closed-loop unicast result and the Go server's
published unicast figure for reference. Needs matplotlib.
"""

import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The Go kuiperbelt's unicast figures the budgets were set from
# (1,000 connections, 32 senders, closed loop): /send per second, p99 ms.
GO_UNICAST = {"rate": (36_500, 38_400), "p99": (7.4, 7.6)}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/latency-vs-load.png"
    rows = load(src)
    sweeps = defaultdict(list)
    closed = {}
    for r in rows:
        if r.get("scenario") != "unicast":
            continue
        if r.get("mode") == "open-loop":
            sweeps[r.get("server", "?")].append(r)
        else:
            closed[r.get("server", "?")] = r
    if not sweeps:
        sys.exit(f"{src}: no unicast sweep rows (run kuiperbelt-bench --scenario unicast --sweep ...)")

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple"])
    for server, points in sorted(sweeps.items()):
        points.sort(key=lambda r: r["offered_per_s"])
        color = next(colors)
        x = [r["offered_per_s"] for r in points]
        ax.plot(x, [r["latency_ms_p50"] for r in points], "o-", color=color,
                label=f"{server}: p50 from send")
        ax.plot(x, [r["latency_ms_p99"] for r in points], "s-", color=color,
                label=f"{server}: p99 from send")
        ax.plot(x, [r["sched_latency_ms_p99"] for r in points], "^--", color=color, alpha=0.6,
                label=f"{server}: p99 from schedule (incl. generator lag)")
        for r in points:
            if r["requests_per_s"] < 0.97 * r["offered_per_s"]:
                ax.annotate(f"{r['requests_per_s'] / 1000:.0f}k/s achieved",
                            (r["offered_per_s"], r["sched_latency_ms_p99"]),
                            textcoords="offset points", xytext=(-95, -4), fontsize=8)
        if server in closed:
            c = closed[server]
            ax.plot([c["requests_per_s"]], [c["latency_ms_p99"]], "*", markersize=14,
                    color=color, label=f"{server}: closed loop, 32 senders (p99)")
    ax.add_patch(plt.Rectangle((GO_UNICAST["rate"][0], GO_UNICAST["p99"][0]),
                               GO_UNICAST["rate"][1] - GO_UNICAST["rate"][0],
                               GO_UNICAST["p99"][1] - GO_UNICAST["p99"][0],
                               color="black", alpha=0.8))
    ax.annotate("Go kuiperbelt, closed loop (p99)",
                (GO_UNICAST["rate"][1], GO_UNICAST["p99"][1]),
                textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("offered POST /send per second (1,000 connections, 64-byte messages)")
    ax.set_ylabel("delivery latency, ms (log scale)")
    ax.set_title("kuiperbelt unicast: latency against offered load (2 cores, generator on the same machine)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
