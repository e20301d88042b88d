"""AppState's rules, without Qt: an evaluation belongs to one checkpoint, a new run or new
weights drop it, and every change is announced once."""

from dataclasses import dataclass
from pathlib import Path

from olsdesk.config import RunConfig
from olsdesk.core.state import AppState, CheckpointRef, Selection, ShownRun


@dataclass
class FakeEvaluation:  # the two fields AppState reads of core.evaluation.Evaluation
    checkpoint: str
    epoch: int | None


def recorder(state):
    seen = []
    for name in AppState.FIELDS:
        getattr(state.events, name).connect(lambda value, name=name: seen.append((name, value)))
    return seen


def test_an_evaluation_is_accepted_only_for_the_checkpoint_in_use():
    state = AppState()
    a3 = CheckpointRef("/runs/a/checkpoints/best.pt", 3, "a, best, epoch 3")
    state.set_run(ShownRun(Path("/runs/a")))
    state.set_checkpoint(a3)
    assert not state.set_evaluation(FakeEvaluation("/runs/b/checkpoints/best.pt", 3))
    assert not state.set_evaluation(FakeEvaluation(a3.path, 2))  # best.pt of an older epoch
    assert state.evaluation is None
    ev = FakeEvaluation(a3.path, 3)
    assert state.set_evaluation(ev, of=a3) and state.evaluation is ev
    assert state.evaluation_is_current


def test_an_evaluation_started_for_other_weights_is_refused_when_it_arrives():
    state = AppState()
    a3 = CheckpointRef("/runs/a/checkpoints/best.pt", 3)
    a5 = CheckpointRef("/runs/a/checkpoints/best.pt", 5)
    state.set_checkpoint(a3)
    state.set_checkpoint(a5)  # training wrote a better epoch meanwhile
    assert not state.set_evaluation(FakeEvaluation(a3.path, 5), of=a3)
    assert state.evaluation is None


def test_new_weights_or_a_new_run_drop_the_evaluation_and_the_test_selection():
    state = AppState()
    a = CheckpointRef("/runs/a/checkpoints/best.pt", 3, "a, epoch 3")
    state.set_run(ShownRun(Path("/runs/a")))
    state.set_checkpoint(a)
    state.set_evaluation(FakeEvaluation(a.path, 3))
    state.select(Selection(epoch=2, cell=(1, 0)))
    seen = recorder(state)
    # the same weights under another name keep their evaluation
    state.set_checkpoint(CheckpointRef(a.path, 3, "a, best checkpoint, epoch 3, 91 %"))
    assert state.evaluation is not None and [n for n, _ in seen] == ["checkpoint"]
    # a better epoch in best.pt is another model
    state.set_checkpoint(CheckpointRef(a.path, 4))
    assert state.evaluation is None and state.selection == Selection(epoch=2)
    assert ("evaluation", None) in seen
    state.set_checkpoint(CheckpointRef(a.path, 4))
    state.set_evaluation(FakeEvaluation(a.path, 4))
    seen.clear()
    state.set_run(ShownRun(Path("/runs/b")))
    assert state.checkpoint is None and state.evaluation is None
    assert state.selection == Selection()
    assert [n for n, _ in seen] == ["run", "checkpoint", "evaluation", "selection"]


def test_reopening_the_shown_run_keeps_its_checkpoint():
    state = AppState()
    state.set_run(ShownRun(Path("/runs/a")))
    state.set_checkpoint(CheckpointRef("/runs/a/checkpoints/best.pt", 1))
    state.set_run(ShownRun(Path("/runs/a"), info="updated run.json"))
    assert state.checkpoint is not None


def test_editing_the_config_keeps_every_other_setting():
    state = AppState(config=RunConfig(split_seed=7, weight_decay=0.01, ols_init="zeros",
                                      amp=False, calibration_bins=20))
    seen = recorder(state)
    state.edit_config(epochs=3)
    assert state.config == RunConfig(split_seed=7, weight_decay=0.01, ols_init="zeros",
                                     amp=False, calibration_bins=20, epochs=3)
    state.edit_config(epochs=3)  # no change, no event
    assert [n for n, _ in seen] == ["config"]

