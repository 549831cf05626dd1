"""Recording application for tests/real_peers.rs, served by real servers:
`uvicorn app:asgi` and `gunicorn app:wsgi` (sync or gthread workers).

Every request appends one JSON line to $RECORD_LOG: the X-Test-Id header,
method, path, the number of body bytes read and their sha256 (what the
backend really received), and the sha256 of the body it sent back. Tests
compare these records with what the client sent and received, so a request
replayed by the proxy, or a byte changed or lost, shows up.

Routes (any method):
  /dl/N            N pattern bytes; ?chunked=1 streams them without Content-Length
  /status/CODE     empty response with that status (304 carries an ETag)
  /etag            200 "tagged" with ETag "v1"; If-None-Match: "v1" -> 304
  /early/CODE      answers CODE *without reading* the request body
  /tick/N?gap=MS   a text/event-stream of N events ("data: tick i"), one every
                   MS ms, without Content-Length (chunked)
  /lockstep/N      the same N events, but each next one only once the client
                   acknowledged the previous one by creating the file
                   ack_path(id, i) (at most 30 s each): a proxy that holds a
                   streamed response back stalls it (the record's "acked"
                   tells how many were acknowledged)
  /wait/MS         answers "waited" after MS ms (a long poll)
  /hold/MS         a long poll that watches its client: records phase "start",
                   then waits up to MS ms for the connection to close (ASGI:
                   `http.disconnect`, what Starlette's is_disconnected() reads;
                   WSGI: a peek at gunicorn's socket), records phase "end"
                   with "disconnected", and answers "held" only if it was
                   not; ?stream=1 sends the head and a first event first
  /cookies/N       200 with N Set-Cookie fields
  /fill/N          200 with N fields "X-Fill-i" of 1000 bytes each
  /ws              WebSocket echo (ASGI only)
  /by-length       (WSGI) reads CONTENT_LENGTH bytes of the body and no more,
                   as PEP 3333 asks and Django does, answers like /echo:
                   a chunked body arrives here empty unless the proxy sent
                   it with a Content-Length
  anything else    reads the whole body, answers 200 {"len": n, "sha": hex}
"""
import asyncio
import hashlib
import json
import os
import socket
import time

LOG = os.environ["RECORD_LOG"]


