"""The Compare panel: a study through the training worker, then the runs side by side."""

import csv

import pytest

from olsdesk.cli import figure_renderer, main
from olsdesk.core import study
from olsdesk.core.runs import RunStore
from tests.gui.conftest import open_run


def test_new_comparison_queues_runs_and_the_panel_shows_the_cli_numbers(qtbot, window,
                                                                          tmp_path):
    window.experiment.epochs.setValue(2)
    window.start_comparison(["ce", "ols"], 2)
    assert len(window.controller.study.runs) == 4  # the study engine, in the worker
    qtbot.waitUntil(lambda: window.last_status != "" and not window.training, timeout=120_000)
    assert "Comparison of 4 runs finished; scored on the test split" in window.message.text()
    # the same files, with the same numbers, as `olsdesk compare` with these settings
    ours = window.controller.study.out
    cli = tmp_path / "cli"
    assert main(["compare", "--losses", "ce,ols", "--seeds", "2", "--epochs", "2",
                 "--demo-per-class", "6", "--image-size", "32", "--batch-size", "24",
                 "--device", "cpu", "--model", "smallcnn", "--out", str(cli)]) == 0
    files = {p.name for p in ours.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert files == {p.name for p in cli.iterdir() if p.is_file()
                     and not p.name.startswith(".")}
    assert {"report.md", "results.csv", "test_results.csv", "curves.png"} <= files
    for table in ("results.csv", "test_results.csv", "risk_coverage.csv"):
        assert list(csv.DictReader(open(ours / table))) == list(csv.DictReader(open(cli / table)))
    # the Evaluate tab offers the comparison's risk-coverage curves, one a loss
    evaluate = window.evaluation
    assert evaluate.risk_source.currentData() == "comparison"
    assert [item.name().split(" (AURC")[0] for item in evaluate.risk_plot.listDataItems()] == [
        "hard labels (CE)", "online label smoothing"]
    evaluate.risk_source.setCurrentIndex(evaluate.risk_source.findData("checkpoint"))
    assert evaluate.risk_plot.listDataItems() == []  # no evaluation of this checkpoint yet
    # a run of a study scored earlier (here the CLI's): its study's curves are offered,
    # read from its files in a worker, without taking over the view
    evaluate.set_checkpoint(cli / "runs" / "ols-s1" / "checkpoints" / "best.pt")
    qtbot.waitUntil(lambda: evaluate.comparison.source == str(cli), timeout=10_000)
    index = evaluate.risk_source.findData("comparison")
    assert evaluate.risk_source.itemText(index) == "its study (cli), one curve a loss"
    assert evaluate.risk_source.currentData() == "checkpoint"
    evaluate.risk_source.setCurrentIndex(index)
    assert len(evaluate.risk_plot.listDataItems()) == 2
    panel = window.compare
    assert window.tabs.currentWidget() is panel
    qtbot.waitUntil(lambda: not panel.busy and panel.curve_count() == 4, timeout=20_000)
    assert panel.runs.rowCount() == 4
    assert len(panel.selected_stores()) == 4

    # curves: one line per run in each plot; reliability: every run on one diagram
    assert panel.curve_count() == 4
    assert panel.reliability_count() == 4
    assert panel.legend.text().count("━━") == 4
    assert panel.metrics.rowCount() == 4

    # the per-loss table holds exactly what `olsdesk compare` writes to results.csv
    stores = panel.selected_stores()
    out = tmp_path / "report"
    out.mkdir()
    base = stores[0].config()
    study.write_study_report(sorted(stores, key=lambda s: s.path.name), base, 2, out,
                             figure_renderer()[0])
    rows = {r["loss"]: r for r in csv.DictReader(open(out / "results.csv"))}
    for row in range(panel.by_loss.rowCount()):
        name = panel.by_loss.verticalHeaderItem(row).text()
        assert name.startswith(f"{base.model} · ")  # grouped by model
        loss = "ce" if "hard labels" in name else "ols"
        for col, (key, _, _) in enumerate(study.METRICS):
            mean = float(rows[loss][f"{key}_mean"])
            text = panel.by_loss.item(row, col).text().split(" ± ")[0]
            if text == "—":
                assert mean != mean  # no value: NaN in results.csv
            elif text.endswith(" %"):  # accuracies read as percentages, as elsewhere
                assert float(text[:-2]) / 100 == pytest.approx(mean, abs=5e-4)
            else:
                assert float(text) == pytest.approx(mean, abs=1e-4)

    # a run's folder can be replayed from the list
    assert open_run(qtbot, window, RunStore(stores[0].path).path)


def test_the_runs_table_shows_settings_filters_diffs_and_keeps_notes(qtbot, tmp_path):
    import shutil

    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer
    from olsdesk.gui.panels.compare import ComparePanel

    runs = tmp_path / "runs"
    tiny = dict(demo_per_class=6, image_size=32, batch_size=24, epochs=1, device="cpu",
                num_workers=0)
    paths = {}
    for loss, lr in (("ols", 0.003), ("ce", 0.01)):
        trainer = Trainer(RunConfig(loss=loss, lr=lr, **tiny), runs_dir=runs)
        for _ in trainer.fit():
            pass
        paths[loss] = trainer.store.path
    empty = runs / "stopped-before-epoch-1"  # stopped in its first epoch: nothing to compare
    shutil.copytree(paths["ce"], empty)
    RunStore(empty).truncate_to(0)
    RunStore(empty).set_status("stopped")

    panel = ComparePanel(runs)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.busy  # listed in a worker, not on the GUI thread
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    assert sorted(panel.listed_runs()) == sorted(p.name for p in paths.values())
    assert panel.shown_label.text() == "2 of 3 runs"
    panel.show_empty.setChecked(True)
    assert empty.name in panel.listed_runs()
    panel.show_empty.setChecked(False)
    row = {panel.runs.item(r, 0).text(): r for r in range(panel.runs.rowCount())}
    column = {name: c for c, name in enumerate(
        panel.runs.horizontalHeaderItem(c).text() for c in range(panel.runs.columnCount()))}
    ols_row = row[paths["ols"].name]
    assert panel.runs.item(ols_row, column["α / ε"]).text() == "α 0.5"
    assert panel.runs.item(ols_row, column["lr"]).text() == "0.003"
    assert panel.runs.item(ols_row, column["model"]).text() == "smallcnn"
    assert panel.runs.item(row[paths["ce"].name], column["α / ε"]).text() == "—"

    panel.filter.setText("ols SMALLCNN")  # every word, in any column, any case
    assert panel.listed_runs() == [paths["ols"].name]
    panel.filter.setText("resnet50")
    assert panel.listed_runs() == [] and panel.shown_label.text() == "0 of 3 runs"
    panel.filter.clear()

    # two runs: the settings that differ, highlighted
    panel.select_runs(list(paths.values()))
    assert set(panel.settings_differing()) == {"loss", "lr"}
    assert "2 settings differ" in panel.settings_note.text()
    assert not panel.notes.isEnabled()  # notes belong to one run
    panel.all_settings.setChecked(True)
    assert panel.settings_table.rowCount() > 10 and set(panel.settings_differing()) == {
        "loss", "lr"}
    table = panel.settings_table
    rows = {table.verticalHeaderItem(r).text(): r for r in range(table.rowCount())}
    columns = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]

    def setting(key, run):
        return table.item(rows[key], columns.index(run)).text()

    # the values training used: α's default for OLS, "not used" where the loss ignores it
    assert setting("alpha", paths["ols"].name) == "0.5"
    assert setting("alpha", paths["ce"].name) == "not used"
    assert setting("image_size", paths["ce"].name) == "32"

    # one run: its notes, saved in its folder as they are typed
    panel.select_runs([paths["ols"]])
    assert panel.notes.isEnabled() and panel.notes.toPlainText() == ""
    panel.notes.setPlainText("alpha 0.5 looks best\nrerun with 3 seeds")
    qtbot.waitUntil(lambda: (paths["ols"] / "notes.md").exists(), timeout=5_000)
    assert RunStore(paths["ols"]).notes() == "alpha 0.5 looks best\nrerun with 3 seeds"
    assert panel.runs.item(ols_row, column["notes"]).text() == "alpha 0.5 looks best"
    panel.select_runs([paths["ce"]])
    assert panel.notes.toPlainText() == ""
    panel.select_runs([paths["ols"]])
    assert panel.notes.toPlainText().startswith("alpha 0.5")
    panel.filter.setText("looks best")  # notes are searchable too
    assert panel.listed_runs() == [paths["ols"].name]
    panel.notes.setPlainText("")
    panel.save_notes()
    assert not (paths["ols"] / "notes.md").exists()
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)  # its epochs, read meanwhile
    assert panel.curve_count() == 1

    # a damaged run is listed as damaged, with its sentence; the others as before
    broken = runs / "broken"
    shutil.copytree(paths["ce"], broken)
    (broken / "metrics.jsonl").write_text("{}\n")
    panel.filter.clear()
    panel.refresh()
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    assert sorted(panel.listed_runs()) == sorted([broken.name, *(p.name for p in paths.values())])
    row = {panel.runs.item(r, 0).text(): r for r in range(panel.runs.rowCount())}[broken.name]
    assert panel.runs.item(row, column["status"]).text() == "damaged"
    assert "metrics.jsonl is not an epoch's record" in panel.runs.item(row, column["notes"]).text()
    panel.select_runs([broken, paths["ols"]])  # selecting it draws the others, raises nothing
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    assert panel.curve_count() == 1


