#!/usr/bin/env python3
"""Issue 4's S3 figure: 256 MiB push and pull through berth's S3 driver against what direct
access (boto3's managed transfers: multipart, 10 threads) reaches on the same local S3 server,
in the same run. The server is moto's standalone server on loopback, as in the tests.

    python3 bench/s3.py            # needs target/release/berth (cargo build --release -p berth)

Writes bench/results/s3.md; exits 0 when push and pull are each at least 80% of direct.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

import objectstores  # noqa: E402
from harness import start_berth  # noqa: E402

MIB = int(os.environ.get("BENCH_BLOB_MIB", "256"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
TARGET = 0.80
EXTRA = {"chunksize": int(os.environ["BENCH_CHUNKSIZE"])} if os.environ.get("BENCH_CHUNKSIZE") else {}


def curl(*args: str) -> list[str]:
    out = subprocess.run(["curl", "-s", *args], check=True, capture_output=True, text=True).stdout
    return out.split()


def berth_push(url: str, path: Path, dgst: str) -> float:
    t0 = time.perf_counter()
    code, = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-D", str(path) + ".hdr",
                 f"{url}/v2/bench/s3/blobs/uploads/")
    loc = next(line.split(None, 1)[1].strip() for line in open(str(path) + ".hdr")
               if line.lower().startswith("location:"))
    loc = loc if loc.startswith("http") else url + loc
    code, = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                 "--data-binary", f"@{path}", f"{loc}{'&' if '?' in loc else '?'}digest={dgst}")
    assert code == "201", code
    return time.perf_counter() - t0


def berth_pull(url: str, dgst: str, out: Path, follow: bool) -> float:
    t0 = time.perf_counter()
    code, = curl(*(["-L"] if follow else []), "-o", str(out), "-w", "%{http_code}", f"{url}/v2/bench/s3/blobs/{dgst}")
    dt = time.perf_counter() - t0
    assert code == "200", code
    return dt


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="berth-s3-bench-"))
    s3 = objectstores.s3_client()
    blobs = []
    for i in range(RUNS):
        p = work / f"blob{i}"
        data = os.urandom(MIB << 20)
        p.write_bytes(data)
        blobs.append((p, "sha256:" + hashlib.sha256(data).hexdigest()))
    size_mb = (MIB << 20) / 1e6
    direct_up, direct_down, push, pull, pull_redirect = [], [], [], [], []
    bucket = objectstores.S3_BUCKET
    prefix = f"/bench-{os.getpid()}"
    quiet = {"log": {"level": "warn"}}
    streamed = start_berth(work / "streamed", config={**quiet, "storage": {
        "s3": objectstores.s3_config(prefix, **EXTRA), "redirect": {"disable": True}}})
    redirecting = start_berth(work / "redirecting", config={**quiet, "storage": {"s3": objectstores.s3_config(prefix)}})
    down = work / "down"
    try:
        # Interleaved, so a load change on the machine hits both sides alike.
        for i, (p, dgst) in enumerate(blobs):
            t0 = time.perf_counter()
            s3.upload_file(str(p), bucket, f"direct/{i}")
            direct_up.append(size_mb / (time.perf_counter() - t0))
            push.append(size_mb / berth_push(streamed.url, p, dgst))
            t0 = time.perf_counter()
            s3.download_file(bucket, f"direct/{i}", str(down))
            direct_down.append(size_mb / (time.perf_counter() - t0))
            s3.delete_object(Bucket=bucket, Key=f"direct/{i}")
            pull.append(size_mb / berth_pull(streamed.url, dgst, down, follow=False))
            assert hashlib.sha256(down.read_bytes()).hexdigest() == dgst[7:]
            pull_redirect.append(size_mb / berth_pull(redirecting.url, dgst, down, follow=True))
            # Both sides leave the server as they found it: the server holds one blob at a time.
            hexd = dgst[7:]
            s3.delete_object(Bucket=bucket, Key=f"{prefix[1:]}/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data")
    finally:
        streamed.stop()
        redirecting.stop()
    m = {k: statistics.median(v) for k, v in
         dict(direct_up=direct_up, direct_down=direct_down, push=push, pull=pull, pull_redirect=pull_redirect).items()}
    rows = [
        ("256 MiB push through berth vs boto3 upload_file", m["push"], m["direct_up"]),
        ("256 MiB pull streamed through berth vs boto3 download_file", m["pull"], m["direct_down"]),
        ("256 MiB pull with redirect (curl -L) vs boto3 download_file", m["pull_redirect"], m["direct_down"]),
    ]
    lines = [
        f"# S3 figures ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, moto server on loopback)",
        "",
        f"{MIB} MiB random blobs, median MB/s of {RUNS} runs. Direct = boto3 managed transfer "
        "(8 MiB multipart, 10 threads); berth = curl against berth's S3 driver (10 MiB parts, 4 in flight).",
        "",
        "| figure | berth MB/s | direct MB/s | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    ok = True
    for i, (name, b, d) in enumerate(rows):
        ratio = b / d
        gated = i < 2
        verdict = ("PASS" if ratio >= TARGET else "FAIL") if gated else "info"
        ok &= ratio >= TARGET or not gated
        lines.append(f"| {name} | {b:.0f} | {d:.0f} | {ratio:.2f} | {'>= 0.80' if gated else '-'} | {verdict} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "s3.md").write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
