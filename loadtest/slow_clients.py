#!/usr/bin/env python3
"""Slow clients: N connections that trickle a request head (or a body) one
byte every INTERVAL seconds, for DURATION seconds.

usage: slow_clients.py HOST PORT N MODE DURATION [INTERVAL]
  MODE heads   "GET /slow HTTP/1.1\r\nHost: s\r\n" then "X-Slow: aaaa..." forever
  MODE bodies  a complete POST head with Content-Length: 10000000, then body bytes

Prints "connected N" once every connection is open, then one line per second
"open N closed_by_server M", and a final "done open N closed_by_server M".
Only plain sockets; one process; bounded by DURATION.
"""
import selectors
import socket
import sys
import time

host, port, n, mode, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
interval = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
if mode == "heads":
    first = b"GET /slow HTTP/1.1\r\nHost: s\r\nX-Slow: "
elif mode == "bodies":
    first = b"POST /slow HTTP/1.1\r\nHost: s\r\nContent-Length: 10000000\r\n\r\n"
else:
    sys.exit("MODE is heads or bodies")

end = time.monotonic() + duration
socks = []
failed = 0
for i in range(n):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((host, port))
        s.sendall(first)
        s.setblocking(False)
        socks.append(s)
    except OSError as e:
        failed += 1
        s.close()
        if failed == 1:
            print("connect/send failed:", e, flush=True)
    if time.monotonic() > end:
        break
print("connected", len(socks), "failed", failed, flush=True)

sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
alive = set(socks)
closed = 0
next_tick = time.monotonic()
next_report = time.monotonic() + 1
while time.monotonic() < end and alive:
    now = time.monotonic()
    if now >= next_tick:
        for s in list(alive):
            try:
                s.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                alive.discard(s)
                sel.unregister(s)
                s.close()
                closed += 1
        next_tick = now + interval
    for key, _ in sel.select(timeout=0.1):
        s = key.fileobj
        try:
            s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            pass
        # Any answer (a 408) or EOF: the server gave up on this client.
        if s in alive:
            alive.discard(s)
            sel.unregister(s)
            s.close()
            closed += 1
    if time.monotonic() >= next_report:
        print("open", len(alive), "closed_by_server", closed, flush=True)
        next_report += 1
print("done open", len(alive), "closed_by_server", closed, flush=True)
for s in alive:
    s.close()
