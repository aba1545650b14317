#!/usr/bin/env python3
"""Renders docs/img/dashboard.png: the panels of deploy/grafana/capecontrol.json computed from
real data, scraped from a running `cargo run --example observability` (no Prometheus or
Grafana needed).

    python3 scripts/plot-dashboard.py [URL] [SECONDS] [OUT]

Scrapes URL (default http://127.0.0.1:9898/metrics) every 2 s for SECONDS (default 60), then
plots per agent version what the dashboard's queries compute: attempts/s, success rate, latency
p50/p95/p99 (from histogram bucket increases, as histogram_quantile does), queue depth,
concurrent tasks, breaker state, discovery rate and mean satisfaction. Needs matplotlib.
"""
import re
import sys
import time
import urllib.request
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9898/metrics"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 60
OUT = sys.argv[3] if len(sys.argv) > 3 else "docs/img/dashboard.png"
STEP = 2.0
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape():
    text = urllib.request.urlopen(URL, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(samples, name, group=("agent", "version"), where=None):
    """Sums of `name` by the `group` labels, per scrape."""
    rows = []
    for s in samples:
        acc = defaultdict(float)
        for (n, labels), v in s.items():
            d = dict(labels)
            if n != name or (where and not where(d)):
                continue
            acc[tuple(d.get(g, "") for g in group)] += v
        rows.append(acc)
    return rows


def rate(rows, i, key, window=5):
    j = max(0, i - window)
    dt = (i - j) * STEP
    return (rows[i].get(key, 0) - rows[j].get(key, 0)) / dt if dt else 0


def quantile(q, buckets):
    """histogram_quantile over (le, cumulative increase) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def label(key):
    return "@".join(k for k in key if k)


def main():
    samples, t0 = [], time.time()
    while time.time() - t0 < SECONDS:
        samples.append(scrape())
        time.sleep(STEP)
    xs = [i * STEP for i in range(len(samples))]
    keys = sorted({k for r in series(samples, "agent_attempts_total") for k in r})
    fig, axes = plt.subplots(3, 3, figsize=(16, 11))
    fig.suptitle("CapeControl — deploy/grafana/capecontrol.json panels over %d s of the "
                 "observability example (scraped /metrics)" % SECONDS, fontsize=13)

    ax = axes[0][0]
    allr = series(samples, "agent_attempts_total")
    for k in keys:
        ax.plot(xs, [rate(allr, i, k) for i in range(len(xs))], label=label(k))
    ax.set_title("Throughput (attempts/s)")

    ax = axes[0][1]
    ok = series(samples, "agent_attempts_total", where=lambda d: d.get("outcome") == "success")
    for k in keys:
        ys = []
        for i in range(len(xs)):
            a = rate(allr, i, k)
            ys.append(rate(ok, i, k) / a if a else None)
        ax.plot(xs, ys, label=label(k))
    ax.axhline(0.95, color="red", ls="--", lw=0.8, label="alert: failure > 5 %")
    ax.set_ylim(0, 1.05)
    ax.set_title("Success rate")

    ax = axes[0][2]
    b = series(samples, "agent_execution_duration_seconds_bucket", group=("agent", "version", "le"))
    for k in keys:
        for q, style in ((0.5, ":"), (0.95, "-"), (0.99, "--")):
            ys = []
            for i in range(len(xs)):
                j = max(0, i - 5)
                pairs = [(float(le), b[i][kk] - b[j].get(kk, 0))
                         for kk in b[i] for le in [kk[2]] if kk[:2] == k]
                ys.append(quantile(q, pairs))
            ax.plot(xs, ys, style, label="%s p%d" % (label(k), q * 100))
    ax.set_yscale("log")
    ax.set_title("Latency percentiles (s)")

    for ax, name, title in ((axes[1][0], "task_queue_depth", "Queue depth"),
                            (axes[1][1], "agent_concurrent_tasks", "Concurrent tasks"),
                            (axes[1][2], "agent_circuit_breaker_state",
                             "Circuit breakers (0 closed, 2 open)")):
        rows = series(samples, name)
        for k in sorted({k for r in rows for k in r}):
            ax.plot(xs, [r.get(k) for r in rows], label=label(k) or "queued")
        ax.set_title(title)
    axes[1][2].set_ylim(-0.1, 2.1)

    ax = axes[2][0]
    rows = series(samples, "marketplace_discovery_rate")
    for k in sorted({k for r in rows for k in r}):
        ax.plot(xs, [rate(rows, i, k) for i in range(len(xs))], label=label(k))
    ax.set_title("Marketplace discovery rate (listings/s)")

    ax = axes[2][1]
    rows = series(samples, "user_satisfaction_score")
    for k in sorted({k for r in rows for k in r}):
        ax.plot(xs, [r.get(k) for r in rows], label=label(k))
    ax.axhline(4.0, color="red", ls="--", lw=0.8, label="alert: < 4.0")
    ax.set_ylim(1, 5)
    ax.set_title("User satisfaction (mean rating)")

    ax = axes[2][2]
    rows = series(samples, "agent_memory_usage_bytes")
    ks = sorted({k for r in rows for k in r})
    for k in ks:
        ax.plot(xs, [r.get(k) for r in rows], label=label(k))
    if not ks:
        ax.text(0.5, 0.5, "no container agents in this run\n(in-process agents only)",
                ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title("Container memory (bytes)")

    for row in axes:
        for ax in row:
            ax.set_xlabel("s")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print("wrote", OUT, "from", len(samples), "scrapes")


if __name__ == "__main__":
    main()
