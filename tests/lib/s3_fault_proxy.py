#!/usr/bin/env python3
"""s3_fault_proxy.py UPSTREAM_PORT PORT_FILE [clean] - a fault-injecting HTTP proxy.

Listens on a free loopback port (written to PORT_FILE once it listens)
and forwards every request to 127.0.0.1:UPSTREAM_PORT unchanged (Host
included, so SigV4 signatures still verify), except that by a fixed
rotation it:
  - answers 1 request in 4 itself with 503 SlowDown (not forwarded),
  - cuts 1 body-carrying response in 5 short: the full Content-Length
    is announced, half the body sent, and the connection closed.
Counts go to PORT_FILE.stats on every request.  Used by
tests/integration/s3_rgw.sh to exercise the S3 backend's retries; runs
until killed (by PID).
"""
import http.client
import http.server
import sys
import threading

UP = int(sys.argv[1])
PORT_FILE = sys.argv[2]
# A third argument "clean": forward everything, inject nothing (a server
# that a test can make vanish by killing the proxy).
CLEAN = len(sys.argv) > 3 and sys.argv[3] == "clean"
lock = threading.Lock()
stats = {"bodies": 0, "requests": 0, "injected_503": 0, "truncated": 0}
HOP = {"connection", "keep-alive", "expect", "proxy-connection",
       "transfer-encoding", "te", "upgrade"}


def save():
    with open(PORT_FILE + ".stats", "w") as f:
        f.write(" ".join("%s=%d" % kv for kv in sorted(stats.items())) + "\n")


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def fwd(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with lock:
            stats["requests"] += 1
            k = stats["requests"]
            fail = k % 4 == 2 and not CLEAN
            if fail:
                stats["injected_503"] += 1
            save()
        if fail:
            b = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                 b'SlowDown</Code><Message/></Error>')
            self.send_response(503)
            self.send_header("Content-Length", str(len(b)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b)
            self.close_connection = True
            return
        c = http.client.HTTPConnection("127.0.0.1", UP, timeout=60)
        c.putrequest(self.command, self.path, skip_host=True,
                     skip_accept_encoding=True)
        for h, v in self.headers.items():
            if h.lower() not in HOP:
                c.putheader(h, v)
        c.endheaders(body if body else None)
        r = c.getresponse()
        data = r.read()
        cut = False
        if self.command != "HEAD" and len(data) > 1:
            with lock:
                stats["bodies"] += 1
                if stats["bodies"] % 5 == 3 and not CLEAN:
                    stats["truncated"] += 1
                    cut = True
                    save()
        self.send_response(r.status)
        for h, v in r.getheaders():
            if h.lower() not in HOP and h.lower() != "content-length":
                self.send_header(h, v)
        if self.command == "HEAD":
            self.send_header("Content-Length",
                             r.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2] if cut else data)
        self.close_connection = True
        c.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = fwd


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
with open(PORT_FILE + ".tmp", "w") as f:
    f.write("%d\n" % srv.server_address[1])
import os  # noqa: E402
os.rename(PORT_FILE + ".tmp", PORT_FILE)
srv.serve_forever()
