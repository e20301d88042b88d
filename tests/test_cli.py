"""The olsdesk command: version without heavy imports, exit codes, train, demo-data."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from olsdesk.cli import main
from tests.helpers import make_class_folder

TINY = ["--demo-per-class", "4", "--image-size", "32", "--batch-size", "16", "--device", "cpu"]


def test_version_imports_neither_torch_nor_qt():
    code = ("import sys\nfrom olsdesk.cli import main\ntry:\n    main(['--version'])\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'PySide6' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("olsdesk ")


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--data", "/no/such/folder"], "does not exist"),
    (["train", "--model", "alexnet"], "invalid choice"),
    (["train", "--loss", "poly"], "invalid choice"),
    (["train", "--epochs", "three"], "not a whole number"),
    (["train", "--lr", "-0.1"], "positive"),
    (["train", "--alpha", "1.5"], "between 0 and 1"),
    (["train", "--resume", "/no/such/run"], "not a folder"),
    (["train", "--resume", "some-run", "--lr", "0.1"], "cannot change a run being continued"),
    (["train", "--weight-decay", "nan"], "not a finite number"),
    (["train", "--split-seed", "-1"], "seeds must be whole numbers"),
])
def test_bad_invocations_exit_2_with_one_sentence(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_folder_with_one_class_or_no_images_exits_2(tmp_path, capsys):
    make_class_folder(tmp_path / "one", {"only": 3})
    assert main(["train", "--data", str(tmp_path / "one")]) == 2
    assert "only one class" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err


def test_train_prints_a_line_per_epoch_and_where_the_run_is(tmp_path, capsys):
    assert main(["train", "--epochs", "2", "--runs-dir", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("epoch ") == 2 and "val top1" in out
    run_line = out.strip().splitlines()[-1]
    assert run_line.startswith("run written to ")
    run = run_line.removeprefix("run written to ")
    # resume with more epochs continues the same run
    assert main(["train", "--resume", run, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 2" in out and "epoch 3/3" in out


def test_train_on_an_image_folder(tmp_path, capsys):
    root = make_class_folder(tmp_path / "data", {"CT/a": 6, "CT/b": 6, "MR/c": 6})
    assert main(["train", "--data", str(root), "--epochs", "1", "--image-size", "16",
                 "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "3 classes" in capsys.readouterr().out


def test_demo_data_writes_png_class_folders(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path), "--per-class", "2"]) == 0
    pngs = sorted(tmp_path.rglob("*.png"))
    assert len(pngs) == 24
    assert (tmp_path / "CT" / "lung" / "nodule" / "0001.png").exists()


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrapped


def test_train_help_states_every_runconfig_setting_with_its_default(capsys):
    from dataclasses import fields

    from olsdesk.config import RunConfig

    text = help_of("train", capsys)
    for f in fields(RunConfig):
        flag = {"num_workers": "--workers", "amp": "--no-amp", "audit_data": "--no-audit-data"}.get(
            f.name, "--" + f.name.replace("_", "-"))
        assert flag in text, flag
        assert " ".join(f.metadata["help"].split()[:4]) in text, f.name
    assert "(default: 0.003)" in text and "(default: adamw)" in text
    compare = help_of("compare", capsys)
    assert "--losses" in compare and "--loss " not in compare and "(default: 10)" in compare
    predict = help_of("predict", capsys)
    assert "(default: 5)" in predict and "(default: auto)" in predict


def test_train_from_imagenet_weights_says_what_it_loaded_and_records_it(tmp_path, monkeypatch,
                                                                        capsys):
    """--weights imagenet: offline and not cached, exit 2 naming the file and the folder;
    cached in TORCH_HOME, the CLI and log.txt say how many tensors were loaded, and
    run.json records the weights' name and SHA-256."""
    import hashlib
    import json

    import torch
    from torchvision.models import resnet18

    from olsdesk.core import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, path):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights, "_download", offline)
    args = ["train", *TINY, "--epochs", "1", "--model", "resnet18", "--weights", "imagenet",
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "put resnet18-f37072fd.pth" in err and str(tmp_path / "torch" / "hub") in err
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "weights: 100 of 100 backbone tensors loaded from resnet18-f37072fd.pth" in out
    (run,) = (tmp_path / "runs").iterdir()
    recorded = json.loads((run / "run.json").read_text())["weights"]
    digest = hashlib.sha256((cache / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    assert recorded["name"] == "imagenet" and recorded["sha256"] == digest
    assert (recorded["loaded"], recorded["total"]) == (100, 100)
    assert "weights: 100 of 100" in (run / "log.txt").read_text()
    assert main(["train", *TINY, "--weights", "imagenet"]) == 2  # the small CNN has none
    assert "no ImageNet weights for the small CNN" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--loss", "focal"], ["--loss", "focal", "--focal-gamma", "2"],
                                   ["--loss", "mbls", "--mbls-margin", "5",
                                    "--mbls-lambda", "0.2"]])
def test_the_calibration_baselines_train(extra, tmp_path, capsys):
    import json

    assert main(["train", *TINY, "--epochs", "1", "--runs-dir", str(tmp_path), *extra]) == 0
    (run,) = tmp_path.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == extra[1]
    if "--mbls-margin" in extra:
        assert (config["mbls_margin"], config["mbls_lambda"]) == (5.0, 0.2)


def test_audit_names_the_leak_and_the_blank_image(tmp_path, capsys):
    root = make_class_folder(tmp_path / "data", {"ct": 10, "mr": 10})
    files = sorted(root.rglob("*.png"))
    files[1].write_bytes(files[0].read_bytes())  # the same slice twice in one class
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(files[2])  # a blank one
    out = tmp_path / "audit.json"
    assert main(["audit", str(root), "--test-fraction", "0.3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 image(s) are constant" in text
    assert ("repeat another file of their class" in text
            or "appear in more than one split" in text)
    found = json.loads(out.read_text())
    assert found["files"]["test"] > 0 and found["constant_images"] == 1
    assert main(["audit", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("argv,said", [
    (["evaluate", "--checkpoint", "c.pt", "--out", "o", "--resamples", "100000000"],
     "--resamples: 100000000 is not between 1 and 10,000"),
    (["compare", "--data", "demo", "--out", "o", "--resamples", "100000000000000000000000"],
     "--resamples: 100000000000000000000000 is not between 1 and 10,000"),
    (["evaluate", "--checkpoint", "c.pt", "--out", "o", "--seed", "-1"],
     "--seed: -1 is not between 0 and 4,294,967,295"),
    (["demo-data", "--out", "o", "--seed", "-1"], "--seed: -1 is not between 0 and"),
    (["demo-data", "--out", "o", "--per-class", "1000000000"],
     "--per-class: 1000000000 is not between 1 and 100,000"),
])
def test_counts_and_seeds_are_bounded_before_any_work(argv, said, tmp_path, monkeypatch,
                                                      capsys):
    """1e8 resamples got evaluate killed for memory, 1e23 an OverflowError after all the
    training, a negative seed a numpy traceback."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_while_the_data_loads_is_a_word_not_a_traceback(tmp_path, monkeypatch, capsys):
    import olsdesk.core.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "open_dataset", interrupted)
    assert main(["train", "--data", "demo", "--runs-dir", str(tmp_path / "runs"),
                 "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "olsdesk: stopped." and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
