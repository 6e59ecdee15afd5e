#!/usr/bin/env python3
"""Summarise the JSON lines of scripts/bench-peers.sh into the table of docs/BENCHMARKS.md:
the median over rounds of each figure, braid's and the peer's side by side, and their ratio.
Usage: scripts/bench-peers.sh | scripts/bench-summary.py"""
import json, statistics, sys
from collections import defaultdict

sg, tr = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
for line in sys.stdin:
    if not line.startswith("{"):
        print(line.rstrip()); continue
    r = json.loads(line)
    if "braid" in r:
        b = r["braid"]
        if b["kind"] == "sgemm": sg[(b["n"], b["threads"])]["braid"].append(b["gflops"])
        else: tr[(b["config"], b["threads"])]["braid"].append(b["tokens_per_s"])
    elif r.get("peer", {}).get("impl") == "openblas-numpy":
        for x in r["peer"]["results"]: sg[(x["n"], r["threads"])]["peer"].append(x["gflops"])
    elif r.get("peer", {}).get("impl") == "torch":
        tr[(r["config"], r["peer"]["threads"])]["peer"].append(r["peer"]["tokens_per_s"])

med = lambda xs: statistics.median(xs) if xs else float("nan")
print("| sgemm n | threads | braid GFLOPS | OpenBLAS GFLOPS | ratio |")
print("|---|---|---|---|---|")
for (n, th), v in sorted(sg.items()):
    b, p = med(v["braid"]), med(v["peer"])
    print(f"| {n} | {th} | {b:.1f} | {p:.1f} | {b / p:.2f} |")
print()
print("| training step | threads | braid tokens/s | PyTorch tokens/s | ratio |")
print("|---|---|---|---|---|")
best = {}
for (cfg, th), v in sorted(tr.items()):
    b, p = med(v["braid"]), med(v["peer"])
    best[cfg] = max(best.get(cfg, 0), p)
    print(f"| {cfg} | {th} | {b:.0f} | {p:.0f} | {b / p:.2f} |")
for cfg, p in best.items():
    b = max(med(v["braid"]) for (c, th), v in tr.items() if c == cfg)
    print(f"| {cfg}, best of each | | {b:.0f} | {p:.0f} | {b / p:.2f} |")
