"""The window shows exactly the run, checkpoint and evaluation it names (AppState), driven
as a person drives it: buttons, the File menu and its dialogs."""

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from tests.gui.conftest import train


def menu_action(window, text: str):
    for menu in window.menuBar().actions():
        for action in menu.menu().actions():
            if action.text().replace("&", "") == text:
                return action
    raise AssertionError(f"no menu item {text}")


def evaluate(qtbot, window) -> None:
    panel = window.evaluation
    with qtbot.waitSignal(panel.finished, timeout=120_000) as blocker:
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [""]


def nothing_of_an_evaluation_shown(window) -> bool:
    panel = window.evaluation
    return (panel.evaluation is None and panel.per_class.rowCount() == 0
            and panel.metrics.item(0, 0) is None and panel.shown_confusion() is None
            and panel.browser.grid.count() == 0 and not panel.save_button.isEnabled())


def exported(window, folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in window.export(folder)}


def test_evaluate_a_then_open_or_train_b_shows_and_exports_nothing_of_a(
        qtbot, window, tmp_path, monkeypatch):
    assert train(qtbot, window) == "finished"
    run_a = window.run_path
    evaluate(qtbot, window)
    panel = window.evaluation
    counts = panel.evaluation.confusion()
    cell = tuple(int(i) for i in np.unravel_index(np.argmax(counts), counts.shape))
    panel.browser.show_cell(*cell)
    assert panel.per_class.rowCount() == 12 and panel.browser.grid.count() > 0
    assert window.state.selection.cell == cell  # the pick is the state's, as indices
    # a click on a class in the table picks its mistakes instead
    panel.per_class.cellClicked.emit(0, 0)
    row_class = panel.per_class.item(0, 0).data(Qt.ItemDataRole.UserRole)
    assert window.state.selection.cell is None
    assert window.state.selection.class_index == row_class
    assert "misclassified" in panel.browser.title.text()
    qtbot.waitUntil(lambda: not panel.browser.busy, timeout=60_000)
    # evaluated again: the pick was of the old rows; no title of it stays over an empty grid
    evaluate(qtbot, window)
    assert window.state.selection.class_index is None and panel.browser.grid.count() == 0
    assert panel.browser.title.text().startswith("Click a confusion-matrix cell")
    panel.browser.show_cell(*cell)
    assert any(name.startswith("test/") for name in exported(window, tmp_path / "a"))
    report_a = (tmp_path / "a" / "report.md").read_text()
    assert "## Test split" in report_a and "| Top-1 |" in report_a.split("## Test split")[1]
    assert f"{panel.evaluation.resamples} bootstrap resamples" in report_a
    qtbot.waitUntil(lambda: not panel.browser.busy, timeout=60_000)

    # a second run trained: A's evaluation goes with A
    assert train(qtbot, window) == "finished"
    run_b = window.run_path
    assert run_b != run_a and run_b.name in panel.model_label.text()
    assert nothing_of_an_evaluation_shown(window)
    assert "not evaluated yet" in panel.status.text()
    files = exported(window, tmp_path / "b")
    assert not any(name.startswith("test/") for name in files)
    assert "## Test split" not in (tmp_path / "b" / "report.md").read_text()

    # B evaluated, then A opened through File → Open run…
    evaluate(qtbot, window)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run_a))
    menu_action(window, "Open run…").trigger()
    qtbot.waitUntil(lambda: not window.session.loading, timeout=60_000)
    assert window.run_path == run_a and run_a.name in panel.model_label.text()
    assert nothing_of_an_evaluation_shown(window)
    assert not any(name.startswith("test/") for name in exported(window, tmp_path / "a2"))


def test_an_evaluation_that_ends_after_the_checkpoint_changed_is_not_shown(qtbot, window):
    assert train(qtbot, window) == "finished"
    panel = window.evaluation
    first = window.state.checkpoint
    with qtbot.waitSignal(panel.finished, timeout=120_000) as blocker:
        panel.evaluate(resamples=20)
        # meanwhile the run's best.pt is replaced by a later epoch's weights
        window.state.set_checkpoint(type(first)(first.path, first.epoch + 1, "a later epoch"))
    assert blocker.args == ["the checkpoint changed during the evaluation"]
    assert panel.evaluation is None and "Evaluate again" in panel.status.text()


def test_cancelling_a_re_evaluation_keeps_the_shown_one_and_says_so(qtbot, window):
    assert train(qtbot, window) == "finished"
    evaluate(qtbot, window)
    panel = window.evaluation
    shown = panel.evaluation
    with qtbot.waitSignal(panel.finished, timeout=120_000) as blocker:
        panel.evaluate()
        panel.cancel()
    assert blocker.args == ["cancelled"]
    assert panel.evaluation is shown
    assert "cancelled" in panel.status.text() and "Predicting" not in panel.status.text()


def test_the_window_fits_1024_by_700(qtbot, window):
    """Every tab's controls fit a 1024 px wide window (the settings column scrolls)."""
    assert train(qtbot, window) == "finished"
    evaluate(qtbot, window)
    widths = {}
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        qtbot.wait(10)
        widths[window.tabs.tabText(i)] = window.tabs.widget(i).minimumSizeHint().width()
    assert window.minimumSizeHint().width() <= 1024, str(widths)
    assert window.minimumSizeHint().height() <= 700
    window.resize(1024, 700)
    qtbot.wait(50)
    assert window.width() == 1024

    # selecting an image in the error browser leaves the numbers and the matrix in place
    window.show()
    panel = window.evaluation
    window.tabs.setCurrentWidget(panel)
    counts = panel.evaluation.confusion()
    panel.browser.show_cell(*np.unravel_index(np.argmax(counts), counts.shape))
    qtbot.waitUntil(lambda: not panel.browser.busy and panel.browser.grid.count() > 0,
                    timeout=60_000)
    qtbot.wait(50)
    before = [w.geometry() for w in (panel.metrics, panel.confusion, panel.browser)]
    panel.browser.grid.setCurrentRow(0)
    qtbot.wait(50)
    assert panel.browser.detail.text().strip()  # the image's description is shown
    assert [w.geometry() for w in (panel.metrics, panel.confusion, panel.browser)] == before


def test_the_per_class_rows_are_numbered_as_the_matrix(qtbot, window):
    assert train(qtbot, window) == "finished"
    evaluate(qtbot, window)
    table = window.evaluation.per_class
    names = window.evaluation.evaluation.class_names
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == list(names)