def test_selecting_runs_shows_the_first_and_a_refresh_keeps_the_scroll(qtbot, tmp_path):
    """Each selected row scrolled the list on to the last of them: a comparison's runs
    are shown from their first, and a refresh (each time the tab is shown) leaves the
    list where the user scrolled it."""
    import shutil

    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer
    from olsdesk.gui.panels.compare import ComparePanel

    runs = tmp_path / "runs"
    trainer = Trainer(RunConfig(demo_per_class=4, image_size=32, batch_size=24, epochs=1,
                                device="cpu", num_workers=0), runs_dir=tmp_path / "one")
    for _ in trainer.fit():
        pass
    for i in range(40):
        shutil.copytree(trainer.store.path, runs / f"run-{i:02d}")
    panel = ComparePanel(runs)
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    chosen = [runs / f"run-{i:02d}" for i in range(20, 26)]
    panel.refresh(select=chosen)  # as "New comparison…" does when its runs are done
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    table = panel.runs
    rows = sorted({i.row() for i in table.selectedIndexes()})
    assert len(rows) == 6 and rows[-1] - rows[0] == 5
    assert table.rowAt(0) == rows[0]  # the first of them at the top, the rest below it
    assert table.rowAt(table.viewport().height() - 1) < 39  # the list does scroll here
    table.verticalScrollBar().setValue(0)  # the user scrolls back to the top
    panel.refresh()  # the tab shown again: the selection kept, the scroll too
    qtbot.waitUntil(lambda: not panel.busy, timeout=20_000)
    assert sorted({i.row() for i in table.selectedIndexes()}) == rows
    assert table.verticalScrollBar().value() == 0