def pattern(n, seed=7):
    """n bytes, byte i = (i*31 + seed) % 251 (also generated in Rust)."""
    block = bytes((i * 31 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def record(**kv):
    line = (json.dumps(kv, sort_keys=True) + "\n").encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def ack_path(tid, i):
    """The file a /lockstep client creates once it has event i."""
    return "%s.ack.%s.%d" % (LOG, tid, i)


def tick(i):
    return b"data: tick %d\n\n" % i


def stream_plan(path, query):
    """(events, gap seconds, lockstep) for /tick and /lockstep, else None."""
    if path.startswith("/tick/"):
        gap = 0.1
        for kv in query.split("&"):
            if kv.startswith("gap="):
                gap = int(kv[4:]) / 1000
        return int(path[6:]), gap, False
    if path.startswith("/lockstep/"):
        return int(path[10:]), 0, True
    return None


def acked(tid, i):
    return os.path.exists(ack_path(tid, i))


SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def plan(method, path, query):
    """(status, headers, body chunks, read_body) for a request."""
    if path.startswith("/dl/"):
        body = pattern(int(path[4:]))
        if "chunked=1" in query:
            return 200, [], [body[i:i + 65536] for i in range(0, len(body), 65536)], True, sha(body)
        return 200, [("content-length", str(len(body)))], [body], True, sha(body)
    if path.startswith("/status/"):
        code = int(path[8:])
        hdrs = [("etag", '"v1"')] if code == 304 else []
        if code not in (204, 304):
            hdrs.append(("content-length", "0"))
        return code, hdrs, [], True, sha(b"")
    if path.startswith("/cookies/"):
        hdrs = [("set-cookie", "c%d=%s; Path=/; HttpOnly" % (i, "v" * 40)) for i in range(int(path[9:]))]
        return 200, hdrs + [("content-length", "4")], [b"ok\r\n"], True, sha(b"ok\r\n")
    if path.startswith("/fill/"):
        hdrs = [("x-fill-%d" % i, "f" * 1000) for i in range(int(path[6:]))]
        return 200, hdrs + [("content-length", "4")], [b"ok\r\n"], True, sha(b"ok\r\n")
    if path.startswith("/early/"):
        body = b"refused early"
        return int(path[7:]), [("content-length", str(len(body)))], [body], False, sha(body)
    return None


async def asgi_stream(tid, method, path, sp, send):
    n, gap, lockstep = sp
    await send({"type": "http.response.start", "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in SSE]})
    h = hashlib.sha256()
    acks = 0
    for i in range(n):
        h.update(tick(i))
        await send({"type": "http.response.body", "body": tick(i), "more_body": True})
        if lockstep:
            for _ in range(3000):
                if acked(tid, i):
                    break
                await asyncio.sleep(0.01)
            if not acked(tid, i):
                break
            acks += 1
        elif i + 1 < n:
            await asyncio.sleep(gap)
    record(id=tid, method=method, path=path, len=0, sha=sha(b""), resp_sha=h.hexdigest(),
           acked=acks)
    await send({"type": "http.response.body", "body": b""})


def wsgi_stream(tid, method, path, sp):
    n, gap, lockstep = sp
    h = hashlib.sha256()
    acks = 0
    for i in range(n):
        h.update(tick(i))
        yield tick(i)
        if lockstep:
            for _ in range(3000):
                if acked(tid, i):
                    break
                time.sleep(0.01)
            if not acked(tid, i):
                break
            acks += 1
        elif i + 1 < n:
            time.sleep(gap)
    record(id=tid, method=method, path=path, len=0, sha=sha(b""), resp_sha=h.hexdigest(),
           acked=acks)


def hold_plan(path, query):
    """(seconds, stream) for /hold, else None."""
    if not path.startswith("/hold/"):
        return None
    return int(path[6:]) / 1000, "stream=1" in query


HELD = b"held"


async def asgi_hold(tid, method, path, hp, receive, send):
    seconds, stream = hp
    record(id=tid, phase="start", method=method, path=path)
    m = await receive()
    while m["type"] == "http.request" and m.get("more_body"):
        m = await receive()
    if stream:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in SSE]})
        await send({"type": "http.response.body", "body": tick(0), "more_body": True})
    try:
        gone = (await asyncio.wait_for(receive(), seconds))["type"] == "http.disconnect"
    except asyncio.TimeoutError:
        gone = False
    record(id=tid, phase="end", method=method, path=path, disconnected=gone)
    if gone:
        return
    if stream:
        await send({"type": "http.response.body", "body": HELD})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(HELD)).encode())]})
    await send({"type": "http.response.body", "body": HELD})


