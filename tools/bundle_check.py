"""Check a built bundle: `olsdesk --version` and the offscreen `--self-test` must both exit 0.
Prints the bundle's size and the self-test's wall time. Standard library only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> int:
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/olsdesk")
    exe = bundle / ("olsdesk.exe" if os.name == "nt" else "olsdesk")
    if not exe.exists():
        print(f"no bundle at {bundle}: run make bundle first", file=sys.stderr)
        return 1
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    print(f"--version: exit {version.returncode}: {version.stdout.strip()}")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    start = time.monotonic()
    test = subprocess.run([str(exe), "--self-test"], capture_output=True, text=True, env=env,
                          timeout=600)
    seconds = time.monotonic() - start
    print(f"--self-test: exit {test.returncode}: {test.stdout.strip()}")
    if test.returncode:
        print(test.stderr[-4000:], file=sys.stderr)
    print(f"bundle size: {folder_size(bundle) / 2**30:.2f} GiB ({bundle})")
    print(f"self-test wall time: {seconds:.1f} s")
    return 0 if version.returncode == 0 and test.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
