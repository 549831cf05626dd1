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
  /ws              WebSocket echo (ASGI only)
  anything else    reads the whole body, answers 200 {"len": n, "sha": hex}
"""
import hashlib
import json
import os

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
    if path.startswith("/early/"):
        body = b"refused early"
        return int(path[7:]), [("content-length", str(len(body)))], [body], False, sha(body)
    return None


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
    p = plan(method, path, query)
    n = 0
    h = hashlib.sha256()
    if p is None or p[3]:
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
