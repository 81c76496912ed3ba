"""A notification receiver the tests (and bench/) run on loopback: it records every request it
accepts, can refuse the first N with 500, and can be a hung endpoint (accepts connections,
never answers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP receiver on 127.0.0.1:`port` (a free one by default); HTTPS with `tls=(cert, key)`."""

    def __init__(self, port: int = 0, fail_first: int = 0, status: int = 200, tls: tuple | None = None):
        self.fail_first = fail_first
        self.status = status
        self.attempts: list[float] = []  # monotonic time of every request, accepted or not
        self.accepted: list[dict] = []  # {"headers", "body", "time"} of accepted requests
        self.cond = threading.Condition()
        self._parsed: list[dict] = []  # events of accepted[:_seen], parsed once
        self._seen = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with outer.cond:
                    outer.attempts.append(time.monotonic())
                    failing = len(outer.attempts) <= outer.fail_first
                    if not failing:
                        outer.accepted.append({"headers": self.headers, "body": body, "time": time.monotonic()})
                    outer.cond.notify_all()
                code = 500 if failing else outer.status
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        scheme = "http"
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.port}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        """Every event accepted so far, in arrival order (JSON envelopes flattened)."""
        with self.cond:
            bodies = [a["body"] for a in self.accepted[self._seen:]]
            self._seen += len(bodies)
            for b in bodies:
                doc = json.loads(b)
                self._parsed.extend(doc["events"] if isinstance(doc, dict) and "events" in doc else [doc])
            return list(self._parsed)

    def wait_for(self, n: int, timeout: float = 20) -> list[dict]:
        """Waits until at least `n` events were accepted; returns them."""
        end = time.monotonic() + timeout
        while True:
            ev = self.events()
            if len(ev) >= n:
                return ev
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(ev)} events arrived, expected {n}: {ev}")
            with self.cond:
                self.cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hung:
    """Accepts TCP connections (the kernel backlog does) and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/events"

    def close(self) -> None:
        self.sock.close()


def refused_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/events"
