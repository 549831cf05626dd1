"""An HTTP/1.0 application server in the CGI style, for tests/rechunk.rs:
`python close_delimited.py PORT`.

Python's own `http.server` with its default protocol (HTTP/1.0): every
response is delimited by the server closing the connection (no
Content-Length, no chunked), the way CGI-style apps and old servers answer.
`GET /N` streams `pattern(N)` (the bytes `app.py` serves for `/dl/N`) in
pieces of 1000, flushed one by one. Each request is logged to stderr by
`http.server` ("GET /N HTTP/1.1" 200 -), so a test can count what it got.
"""
import http.server
import sys


def pattern(n, seed=7):
    return bytes((i * 31 + seed) % 251 for i in range(n))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            n = int(self.path.strip("/"))
        except ValueError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        body = pattern(n)
        for i in range(0, len(body), 1000):
            self.wfile.write(body[i:i + 1000])
            self.wfile.flush()


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
