"""Keep-alive client sessions driven in rounds, for the VRRP handover tests:
`python keepalive_rounds.py URL`.

Opens two `requests.Session`s and two `httpx.Client`s (each keeps its
connection alive, as an application's client does) with no retries, so a
reset or a dead connection surfaces as an error, as it would to the
application. Each line `round` on stdin makes every session send one GET;
one JSON line answers it: per session, the `X-Backend` that answered,
whether the answer said `Connection: close`, or the error. `quit` ends.
"""
import json
import sys

import httpx
import requests

url = sys.argv[1]


def requests_session():
    s = requests.Session()
    s.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
    return s


sessions = [("requests", requests_session()), ("requests", requests_session()),
            ("httpx", httpx.Client(transport=httpx.HTTPTransport(retries=0))),
            ("httpx", httpx.Client(transport=httpx.HTTPTransport(retries=0)))]

for line in sys.stdin:
    if line.strip() != "round":
        break
    out = []
    for lib, s in sessions:
        try:
            r = s.get(url, timeout=2)
            out.append({"lib": lib, "status": r.status_code,
                        "backend": r.headers.get("X-Backend", ""),
                        "close": r.headers.get("Connection", "").lower() == "close"})
        except Exception as e:  # noqa: BLE001 - every failure is the result
            out.append({"lib": lib, "error": f"{type(e).__name__}: {e}"[:300]})
    print(json.dumps(out), flush=True)
