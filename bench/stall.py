"""Memory under clients that stall (issue 13), each build side by side in one run:

- stalled manifests: 100 connections each send a manifest PUT with Content-Length 8384512 and all
  but the last 100 bytes, then stall for BENCH_HOLD_S seconds; then they close;
- idle connections: 2,000 keep-alive connections each make one GET /v2/ and stay open for
  BENCH_HOLD_S seconds; then they close.

For each build (label=binary[,key=value...] on the command line; key=value pairs go under
`http:` in its config), idle RSS, peak RSS during the load (VmRSS sampled every 20 ms, and the
process's VmHWM) and RSS BENCH_SETTLE_S seconds after the load closed. Loads alternate builds.
Prints a Markdown report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HOLD = float(os.environ.get("BENCH_HOLD_S", "3"))
SETTLE = float(os.environ.get("BENCH_SETTLE_S", "6"))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "2000"))
STALL_CONNS = int(os.environ.get("BENCH_STALL_CONNS", "100"))
LENGTH = 8384512
MT = "application/vnd.oci.image.manifest.v1+json"


def status(pid: int, key: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, label: str, binary: str, extra: dict[str, str], work: Path):
        self.label, self.port = label, free_port()
        d = work / f"{label}-{self.port}"
        d.mkdir(parents=True)
        http = "".join(f"  {k}: {v}\n" for k, v in extra.items())
        cfg = d / "config.yml"
        cfg.write_text(f"log: {{level: warn}}\nhttp:\n  addr: 127.0.0.1:{self.port}\n{http}"
                       f"storage: {{filesystem: {{rootdirectory: {d / 'data'}}}}}\n")
        self.log = open(d / "log.txt", "wb")
        self.proc = subprocess.Popen([binary, "serve", "--config", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"{label} did not start")

    def rss(self) -> float:
        return status(self.proc.pid, "VmRSS")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


def sample_peak(srv: Server, stop: threading.Event, out: list):
    peak = srv.rss()
    while not stop.is_set():
        peak = max(peak, srv.rss())
        time.sleep(0.02)
    out.append(peak)


def stalled_manifests(srv: Server) -> list:
    socks, lock = [], threading.Lock()
    chunk = b" " * (1 << 20)

    def one(i):
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            with lock:
                socks.append(s)
            s.sendall(f"PUT /v2/bench/stall/manifests/t{i} HTTP/1.1\r\nHost: x\r\nContent-Type: {MT}\r\n"
                      f"Content-Length: {LENGTH}\r\n\r\n".encode())
            left = LENGTH - 100
            while left > 0:
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
        except OSError:
            pass  # answered (413/503) and closed before the body was sent

    threads = [threading.Thread(target=one, args=(i,)) for i in range(STALL_CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(HOLD)
    return socks


def idle_connections(srv: Server) -> list:
    socks = []
    for _ in range(IDLE_CONNS):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        socks.append(s)
    time.sleep(HOLD)
    return socks


def measure(srv: Server, load) -> dict:
    idle = srv.rss()
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=sample_peak, args=(srv, stop, peak))
    sampler.start()
    start = time.monotonic()
    socks = load(srv)
    stop.set()
    sampler.join()
    took = time.monotonic() - start
    for s in socks:
        s.close()
    time.sleep(SETTLE)
    return {"idle": idle, "peak": peak[0], "hwm": status(srv.proc.pid, "VmHWM"), "after": srv.rss(), "secs": took}


def main():
    builds = []
    for arg in sys.argv[1:]:
        label, _, rest = arg.partition("=")
        binary, *kv = rest.split(",")
        builds.append((label, binary, dict(p.split("=", 1) for p in kv)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="berth-stall.") as work:
        for name, load in [("100 stalled 8 MiB manifest PUTs", stalled_manifests),
                           (f"{IDLE_CONNS} idle keep-alive connections", idle_connections)]:
            for label, binary, extra in builds:
                srv = Server(label, binary, extra, Path(work))
                try:
                    r = measure(srv, load)
                finally:
                    srv.stop()
                print(f"{name} / {label}: {r}", file=sys.stderr)
                rows.append((name, label, r))
    print("| load | build | idle RSS MiB | peak RSS MiB (sampled / VmHWM) | RSS after close MiB |")
    print("| --- | --- | --- | --- | --- |")
    for name, label, r in rows:
        print(f"| {name} | {label} | {r['idle']:.1f} | {r['peak']:.1f} / {r['hwm']:.1f} | {r['after']:.1f} |")


if __name__ == "__main__":
    main()
