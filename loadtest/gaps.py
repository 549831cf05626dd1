#!/usr/bin/env python3
"""Advert-gap statistics for loadtest/soak.sh.

Reads `tcpdump -tt -nn` lines (first field: epoch seconds) on stdin, one per
VRRP advert seen on the wire from one sender, and prints the distribution of
the gaps between consecutive adverts:
`n=<gaps> p50=<ms> p99=<ms> p99.9=<ms> max=<ms> over30=<gaps > 30 ms>`.
Bounded by its input; no network access.
"""
import math
import sys


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    # nearest rank
    i = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def main():
    ts = []
    for line in sys.stdin:
        if " IP " not in line:
            continue
        f = line.split(None, 1)
        try:
            ts.append(float(f[0]))
        except (IndexError, ValueError):
            continue
    gaps = sorted((b - a) * 1000.0 for a, b in zip(ts, ts[1:]))
    if not gaps:
        print("n=0")
        return
    print(
        "n=%d p50=%.2f p99=%.2f p99.9=%.2f max=%.2f over30=%d"
        % (
            len(gaps),
            pct(gaps, 50),
            pct(gaps, 99),
            pct(gaps, 99.9),
            gaps[-1],
            sum(1 for g in gaps if g > 30.0),
        )
    )


if __name__ == "__main__":
    main()
