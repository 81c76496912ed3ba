"""Compares builds or settings on the manifest GET figure of bench/events.py, side by side.

Each variant is a berth binary, extra environment, and whether an endpoint is configured; the
first variant is the baseline (usually the binary without an endpoint). Every variant runs in
BENCH_INSTANCES (2) processes of its own, and each round measures every process once, in an
order that rotates, waiting for the receiver to drain after each. It prints each process's
median ratio to the baseline's first process.

Two processes of one binary and configuration measured up to 5% apart, the same way in every
round, so a difference between variants counts only when it holds across their processes.

    python3 bench/events_ab.py none=target/release/berth \\
        endpoint=target/release/berth:+ candidate=/tmp/berth-new:+ \\
        tuned=/tmp/berth-new:+:SOME_ENV=1

A variant is `name=binary[:+][:ENV=value...]`; `+` configures one healthy endpoint. Rounds:
BENCH_ROUNDS (5); the load is bench/events.py's (BENCH_RPS_SECS, BENCH_CONNECTIONS).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import events as ev  # noqa: E402
import harness  # noqa: E402
import ocihelpers as oh  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
INSTANCES = int(os.environ.get("BENCH_INSTANCES", "2"))


def parse(arg: str) -> tuple[str, Path, bool, dict]:
    name, _, spec = arg.partition("=")
    parts = spec.split(":")
    binary, flags = Path(parts[0]).resolve(), parts[1:]
    env = dict(f.split("=", 1) for f in flags if "=" in f)
    if not name or not binary.is_file():
        sys.exit(f"events_ab: {arg}: expected name=binary[:+][:ENV=value...] with an existing binary")
    return name, binary, "+" in flags, env


def main() -> int:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work = Path(tempfile.mkdtemp(prefix="berth-events-ab.", dir=os.environ.get("BENCH_DIR", "/tmp")))
    rc = ev.NativeReceiver()
    servers = {}
    try:
        for name, binary, endpoint, env in map(parse, sys.argv[1:]):
            for i in range(INSTANCES):
                key = f"{name}#{i + 1}"
                # `start_berth` runs the binary the harness names.
                harness.BERTH_BIN = binary
                servers[key] = ev.server(work, key, [ev.endpoint("healthy", rc.url)] if endpoint else [], env or None)
                oh.make_image(servers[key].url, "bench/m", "t")
        rates: dict[str, list[float]] = {k: [] for k in servers}
        keys = list(servers)
        for r in range(ROUNDS):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                rates[k].append(ev.get_rate(servers[k].url))
                drain(rc)
            print("round", r + 1, {k: round(v[-1]) for k, v in rates.items()}, flush=True)
    finally:
        for s in servers.values():
            s.stop()
        rc.close()
    base = keys[0]
    for k in keys:
        ratio = statistics.median(x / b for x, b in zip(rates[k], rates[base]))
        print(f"{k:24s} {statistics.median(rates[k]):8.0f} req/s  {ratio * 100:5.1f}% of {base}")
    return 0


def drain(rc: ev.NativeReceiver) -> None:
    """Until the receiver's count stops moving (an endpoint's delivery must not overlap the next
    measurement: it slows whatever runs next)."""
    last = -1
    for _ in range(100):
        count = rc.count()
        if count == last:
            return
        last = count
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