def peer_gone(sock, seconds):
    """Whether the peer of `sock` closes it within `seconds` (peeks, reads nothing)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        time.sleep(0.02)
    return False


def wsgi_hold(environ, start_response, tid, method, path, hp):
    seconds, stream = hp
    record(id=tid, phase="start", method=method, path=path)
    sock = environ["gunicorn.socket"]
    if not stream:
        gone = peer_gone(sock, seconds)
        record(id=tid, phase="end", method=method, path=path, disconnected=gone)
        # Written to a closed connection when gone: gunicorn drops it.
        start_response("200 OK", [("content-length", str(len(HELD)))])
        return [HELD]

    def events():
        yield tick(0)
        gone = peer_gone(sock, seconds)
        record(id=tid, phase="end", method=method, path=path, disconnected=gone)
        if not gone:
            yield HELD
    start_response("200 OK", SSE)
    return events()


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    tid = headers.get("x-test-id", "")
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        n = 0
        h = hashlib.sha256()
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                break
            n += 1
            if m.get("bytes") is not None:
                h.update(m["bytes"])
                await send({"type": "websocket.send", "bytes": m["bytes"]})
            else:
                h.update(m["text"].encode())
                await send({"type": "websocket.send", "text": m["text"]})
        record(id=tid, method="WS", path=scope["path"], messages=n, sha=h.hexdigest())
        return
    method, path = scope["method"], scope["path"]
    query = scope.get("query_string", b"").decode()
    sp = stream_plan(path, query)
    if sp is not None:
        await asgi_stream(tid, method, path, sp, send)
        return
    hp = hold_plan(path, query)
    if hp is not None:
        await asgi_hold(tid, method, path, hp, receive, send)
        return
    if path.startswith("/wait/"):
        await asyncio.sleep(int(path[6:]) / 1000)
        body = b"waited"
        record(id=tid, method=method, path=path, len=0, sha=sha(b""), resp_sha=sha(body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": body})
        return
    p = plan(method, path, query)
    if p is not None and not p[3]:
        status, hdrs, chunks, _, rsha = p
        record(id=tid, method=method, path=path, len=-1, sha="", resp_sha=rsha)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in hdrs]})
        await send({"type": "http.response.body", "body": b"".join(chunks)})
        return
    h = hashlib.sha256()
    n = 0
    disconnected = False
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            disconnected = True
            break
        b = m.get("body", b"")
        h.update(b)
        n += len(b)
        if not m.get("more_body"):
            break
    if p is None and path == "/etag":
        if headers.get("if-none-match") == '"v1"':
            p = (304, [("etag", '"v1"')], [], True, sha(b""))
        else:
            p = (200, [("etag", '"v1"'), ("content-length", "6")], [b"tagged"], True, sha(b"tagged"))
    if p is None:
        body = json.dumps({"len": n, "sha": h.hexdigest()}).encode()
        p = (200, [("content-type", "application/json"), ("content-length", str(len(body)))],
             [body], True, sha(body))
    status, hdrs, chunks, _, rsha = p
    record(id=tid, method=method, path=path, len=n, sha=h.hexdigest(), resp_sha=rsha,
           disconnected=disconnected)
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in hdrs]})
    for i, c in enumerate(chunks):
        await send({"type": "http.response.body", "body": c, "more_body": i + 1 < len(chunks)})
    if not chunks:
        await send({"type": "http.response.body", "body": b""})


REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 401: "Unauthorized",
           302: "Found", 413: "Payload Too Large"}


def wsgi(environ, start_response):
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    tid = environ.get("HTTP_X_TEST_ID", "")
    sp = stream_plan(path, query)
    if sp is not None:
        start_response("200 OK", SSE)
        return wsgi_stream(tid, method, path, sp)
    hp = hold_plan(path, query)
    if hp is not None:
        return wsgi_hold(environ, start_response, tid, method, path, hp)
    if path.startswith("/wait/"):
        time.sleep(int(path[6:]) / 1000)
        record(id=tid, method=method, path=path, len=0, sha=sha(b""), resp_sha=sha(b"waited"))
        start_response("200 OK", [("content-length", "6")])
        return [b"waited"]
    p = plan(method, path, query)
    n = 0
    h = hashlib.sha256()
    if path == "/by-length":
        b = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        h.update(b)
        n = len(b)
    elif p is None or p[3]:
        inp = environ["wsgi.input"]
        while True:
            b = inp.read(65536)
            if not b:
                break
            h.update(b)
            n += len(b)
    else:
        n = -1
    if p is None and path == "/etag":
        if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':
            p = (304, [("etag", '"v1"')], [], True, sha(b""))
        else:
            p = (200, [("etag", '"v1"'), ("content-length", "6")], [b"tagged"], True, sha(b"tagged"))
    if p is None:
        body = json.dumps({"len": n, "sha": h.hexdigest()}).encode()
        p = (200, [("content-type", "application/json"), ("content-length", str(len(body)))],
             [body], True, sha(body))
    status, hdrs, chunks, _, rsha = p
    record(id=tid, method=method, path=path, len=n, sha=h.hexdigest() if n >= 0 else "",
           resp_sha=rsha)
    start_response(f"{status} {REASONS.get(status, 'X')}", hdrs)
    return chunks
