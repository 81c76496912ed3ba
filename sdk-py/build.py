#!/usr/bin/env python3
"""One command from a Python module to a Berth plugin component:

    python3 sdk-py/build.py <kind> <plugin dir> <out.wasm>

<kind> is the plugin kind (admission-policy, auth-policy, cleanup-policy, notification-sink); the
world is `<kind>-plugin` from Berth's wit/ (package berth:plugin@0.1.0). <plugin dir> holds
`app.py`, which defines one class per exported interface (`Lifecycle` and e.g.
`AdmissionPolicy`). componentize-py (from PyPI) bundles CPython and the module, runs the
module's top level once at build time and snapshots the result (wizer), so an instance starts
from the initialised interpreter instead of booting one.

The output is written only when the build succeeds; an up-to-date output (newer than every
.py in the plugin dir, the WIT and this script) is left alone, so a test run builds each plugin
once. BERTH_REBUILD=1 forces a build.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("admission-policy", "auth-policy", "cleanup-policy", "notification-sink")
HERE = Path(__file__).resolve().parent
WIT = Path(os.environ.get("BERTH_WIT_DIR", HERE.parent / "wit")).resolve()


def newest_input(src: Path) -> float:
    files = [Path(__file__)] + list(src.glob("*.py")) + list(WIT.glob("*.wit"))
    return max(f.stat().st_mtime for f in files)


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in KINDS:
        print(f"usage: build.py <{'|'.join(KINDS)}> <plugin dir> <out.wasm>", file=sys.stderr)
        return 2
    kind, src, out = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve()
    if not (src / "app.py").is_file():
        print(f"{src}/app.py not found", file=sys.stderr)
        return 2
    if not os.environ.get("BERTH_REBUILD") and out.exists() and out.stat().st_mtime > newest_input(src):
        print(f"{out}: up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".wasm.tmp")
    started = time.monotonic()
    cmd = ["componentize-py", "-d", str(WIT), "-w", f"{kind}-plugin", "componentize", "-p", str(src), "app", "-o", str(tmp)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout, file=sys.stderr)
        return r.returncode
    tmp.replace(out)
    print(f"{out}: {kind}-plugin, {out.stat().st_size} bytes, built in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
