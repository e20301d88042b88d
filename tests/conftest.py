"""Shared fixtures. Qt runs offscreen so the suite needs no display."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import inspect  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402

# what training a real model looks like in a test or in a fixture it uses
TRAINS = re.compile(r"\btrain\(qtbot|\bTrainer(\.from_run)?\(|\.fit\(\)|\bStudy\(|"
                    r"\b(run_cli|main)\(\[\s*\"(train|compare|evaluate)\"|\biter_evaluate\(|"
                    r"\bevaluate\(|\"train\", \"--|\"compare\", \"--")


def _trains(function) -> bool:
    try:
        return bool(TRAINS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that trains or evaluates a real model, itself or through a
    fixture, so ``pytest -m "not slow"`` is the fast tier for daily work (CI runs all)."""
    for item in items:
        functions = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        if info is not None:
            functions += [d.func for defs in info.name2fixturedefs.values() for d in defs]
        if any(_trains(f) for f in functions if f is not None):
            item.add_marker(pytest.mark.slow)
