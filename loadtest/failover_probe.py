#!/usr/bin/env python3
"""Client-side outage probe for loadtest/failover.sh.

Usage: failover_probe.py HOST PORT DURATION STEP TIMEOUT [FAIL_STEP]

Sends one HTTP/1.1 GET on a fresh TCP connection every STEP seconds (a probe
that fails or times out is followed by the next one after FAIL_STEP seconds,
default 0: at once), for DURATION seconds, and prints one line per probe:
`<monotonic seconds> <ok 0|1>`. FAIL_STEP keeps a refused connection (an
address still held by a node whose proxy is dead answers with RST at once)
from spinning through the probe budget.
Bounded in time and count; talks only to the address it is given.
"""
import socket
import sys
import time


def probe(host, port, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    duration, step, timeout = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    fail_step = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    end = time.monotonic() + duration
    out = []
    n = 0
    while time.monotonic() < end and n < 100000:
        n += 1
        t = time.monotonic()
        ok = probe(host, port, timeout)
        out.append("%.6f %d" % (time.monotonic(), 1 if ok else 0))
        left = (step if ok else fail_step) - (time.monotonic() - t)
        if left > 0:
            time.sleep(left)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
