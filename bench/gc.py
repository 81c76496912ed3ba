"""Garbage collection figures (run by bench/gc.sh):

1. mark + sweep of 10,000 blobs in 1,000 repositories on the filesystem (`berth garbage-collect
   -m`), the layout written directly: per repository one tagged image and one untagged image
   (manifest, config, two layers each) and two blobs only a layer link holds, so a run keeps
   4,000 blobs and sweeps 6,000 blobs and 1,000 manifests;
2. the same on S3 (moto), at GC_S3_REPOS repositories (default 1,000; 0 skips it);
3. 200 small image pushes (`berth-bench pushes`) into a server, alone and while the server runs
   garbage collection back to back (`POST /admin/gc?delete-untagged=true`, the first run over the
   same 10,000-blob layout): push time without / with, target >= 70 %.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import BERTH_BIN, free_port, start_berth  # noqa: E402

WORK = Path(os.environ["WORK"])
BENCH_BIN = Path(os.environ.get("BENCH_BIN", ROOT / "target/release/berth-bench"))
REPOS = int(os.environ.get("GC_REPOS", "1000"))
S3_REPOS = int(os.environ.get("GC_S3_REPOS", "1000"))
PUSHES = int(os.environ.get("GC_PUSHES", "200"))
V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def layout(n_repos: int) -> dict[str, bytes]:
    """Key -> content of the whole layout (relative to the root)."""
    files: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        h = sha(data)
        files[f"{V2}/blobs/sha256/{h[:2]}/{h}/data"] = data
        return h

    for r in range(n_repos):
        repo = f"{V2}/repositories/ns{r // 100}/repo{r}"
        for which in ("tagged", "untagged"):
            config = json.dumps({"repo": r, "which": which, "n": os.urandom(8).hex()}).encode()
            layers = [os.urandom(256) for _ in range(2)]
            c = blob(config)
            ls = [blob(x) for x in layers]
            m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                       "digest": f"sha256:{c}", "size": len(config)},
                            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                        "digest": f"sha256:{h}", "size": 256} for h in ls]}).encode()
            mh = blob(m)
            files[f"{repo}/_manifests/revisions/sha256/{mh}/link"] = f"sha256:{mh}".encode()
            for h in [c, *ls]:
                files[f"{repo}/_layers/sha256/{h}/link"] = f"sha256:{h}".encode()
            if which == "tagged":
                files[f"{repo}/_manifests/tags/latest/current/link"] = f"sha256:{mh}".encode()
                files[f"{repo}/_manifests/tags/latest/index/sha256/{mh}/link"] = f"sha256:{mh}".encode()
        for _ in range(2):
            h = blob(os.urandom(128))
            files[f"{repo}/_layers/sha256/{h}/link"] = f"sha256:{h}".encode()
    return files


def write_fs(root: Path, files: dict[str, bytes]) -> None:
    for k, v in files.items():
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(v)
    old = time.time() - 120
    for k in files:
        os.utime(root / k, (old, old))


def gc(config: Path, *flags: str) -> dict:
    t = time.perf_counter()
    p = subprocess.run([str(BERTH_BIN), "garbage-collect", "--json", *flags, str(config)], capture_output=True,
                       text=True, timeout=3600)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"garbage-collect failed: {p.stderr}")
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    rep["wall"] = wall
    return rep


def row(label: str, rep: dict, target: str) -> str:
    ms = rep["mark_seconds"] + rep["sweep_seconds"]
    return (f"| {label} | {rep['blobs_marked']} / {rep['blobs_swept']} | {rep['manifests_swept']} | "
            f"{rep['mark_seconds']:.2f} | {rep['sweep_seconds']:.2f} | {ms:.2f} | {rep['wall']:.2f} | {target} |")


def fs_figure() -> str:
    root = WORK / "fs"
    write_fs(root, layout(REPOS))
    cfg = WORK / "fs.yml"
    cfg.write_text(yaml.safe_dump({"storage": {"filesystem": {"rootdirectory": str(root)}}, "gc": {"graceperiod": 0}}))
    subprocess.run(["sync"], check=True)
    rep = gc(cfg, "-m")
    ok = "PASS" if rep["mark_seconds"] + rep["sweep_seconds"] < 10 else "FAIL"
    return row(f"filesystem, {REPOS} repos, {10 * REPOS} blobs", rep, f"< 10 s: {ok}")


def s3_figure() -> str | None:
    if S3_REPOS <= 0:
        return None
    import objectstores

    prefix = f"/gc-bench-{os.urandom(4).hex()}"
    s3 = objectstores.s3_client()
    files = layout(S3_REPOS)
    t = time.perf_counter()
    with ThreadPoolExecutor(32) as ex:
        list(ex.map(lambda kv: s3.put_object(Bucket=objectstores.S3_BUCKET, Key=f"{prefix[1:]}/{kv[0]}",
                                             Body=kv[1]), files.items()))
    print(f"(moto: {len(files)} objects written in {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    time.sleep(1.5)  # S3 times have a one-second resolution: the layout is older than the run
    cfg = WORK / "s3.yml"
    cfg.write_text(yaml.safe_dump({"storage": {"s3": objectstores.s3_config(prefix)}, "gc": {"graceperiod": 0}}))
    rep = gc(cfg, "-m")
    return row(f"S3 (moto), {S3_REPOS} repos, {10 * S3_REPOS} blobs", rep, "report")


def push_time(url: str, repo: str) -> float:
    p = subprocess.run([str(BENCH_BIN), "pushes", "--url", url, "--count", str(PUSHES), "--repo", repo],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"berth-bench pushes: {p.stderr}")
    return float(p.stdout.strip().splitlines()[-1])


def push_figure() -> list[str]:
    root = WORK / "srv"
    files = layout(REPOS)
    write_fs(root, files)
    dport = free_port()
    srv = start_berth(WORK / "srvwork", root=root,
                      config={"log": {"level": "warn"}, "http": {"debug": {"addr": f"127.0.0.1:{dport}"}},
                              "gc": {"graceperiod": 0}})
    debug = f"http://127.0.0.1:{dport}"
    try:
        push_time(srv.url, "warm/up")
        alone = [push_time(srv.url, f"alone/r{i}") for i in range(3)]
        stop = threading.Event()
        runs: list[dict] = []

        def collect() -> None:
            while not stop.is_set():
                r = requests.post(f"{debug}/admin/gc?delete-untagged=true", timeout=600)
                if r.status_code == 200:
                    runs.append(r.json())

        t = threading.Thread(target=collect)
        t.start()
        time.sleep(3)  # the first run is past its settle and marking
        during = [push_time(srv.url, f"during/r{i}") for i in range(3)]
        stop.set()
        t.join()
    finally:
        srv.stop()
    a, d = sorted(alone)[1], sorted(during)[1]
    ratio = a / d
    swept = sum(r["blobs_swept"] for r in runs)
    return [
        f"| {PUSHES} pushes alone, s (median of 3) | {a:.2f} | runs: {', '.join(f'{x:.2f}' for x in alone)} |",
        f"| {PUSHES} pushes while GC runs, s (median of 3) | {d:.2f} | runs: {', '.join(f'{x:.2f}' for x in during)}; "
        f"{len(runs)} GC runs finished meanwhile, {swept} blobs swept |",
        f"| throughput with GC / without | {ratio:.0%} | target >= 70 %: {'PASS' if ratio >= 0.7 else 'FAIL'} |",
    ]


def main() -> None:
    print("## Mark and sweep (`berth garbage-collect -m`)\n")
    print("| storage | blobs marked / swept | manifests swept | mark s | sweep s | mark+sweep s | "
          "command wall s (lock, settle, exit) | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(fs_figure(), flush=True)
    s3 = s3_figure()
    if s3:
        print(s3, flush=True)
    print("\n## Push throughput while the server collects\n")
    print("| figure | value | detail |")
    print("| --- | --- | --- |")
    for line in push_figure():
        print(line, flush=True)


if __name__ == "__main__":
    main()
