"""Read every real DICOM file olsdesk can get hold of and count what happens.

The corpus is the ``pydicom-data`` package (scanner files in every common transfer
syntax; ``pip install pydicom-data``) and pydicom's own bundled test files. Each file
goes through the path the model sees (``Preprocessing.load``) in a child process with
a time limit, and ends as one of:

- ``ok``: a tensor;
- ``sentence``: an ``ImageReadError``, one sentence for the user;
- ``crash``: any other exception (a bug: it would take a batch down);
- ``hang``: no answer within the time limit.

Usage: python tools/dicom_corpus.py [--timeout 30] [--show sentence,crash,hang]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from collections import Counter
from pathlib import Path


def corpus() -> list[Path]:
    files = []
    try:
        import data_store  # the pydicom-data package

        files += sorted((Path(data_store.__file__).parent / "data").glob("*"))
    except ImportError:
        print("pydicom-data is not installed: pip install pydicom-data", file=sys.stderr)
    import pydicom

    bundled = Path(pydicom.__file__).parent / "data" / "test_files"
    files += sorted(p for p in bundled.rglob("*.dcm") if p.is_file())
    return [p for p in files if p.is_file() and not p.name.startswith((".", "_"))]


def _probe(path: str, queue) -> None:
    from olsdesk.core.data.transforms import Preprocessing
    from olsdesk.errors import ImageReadError

    try:
        tensor = Preprocessing.for_size(64, 1).load(path)
        queue.put(("ok", f"{tuple(tensor.shape)}"))
    except ImageReadError as exc:
        queue.put(("sentence", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - what we are counting
        queue.put(("crash", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))


def classify(path: Path, timeout: float) -> tuple[str, str]:
    queue = mp.Queue()
    child = mp.Process(target=_probe, args=(str(path), queue))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return "hang", f"no answer in {timeout:.0f} s"
    return queue.get() if not queue.empty() else ("crash", f"exit code {child.exitcode}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--show", default="sentence,crash,hang",
                        help="outcomes to list file by file")
    args = parser.parse_args()
    files = corpus()
    counts: Counter[str] = Counter()
    show = set(args.show.split(","))
    for path in files:
        outcome, detail = classify(path, args.timeout)
        counts[outcome] += 1
        if outcome in show:
            print(f"{outcome:8} {path.parent.name}/{path.name}: {detail}")
    print(f"{len(files)} files: " + ", ".join(f"{counts[k]} {k}" for k in
                                               ("ok", "sentence", "crash", "hang")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
