#!/usr/bin/env python3
"""Chart one-link throughput by message size, tcpnet and the plain-TCP baseline,
from the CSV that the benchmark suite writes.

    pip install matplotlib
    cargo bench --bench suite -- --out bench      # writes bench/results.csv
    python3 scripts/chart.py bench/results.csv bench/throughput.png

Arguments (both optional): the suite's CSV (default target/bench/results.csv)
and the PNG to write (default bench/throughput.png). The x axis is the message
size (log scale), the y axis MB/s of payload; each point is labelled with its
value, and each size with the ratio tcpnet / baseline. A third line shows
tcpnet with the cluster secret on, when the run has the suite's `secret` section. The chart's subtitle is the first line of the results.md
next to the CSV, if there is one (run kind, date), so it says which run it shows.
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def size_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.csv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/throughput.png"
    rows = []
    sealed = {}
    with open(src, newline="") as f:
        for r in csv.DictReader(f):
            if r["section"] == "1. throughput" and r["unit"] == "MB/s":
                rows.append(r)
            elif r["section"] == "6. secret" and r["unit"] == "MB/s" and r["tcpnet"]:
                sealed[int(r["param"])] = float(r["tcpnet"])
    if not rows:
        sys.exit(f"{src}: no throughput rows (run the suite's throughput section)")
    rows.sort(key=lambda r: int(r["param"]))
    sizes = [int(r["param"]) for r in rows]

    def series(col):
        return [float(r[col]) if r[col] else None for r in rows]

    tcpnet, baseline = series("tcpnet"), series("baseline")
    secret = [sealed.get(size) for size in sizes]

    subtitle = ""
    md = os.path.join(os.path.dirname(src), "results.md")
    if os.path.exists(md):
        with open(md) as f:
            subtitle = f.readline().strip()

    top = max(v for v in tcpnet + baseline if v is not None)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for values, label, style, dy in [
        (baseline, "plain tokio TCP (baseline)", "s--", 8),
        (tcpnet, "tcpnet", "o-", -14),
        (secret, "tcpnet with a cluster secret (sealed)", "^:", -14),
    ]:
        pts = [(s, v) for s, v in zip(sizes, values) if v is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, label=label, linewidth=2, markersize=6)
            for x, y in pts:
                # A label below a point near the axis goes to its right.
                low = dy < 0 and y < 0.12 * top
                ax.annotate(
                    f"{y:,.0f}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(8, -3) if low else (0, dy),
                    ha="left" if low else "center",
                    fontsize=8,
                )

    def tick(s, t, b):
        ratio = f"\n×{t / b:.2f}" if t and b else ""
        return size_label(s) + ratio

    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([tick(s, t, b) for s, t, b in zip(sizes, tcpnet, baseline)])
    ax.minorticks_off()
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("message size (× = tcpnet / baseline)")
    ax.set_ylabel("MB/s of payload (10^6 B/s)")
    ax.set_title("One-link throughput by message size")
    if subtitle:
        fig.text(0.5, 0.005, subtitle, ha="center", va="bottom", fontsize=7, color="gray")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    fig.savefig(dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
