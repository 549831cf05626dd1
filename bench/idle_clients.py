#!/usr/bin/env python3
"""Hold N idle keep-alive HTTP/1.1 connections (bench/memory.sh's client).

Usage: idle_clients.py HOST PORT N [tls]. Opens N connections to HOST:PORT, sends one `GET /` on each and reads the
whole response (Content-Length framing), then keeps every connection open
and idle. Protocol on stdin/stdout so the caller can measure between steps:
prints `ready OK FAILED` once all N are idle, waits for a line on stdin,
closes everything, prints `closed`, and exits. One asyncio loop, no
threads: a connection costs the client a socket and a few hundred bytes.
"""

import asyncio
import ssl
import sys

TLS = None


async def one(host, port, sem, conns, failures):
    async with sem:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=TLS, server_hostname=TLS and "bench.test"),
                30,
            )
            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            length = 0
            for line in head.split(b"\r\n"):
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if length:
                await asyncio.wait_for(r.readexactly(length), 30)
            conns.append((r, w))
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures.append(repr(e))


async def main():
    global TLS
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4 and sys.argv[4] == "tls":
        TLS = ssl.create_default_context()
        TLS.check_hostname = False
        TLS.verify_mode = ssl.CERT_NONE
    conns, failures = [], []
    sem = asyncio.Semaphore(256)
    await asyncio.gather(*(one(host, port, sem, conns, failures) for _ in range(n)))
    print(f"ready {len(conns)} {len(failures)}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # A second request on a few of them after the idle period: still served?
    late_ok = 0
    for r, w in conns[:10]:
        try:
            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            late_ok += head.startswith(b"HTTP/1.1 200")
        except Exception:  # noqa: BLE001 - counted
            pass
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.5)
    print(f"closed late_ok={late_ok}/{min(10, len(conns))}", flush=True)


asyncio.run(main())
