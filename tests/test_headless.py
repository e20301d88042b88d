"""Where Qt cannot load (a GPU server without libGL/libEGL), the commands that need no
window still work: train, predict, and compare (which then skips its figures)."""

import subprocess
import sys
from pathlib import Path

from olsdesk.gui.resources import resource

NO_QT = """
import sys

class NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"):
            raise ImportError("libEGL.so.1: cannot open shared object file")
        return None

sys.meta_path.insert(0, NoQt())
from olsdesk.cli import main
code = main(sys.argv[1:])
assert "PySide6" not in sys.modules
sys.exit(code)
"""
TINY = ["--demo-per-class", "4", "--image-size", "32", "--batch-size", "16", "--device", "cpu",
        "--epochs", "1"]


def olsdesk_without_qt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_QT, *args], capture_output=True, text=True,
                          timeout=300)


def test_train_predict_and_compare_run_where_qt_cannot_load(tmp_path):
    train = olsdesk_without_qt("train", *TINY, "--runs-dir", str(tmp_path / "runs"))
    assert train.returncode == 0, train.stderr
    run = Path(train.stdout.strip().splitlines()[-1].removeprefix("run written to "))

    predict = olsdesk_without_qt("predict", "--checkpoint", str(run / "checkpoints" / "latest.pt"),
                                 str(resource("samples") / "CT_lung_nodule.dcm"), "--device", "cpu")
    assert predict.returncode == 0, predict.stderr
    assert "CT_lung_nodule.dcm: " in predict.stdout

    out = tmp_path / "study"
    compare = olsdesk_without_qt("compare", "--losses", "ce,ols", "--seeds", "1", *TINY,
                                 "--out", str(out))
    assert compare.returncode == 0, compare.stderr
    skipped = [line for line in compare.stdout.splitlines() if "Figures were skipped" in line]
    assert len(skipped) == 1 and "Qt cannot load" in skipped[0]
    assert (out / "results.csv").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| online label smoothing |" in report and "Figures were skipped" in report
    assert not list(out.glob("*.png"))
