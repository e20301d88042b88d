"""The Compare panel: a study through the training worker, then the runs side by side."""

import csv

import pytest

from olsdesk.cli import figure_renderer
from olsdesk.core import study
from olsdesk.core.runs import RunStore


def test_new_comparison_queues_runs_and_the_panel_shows_the_cli_numbers(qtbot, window,
                                                                          tmp_path):
    window.experiment.epochs.setValue(2)
    window.start_comparison(["ce", "ols"], 2)
    assert len(window.controller.study.runs) == 4  # the study engine, in the worker
    qtbot.waitUntil(lambda: window.last_status != "" and not window.training, timeout=120_000)
    assert "Comparison of 4 runs finished" in window.message.text()
    panel = window.compare
    assert window.tabs.currentWidget() is panel
    assert panel.runs.rowCount() == 4
    assert len(panel.selected_stores()) == 4

    # curves: one line per run in each plot; reliability: a diagram per run
    assert panel.curve_count() == 4
    assert len(panel.reliability_panels) == 4
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
        loss = "ce" if panel.by_loss.verticalHeaderItem(row).text().startswith("hard") else "ols"
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
    assert window.open_run(RunStore(stores[0].path).path)
