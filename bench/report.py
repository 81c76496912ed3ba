#!/usr/bin/env python3
"""Turn bench/run.sh's raw results into the console table and bench/results/latest.md.

Exit status: 0 when every figure meets its target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys


def fnum(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--notes", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--pushes", type=int, default=200)
    ap.add_argument("--conns", type=int, default=32)
    a = ap.parse_args()

    mib, n, c = a.blob_mib, a.pushes, a.conns
    # key: (label, unit, kind, target number, target text)
    # kind "ratio>=": berth/dist >= t; "ratio<=": berth/dist <= t; "ratio<": berth/dist < t;
    # "abs>=": berth >= t
    spec = {
        "put": (f"blob PUT {mib} MiB (monolithic, curl)", "MB/s", "ratio>=", 3.0, ">= 3x distribution"),
        "get": (f"blob GET {mib} MiB (curl, warm)", "MB/s", "abs>=", 2000.0, ">= 2000 MB/s"),
        "v2": (f"GET /v2/ ({c} connections)", "req/s", "ratio>=", 15.0, ">= 15x distribution"),
        "mget": (f"manifest GET ({c} connections)", "req/s", "ratio>=", 15.0, ">= 15x distribution"),
        "mhead": (f"manifest HEAD ({c} connections)", "req/s", "ratio>=", 15.0, ">= 15x distribution"),
        "pushes": (f"{n} small image pushes", "s", "ratio<=", 1 / 3, "<= 1/3 of distribution"),
        "mem": ("peak resident memory (VmHWM)", "MiB", "ratio<", 1 / 3, "< 1/3 of distribution"),
        "spush": (f"skopeo push {mib} MiB image", "s", "ratio<=", 1.0, "<= distribution"),
        "spull": (f"skopeo pull {mib} MiB image", "s", "ratio<=", 1.0, "<= distribution"),
    }

    rows = []
    raws = []
    for line in open(a.results):
        parts = line.rstrip("\n").split("\t")
        while len(parts) < 5:
            parts.append("")
        key, dist, berth, raw_d, raw_b = parts[:5]
        label, unit, kind, target, ttext = spec[key]
        d, b = fnum(dist), fnum(berth)
        ratio = b / d if (d and b is not None) else None
        if b is None:
            ok = False
        elif kind == "abs>=":
            ok = b >= target
        elif ratio is None:
            ok = False
        elif kind == "ratio>=":
            ok = ratio >= target
        elif kind == "ratio<=":
            ok = ratio <= target
        else:
            ok = ratio < target
        rows.append((f"{label} [{unit}]", dist, berth,
                     "-" if ratio is None else f"{ratio:.2f}x", ttext, "PASS" if ok else "FAIL"))
        if raw_d or raw_b:
            raws.append((label, raw_d, raw_b))

    headers = ("metric", "distribution", "berth", "berth/dist", "target", "result")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]

    def line(r):
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) if i < 4 else str(v).ljust(w)
                         for i, (v, w) in enumerate(zip(r, widths)))

    print()
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    failed = sum(1 for r in rows if r[-1] != "PASS")
    print(f"\n{len(rows) - failed} passed, {failed} failed")

    meta = [l.rstrip("\n").split("\t", 1) for l in open(a.meta) if "\t" in l]
    notes = [l.rstrip("\n") for l in open(a.notes) if l.strip()]
    with open(a.markdown, "w") as md:
        md.write("# Benchmark: berth vs distribution 2.8.2\n\n")
        md.write("Written by `bench/run.sh`; see bench/README.md for what each figure means.\n\n")
        for k, v in meta:
            md.write(f"- {k}: {v}\n")
        md.write("\n| " + " | ".join(headers) + " |\n")
        md.write("|" + "|".join(["---"] + ["---:"] * 3 + ["---", "---"]) + "|\n")
        for r in rows:
            md.write("| " + " | ".join(str(v) for v in r) + " |\n")
        md.write(f"\n{len(rows) - failed} passed, {failed} failed\n")
        if raws:
            md.write("\n## Individual runs\n\n| metric | distribution | berth |\n|---|---|---|\n")
            for label, rd, rb in raws:
                md.write(f"| {label} | {rd.replace('|', '/')} | {rb.replace('|', '/')} |\n")
        if notes:
            md.write("\n## Notes from the run\n\n```\n" + "\n".join(notes) + "\n```\n")
    if notes:
        print("\nnotes:", *notes, sep="\n  ")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
