"""Real HTTP clients for tests/real_peers.rs: `python client.py SPEC.json`.

SPEC: {"lib": "requests" | "httpx" | "aiohttp", "base": "http://127.0.0.1:PORT",
       "steps": [STEP, ...]}
STEP: {"id": "x", "method": "POST", "path": "/p", "size": N, "chunked": bool,
       "headers": {...}, "timeout": seconds} one request on the client's session
                                            (timeout: give up waiting after that
                                            long, as an impatient client does)
      {"sleep": seconds}
      {"parallel": [STEP, ...]}             those requests at once
All requests share one session (keep-alive, as an application would use it).
Prints one JSON line per request: id, status (0 on a client error), len and
sha256 of the response body, sent_sha (of the request body), lower-cased
response headers, error.
"""
import asyncio
import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

spec = json.load(open(sys.argv[1]))
LIB = spec["lib"]
BASE = spec["base"]
TIMEOUT = 60


def body_for(step):
    """size bytes, byte i = (i*31 + seed) % 251 with seed from the id (Rust has the same)."""
    n = step.get("size", 0)
    seed = sum(step["id"].encode()) % 251
    block = bytes((i * 31 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def headers_for(step):
    return {"X-Test-Id": step["id"], **step.get("headers", {})}


def pieces(b):
    for i in range(0, len(b), 65536):
        yield b[i:i + 65536]


def result(step, status, content, headers, sent, error=""):
    return {"id": step["id"], "status": status, "len": len(content),
            "sha": hashlib.sha256(content).hexdigest(),
            "sent_sha": hashlib.sha256(sent).hexdigest(),
            "headers": {k.lower(): v for k, v in headers.items()}, "error": error}


if LIB in ("requests", "httpx"):
    if LIB == "requests":
        import requests
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        session.mount("http://", adapter)
    else:
        import httpx
        session = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=32))

    def one(step):
        body = body_for(step)
        data = pieces(body) if step.get("chunked") else (body if step.get("size") else None)
        try:
            if LIB == "requests":
                r = session.request(step["method"], BASE + step["path"], data=data,
                                    headers=headers_for(step),
                                    timeout=step.get("timeout", TIMEOUT))
            else:
                r = session.request(step["method"], BASE + step["path"], content=data,
                                    headers=headers_for(step),
                                    timeout=step.get("timeout", TIMEOUT))
            return result(step, r.status_code, r.content, r.headers, body)
        except Exception as e:  # reported, the Rust side asserts on it
            return result(step, 0, b"", {}, body, repr(e))

    def run(steps):
        for s in steps:
            if "sleep" in s:
                time.sleep(s["sleep"])
            elif "parallel" in s:
                with ThreadPoolExecutor(len(s["parallel"])) as ex:
                    for r in ex.map(one, s["parallel"]):
                        print(json.dumps(r), flush=True)
            else:
                print(json.dumps(one(s)), flush=True)

    run(spec["steps"])
elif LIB == "aiohttp":
    import aiohttp

    async def agen(b):
        for p in pieces(b):
            yield p

    async def one(session, step):
        body = body_for(step)
        data = agen(body) if step.get("chunked") else (body if step.get("size") else None)
        try:
            timeout = aiohttp.ClientTimeout(total=step.get("timeout", TIMEOUT))
            async with session.request(step["method"], BASE + step["path"], data=data,
                                       headers=headers_for(step), timeout=timeout) as r:
                content = await r.read()
                return result(step, r.status, content, r.headers, body)
        except Exception as e:
            return result(step, 0, b"", {}, body, repr(e))

    async def main():
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for s in spec["steps"]:
                if "sleep" in s:
                    await asyncio.sleep(s["sleep"])
                elif "parallel" in s:
                    for r in await asyncio.gather(*(one(session, p) for p in s["parallel"])):
                        print(json.dumps(r), flush=True)
                else:
                    print(json.dumps(await one(session, s)), flush=True)

    asyncio.run(main())
elif LIB == "websockets":
    from websockets.sync.client import connect

    with connect(BASE.replace("http://", "ws://") + "/ws",
                 additional_headers={"X-Test-Id": spec["id"]}) as ws:
        h = hashlib.sha256()
        out = []
        for i in range(spec["messages"]):
            msg = ("text-%d-" % i) * (i + 1) if i % 2 == 0 else bytes([i % 256]) * (1000 * i)
            ws.send(msg)
            back = ws.recv(timeout=TIMEOUT)
            out.append(back == msg)
            h.update(msg.encode() if isinstance(msg, str) else msg)
        print(json.dumps({"id": spec["id"], "echoed": out, "sha": h.hexdigest()}), flush=True)
else:
    sys.exit("unknown lib " + LIB)
