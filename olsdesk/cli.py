"""The ``olsdesk`` command: the app with no arguments, or ``train``, ``predict``, ``compare``,
``evaluate``, ``audit``, ``demo-data``.

Heavy libraries (torch, Qt) are imported inside the commands, so ``olsdesk --version``
and argument errors answer at once. The options of ``train`` and ``compare`` are
generated from ``RunConfig``'s fields, so their defaults, choices and help are stated
once. A wrong invocation exits 2 with one sentence on stderr; a training that fails
exits 1 with one sentence. ``compare`` and ``predict`` never need Qt.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from olsdesk import __version__
from olsdesk.config import (
    CONFORMAL_METHODS,
    DEVICES,
    LOSS_NAMES,
    MAX_RESAMPLES,
    MODEL_NAMES,
    PAPER_LOSSES,
    RECALIBRATOR_LABELS,
    RECALIBRATORS,
    RunConfig,
)
from olsdesk.errors import OlsdeskError, UsageError, os_reason, printable


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, no usage dump
        raise UsageError(message[0].upper() + message[1:] + ("" if message.endswith(".") else "."))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _whole(lo: int, hi: int, what: str = ""):
    """An argparse type: a whole number from ``lo`` to ``hi`` (``what`` says why the top)."""
    def parse(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not between {lo:,} and {hi:,}{what}")
        return value
    return parse


_seed = _whole(0, 2**32 - 1)  # numpy's generators take seeds of 32 bits
_resamples = _whole(1, MAX_RESAMPLES, " (bootstrap intervals settle well before that)")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


# RunConfig fields the CLI names differently, or leaves out of a command
_FLAG = {"num_workers": "--workers"}
# the settings that decide which files and which split the audit sees
_AUDIT_OPTIONS = {"split_csv", "val_fraction", "test_fraction", "test_data", "split_seed",
                  "group_pattern", "demo_per_class"}
_NOT_IN_COMPARE = {"loss", "seed", "alpha"}  # set per run by --losses and --seeds


def _field_type(name: str) -> type:
    """int, float, str or bool: a RunConfig field's type (``int | None`` -> int)."""
    hint = typing.get_type_hints(RunConfig)[name]
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def add_config_options(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    """One option per RunConfig field: its help, choices and default as RunConfig states them.

    Options default to "not given" so a command fills only what the user typed and
    RunConfig supplies the rest (``train --resume`` keeps the run's own settings).
    """
    for f in fields(RunConfig):
        if f.name in skip:
            continue
        meta = f.metadata
        flag = _FLAG.get(f.name, "--" + f.name.replace("_", "-"))
        kind = _field_type(f.name)
        default = f.default if f.default is not MISSING else None
        help_text = meta.get("help", "").replace("%", "%%")
        if kind is bool:
            if default:
                parser.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                                    default=argparse.SUPPRESS, help=f"no {help_text}")
            else:
                parser.add_argument(flag, dest=f.name, action="store_true",
                                    default=argparse.SUPPRESS, help=help_text)
            continue
        if default is not None and "(default" not in help_text:
            help_text += f" (default: {default})"
        converter = {int: _int, float: _float}.get(kind, str)
        parser.add_argument(flag, dest=f.name, type=converter, choices=meta.get("choices"),
                            metavar=meta.get("metavar") or {int: "N", float: "X"}.get(kind),
                            default=argparse.SUPPRESS,
                            help=help_text)


def config_from(args: argparse.Namespace, base: str | None = None, **overrides) -> RunConfig:
    """A validated RunConfig from the options given (over the settings in the config.json
    ``base``, if any); ConfigError says what is wrong."""
    from olsdesk.core.files import read_regular_text
    from olsdesk.errors import ConfigError

    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    start = {}
    if base:
        try:
            start = RunConfig.from_json(read_regular_text(Path(base).expanduser()))
        except OSError as exc:
            raise ConfigError(f"{base} cannot be read ({exc.strerror}).") from None
        except ValueError as exc:
            raise ConfigError(f"{base} is not an olsdesk config.json "
                              f"({str(exc).rstrip('.')}).") from None
        start = start.to_dict()
    return RunConfig(**{**start, **given, **overrides}).validated()


def add_set_options(parser: argparse.ArgumentParser) -> None:
    """The conformal prediction sets' options (predict and evaluate)."""
    parser.add_argument("--coverage", type=_float, default=0.9,
                        help="the share of images whose prediction set holds the true "
                             "class (default: 0.9)")
    parser.add_argument("--conformal", choices=CONFORMAL_METHODS, default="raps",
                        help="the conformal score: raps (sets grow with the model's doubt, "
                             "without long tails of unlikely classes), aps (the same with "
                             "the tails) or lac (smallest sets, may be empty) "
                             "(default: raps)")
    parser.add_argument("--class-conditional", action="store_true",
                        help="one threshold a class, so every class is covered at "
                             "--coverage, not only on average")


def check_coverage(args: argparse.Namespace) -> None:
    if not 0 < args.coverage < 1:
        raise UsageError(f"--coverage {args.coverage:g} must lie between 0 and 1 (0.9: the "
                         "sets hold the true class of 90 % of images).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="olsdesk", description="Train medical-image classifiers with Online "
                     "Label Smoothing and watch what it does. With no command, opens the app.")
    parser.add_argument("--version", action="version", version=f"olsdesk {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="build the window offscreen, train one tiny epoch, render every "
                             "panel, exit 0 when all is well")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model from the command line")
    add_config_options(train)
    train.add_argument("--runs-dir", metavar="DIR", help="where runs are written "
                       "(default: the user data folder)")
    train.add_argument("--resume", metavar="RUN",
                       help="continue a run from its last checkpoint (its folder, or its name "
                            "in --runs-dir); other options but --epochs are the run's own")
    train.add_argument("--config", metavar="FILE",
                       help="start from the settings in a run's config.json; options given "
                            "here override them")
    train.add_argument("--name", metavar="NAME",
                       help="the run folder's name (default: date, time, model, loss, seed)")
    train.add_argument("--gpus", type=_positive_int, metavar="N",
                       help="train with N processes on this machine (one a GPU; with "
                            "--device cpu, N CPU processes): starts torchrun for you. "
                            "--batch-size is per process")

    predict = sub.add_parser("predict", help="predict the class of images with a checkpoint")
    predict.add_argument("--checkpoint", required=True, metavar="PATH",
                         help="an olsdesk checkpoint (a run's checkpoints/best.pt)")
    predict.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                         help="images (PNG, JPEG, TIFF, BMP, DICOM) or folders of them")
    predict.add_argument("--top-k", type=_positive_int, default=5,
                         help="classes to list a file (default: 5)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--device", choices=DEVICES, default="auto",
                         help=RunConfig.__dataclass_fields__["device"].metadata["help"]
                         + " (default: auto)")
    add_set_options(predict)
    predict.add_argument("--recalibration", choices=RECALIBRATORS, default="temperature",
                         help="the recalibrator (fitted on validation) the calibrated "
                              "confidence comes from (default: temperature)")

    evaluate = sub.add_parser(
        "evaluate", help="evaluate a checkpoint on its test split, with 95%% intervals",
        description="Evaluate a checkpoint on test images it has never seen: the run's "
        "held-out test split (from the data and split stored in the checkpoint), the test "
        "split of --data, or an external --test-data folder. Writes predictions.csv "
        "(and its numbers as predictions.npz), "
        "metrics.json, per_class.csv, confusion_matrix.csv, top_confusions.csv, "
        "reliability.csv, reliability_smooth.csv, risk_coverage.csv and figures.")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH",
                          help="an olsdesk checkpoint (a run's checkpoints/best.pt)")
    evaluate.add_argument("--data", metavar="PATH",
                          help="evaluate on this data's test split instead of the run's own "
                               "data (same classes)")
    evaluate.add_argument("--split-csv", metavar="DIR",
                          help="with --data: folder with train/val/test split CSVs")
    evaluate.add_argument("--test-data", metavar="DIR",
                          help="an external test folder (another hospital) with class folders "
                               "named as the run's classes")
    evaluate.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    add_set_options(evaluate)
    evaluate.add_argument("--ood-data", metavar="DIR",
                          help="a folder of images unlike the training data (another "
                               "modality, another body part): reports how well the "
                               "unfamiliar-input score tells them from the test images "
                               "(AUROC, FPR at 95%% TPR)")
    evaluate.add_argument("--recalibration", choices=RECALIBRATORS, default="temperature",
                          help="the recalibrator (fitted on validation) whose probabilities "
                               "predictions.csv gets beside the temperature's; every one "
                               "the checkpoint holds is compared on test either way "
                               "(default: temperature)")
    evaluate.add_argument("--resamples", type=_resamples, default=1000,
                          help="bootstrap resamples for the intervals (default: 1000)")
    evaluate.add_argument("--seed", type=_seed, default=0,
                          help="seed of the bootstrap resamples (default: 0)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=64,
                          help="images a batch (default: 64)")
    evaluate.add_argument("--workers", type=_int, default=None, metavar="N",
                          help="data-loader processes (default: on a GPU one per core but "
                               "one, up to 16; on the CPU up to 4 for files)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto",
                          help=RunConfig.__dataclass_fields__["device"].metadata["help"]
                          + " (default: auto)")

    compare = sub.add_parser("compare", help="train several losses x seeds and report")
    add_config_options(compare, skip=_NOT_IN_COMPARE)
    compare.add_argument("--losses", default=",".join(PAPER_LOSSES),
                         help="comma-separated, from " + ",".join(LOSS_NAMES)
                         + f" (default: the OLS paper's {','.join(PAPER_LOSSES)})")
    compare.add_argument("--models", metavar="LIST",
                         help="comma-separated models, from " + ",".join(MODEL_NAMES)
                         + ", each a study in OUT/<model> and one table over them in OUT "
                         "(default: --model's)")
    compare.add_argument("--alphas", metavar="LIST",
                         help="comma-separated α values, each an arm for OLS and TF-KD "
                              "(default: each loss's own)")
    compare.add_argument("--epsilons", metavar="LIST",
                         help="comma-separated ε values, each an arm for label smoothing "
                              "(default: --epsilon's)")
    compare.add_argument("--imbalance", metavar="LIST",
                         help="comma-separated remedies for class imbalance, each an arm "
                              "of every loss: none, balanced (a class-balanced sampler), "
                              "weighted (inverse-frequency class weights)")
    compare.add_argument("--seeds", type=_positive_int, default=3,
                         help="seeds an arm, 0 to N-1 (default: 3)")
    compare.add_argument("--out", required=True, metavar="DIR",
                         help="where runs, report.md, results.csv, test_results.csv and "
                              "figures go")
    compare.add_argument("--resamples", type=_resamples, default=1000,
                         help="bootstrap resamples of the test images for the intervals "
                              "(default: 1000)")

    audit = sub.add_parser("audit", help="find duplicates, leaks across splits, constant "
                           "and unreadable images in a dataset")
    audit.add_argument("data", metavar="DATA", help="an image folder or a MedMNIST .npz "
                       "(or 'demo')")
    add_config_options(audit, skip={f.name for f in fields(RunConfig)} - _AUDIT_OPTIONS)
    audit.add_argument("--decode", action="store_true",
                       help="decode every image (finds every constant and truncated file; "
                            "slower): by default only duplicates and files under 4 KiB are "
                            "decoded")
    audit.add_argument("--json", metavar="FILE",
                       help="also write the findings (counts and examples) to FILE as JSON")

    demo = sub.add_parser("demo-data", help="write the built-in demo set as PNG class folders")
    demo.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    demo.add_argument("--per-class", type=_whole(1, 100_000), default=200,
                      help="images a class (default: 200)")
    demo.add_argument("--seed", type=_seed, default=0, help="generator seed (default: 0)")
    return parser


class ProgressPrinter:
    """A one-line progress bar on stderr (when it is a terminal) and a line per epoch."""

    def __init__(self, stream=None, out=None) -> None:
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.live = self.stream.isatty()
        self.last = 0.0

    def batch(self, p) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if p.phase == "compile":
            self.stream.write(f"\repoch {p.epoch}/{p.epochs}: compiling the model "
                              "(torch.compile: the first steps take longer)… ")
            self.stream.flush()
            return
        if now - self.last < 0.1 and p.batch != p.batches:
            return
        self.last = now
        width = 30
        filled = int(width * p.fraction_of_epoch)
        loss = "" if p.loss != p.loss else f" loss {p.loss:.3f}"
        self.stream.write(f"\repoch {p.epoch}/{p.epochs} [{'#' * filled}{'.' * (width - filled)}]"
                          f" {p.phase} {p.batch}/{p.batches}{loss} {p.images_per_second:.0f} img/s ")
        self.stream.flush()

    def epoch(self, r) -> None:
        if self.live:
            self.stream.write("\r" + " " * 100 + "\r")
        skipped = f"  skipped {r.skipped_files}" if r.skipped_files else ""
        print(f"epoch {r.epoch}/{r.epochs}  train loss {r.train_loss:.4f} top1 {r.train_top1:.3f}"
              f"  val top1 {r.val_top1:.3f} top5 {r.val_top5:.3f} nll {r.val_nll:.3f}"
              f" ece {r.ece:.3f}  {r.epoch_seconds:.1f}s + {r.analysis_seconds:.1f}s analysis"
              f" {r.images_per_second:.0f} img/s{skipped}",
              file=self.out, flush=True)


def launch_processes(argv: list[str], processes: int) -> int:
    """``olsdesk train`` again, as ``processes`` torchrun processes on this machine."""
    from torch.distributed.run import main as torchrun

    if "RANK" in os.environ:
        raise UsageError("--gpus starts torchrun itself; under torchrun, leave it out.")
    rest, skip = [], False
    for arg in argv:  # the same command without --gpus
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            rest.append(arg)
    program = (["--no-python", sys.executable] if getattr(sys, "frozen", False)
               else ["-m", "olsdesk"])
    try:
        torchrun(["--standalone", f"--nproc-per-node={processes}", *program, *rest])
    except Exception as exc:  # torchrun raises ChildFailedError with every rank's story
        print(f"olsdesk: training with {processes} processes failed ({type(exc).__name__}); "
              "each process's error is above.", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from olsdesk.core.device import describe_device
    from olsdesk.core.report import EpochReport
    from olsdesk.core.trainer import Trainer

    if args.gpus and args.gpus > 1:
        return launch_processes(list(sys.argv[1:] if argv is None else argv), args.gpus)
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 speaks for all
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process

    if args.resume and (args.config or args.name):
        raise UsageError("--config and --name start a new run; a run being continued keeps "
                         "its own.")
    if args.resume:
        others = sorted(f.name for f in fields(RunConfig) if hasattr(args, f.name)
                        and f.name != "epochs")
        if others:
            flag = _FLAG.get(others[0], "--" + others[0].replace("_", "-"))
            raise UsageError(f"{flag} cannot change a run being continued; with --resume only "
                             "--epochs can be set (the run keeps its own settings).")
    try:
        if args.resume:
            from olsdesk.core.runs import RunStore

            if RunStore.find(args.resume, args.runs_dir).status == "interrupted":
                print("this run was interrupted (its process ended mid-epoch); continuing from "
                      "its last checkpoint", flush=True)
            trainer = Trainer.from_run(args.resume, args.runs_dir,
                                       epochs=getattr(args, "epochs", None))
        else:
            trainer = Trainer(config_from(args, base=args.config), runs_dir=args.runs_dir,
                              run_name=args.name)
        trainer.prepare()
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    data = trainer.dataset
    print(f"{data.source}: {len(data.train)} training and {len(data.val)} validation images, "
          f"{data.num_classes} classes; {trainer.config.model}, loss {trainer.config.loss}, "
          f"on {describe_device(trainer.device)}", flush=True)
    for warning in data.all_warnings():
        print(f"warning: {warning}", flush=True)
    if trainer.weights_report is not None:
        print(trainer.weights_report.sentence(), flush=True)
    if trainer.start_epoch:
        print(f"resuming after epoch {trainer.start_epoch}", flush=True)
    printer = ProgressPrinter()
    fit = trainer.fit()
    try:
        for item in fit:
            if isinstance(item, EpochReport):
                printer.epoch(item)
            else:
                printer.batch(item)
    except KeyboardInterrupt:
        fit.close()
        print(f"\nstopped; continue with: olsdesk train --resume {trainer.store.path}",
              file=sys.stderr)
        return 130
    except OlsdeskError as exc:
        print(f"olsdesk: {exc}", file=sys.stderr)
        print(f"run written to {trainer.store.path}", file=sys.stderr)
        return 1
    if trainer.skipped:
        print(f"{len(trainer.skipped)} unreadable files were skipped; "
              f"see {trainer.store.path / 'log.txt'}")
    print(f"run written to {trainer.store.path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """One line (or JSON object) per file; exit 1 when any file failed."""
    import json

    from olsdesk.core.predictor import Predictor

    check_coverage(args)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    predictor.use_sets(args.conformal, args.coverage, args.class_conditional)
    try:
        predictor.use_recalibration(args.recalibration)
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    calibrated = ("calibrated" if args.recalibration == "temperature"
                  else RECALIBRATOR_LABELS[args.recalibration])
    lacking = [what for what, there in (("conformal calibration (no prediction sets)",
                                          predictor.sets), ("unfamiliar-input detector "
                                          "(no unfamiliar mark)", predictor.familiarity))
               if there is None]
    if lacking:
        print(f"warning: the checkpoint holds no {' and no '.join(lacking)}: it was saved by "
              "an older olsdesk; retrain to get them.", file=sys.stderr)
    missing = [p for p in args.paths if not Path(p).expanduser().exists()]
    if missing and len(missing) == len(args.paths):
        raise UsageError(f"{missing[0]} does not exist.")
    failed = 0
    for prediction in predictor.iter_predict(args.paths, top_k=args.top_k):  # as batches end
        failed += not prediction.ok
        name = printable(prediction.path, one_line=True)
        if args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        elif prediction.ok:
            top = "  ".join(f"{c} {p:.1%}" for c, p in
                            zip(prediction.top_classes, prediction.top_probabilities, strict=True))
            note = f", {prediction.note}" if prediction.note else ""
            held = f"; set {prediction.set_summary()}" if prediction.set_text else ""
            print(printable(f"{name}: {top}  ({calibrated} {prediction.calibrated_confidence:.1%},"
                            f" entropy {prediction.entropy:.2f}{note}){held}", one_line=True),
                  flush=True)
            if prediction.unfamiliar:
                print(f"  warning: {printable(prediction.unfamiliar_sentence, True)}", flush=True)
        else:
            print(f"{name}: ERROR {printable(prediction.error, one_line=True)}", flush=True)
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, print every metric with its interval, write the files."""
    from olsdesk.core.bootstrap import SUMMARY_METRICS
    from olsdesk.core.evaluation import (
        METRIC_LABELS,
        Evaluation,
        format_interval,
        iter_evaluate,
        write_evaluation,
    )

    if args.split_csv and not args.data:
        raise UsageError("--split-csv needs --data.")
    if args.test_data and args.data:
        raise UsageError("give --data or --test-data, not both.")
    if args.workers is not None and not 0 <= args.workers <= 256:
        raise UsageError("the number of loader workers must be between 0 and 256.")
    check_coverage(args)
    from olsdesk.core.outputs import check_output_folder

    try:  # before the work, as train checks its runs folder
        check_output_folder(args.out)
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    printer = ProgressPrinter()
    result = None
    try:
        for item in iter_evaluate(args.checkpoint, data=args.data, split_csv=args.split_csv,
                                  test_data=args.test_data, device=args.device,
                                  resamples=args.resamples, seed=args.seed,
                                  batch_size=args.batch_size, workers=args.workers,
                                  conformal=args.conformal, coverage=args.coverage,
                                  class_conditional=args.class_conditional,
                                  ood_data=args.ood_data,
                                  recalibration=args.recalibration):
            if isinstance(item, Evaluation):
                result = item
            elif printer.live and item.phase in ("predict", "ood"):
                what = "test images" if item.phase == "predict" else "--ood-data files"
                printer.stream.write(f"\rpredicting {item.done}/{item.total} {what} ")
                printer.stream.flush()
            elif item.phase == "bootstrap":
                if printer.live:
                    printer.stream.write("\r" + " " * 60 + "\r")
                print(f"{item.total} test images predicted; bootstrapping {args.resamples} "
                      "resamples", flush=True)
    except KeyboardInterrupt:
        print("\nstopped; nothing was written", file=sys.stderr)
        return 130
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    renderer, note = evaluation_renderer()
    paths = write_evaluation(result, args.out, renderer)
    print(f"{len(result.labels)} test images ({result.source}), checkpoint of epoch "
          f"{result.epoch}; {len(result.unreadable)} unreadable. 95% intervals from "
          f"{args.resamples} bootstrap resamples of the images:")
    width = max(len(v) for v in METRIC_LABELS.values())
    print(f"  {'':{width}}  {'raw':<26}  temperature-scaled (T = {result.temperature:.3f})")
    for m in SUMMARY_METRICS:
        raw = format_interval(result.raw.value[m], result.raw.interval(m))
        scaled = format_interval(result.scaled.value[m], result.scaled.interval(m))
        print(f"  {METRIC_LABELS[m]:{width}}  {raw:<26}  {scaled}")
    print("  recalibrators fitted on validation, on these test images:")
    compared = result.results()
    for name, metric in (("nll", "NLL"), ("ece", "ECE"), ("smooth_ece", "smooth ECE"),
                         ("l2_ce_debiased", "debiased L2 CE"), ("top1", "Top-1")):
        cells = [f"{key} {format_interval(r.value[name], r.interval(name))}"
                 for key, r in compared.items()]
        print(f"    {metric}: " + "; ".join(cells))
    conformal = result.conformal_dict()
    if conformal is not None:
        cov, size = conformal["set_coverage"], conformal["mean_set_size"]
        print(f"  {conformal['method'].upper()} prediction sets for {args.coverage:.0%} "
              f"coverage{' (per class)' if args.class_conditional else ''}, calibrated on "
              f"{conformal['calibration_images']} validation images: coverage "
              f"{format_interval(cov['value'], cov['ci95'])}, mean size "
              f"{format_interval(size['value'], size['ci95'])}")
    ood = result.ood_dict()
    if ood is not None:
        line = (f"  unfamiliar inputs ({ood['method']}, threshold keeping "
                f"{ood['keep_target']:.0%} of validation): {ood['test_unfamiliar']:.1%} of test "
                "images marked")
        if "auroc" in ood:
            line += (f"; against {ood['unfamiliar_images']} images of {ood['folder']}: AUROC "
                     f"{ood['auroc']:.3f}, FPR at 95% TPR {ood['fpr_at_95_tpr']:.3f}, "
                     f"{ood['folder_unfamiliar']:.1%} marked")
        print(line)
    frequency = result.frequency
    if frequency is not None and frequency["equal_classes"]:
        each = frequency["groups"]["head"]["train_images"][0]
        print(f"  by training frequency: every class has {each:,} training images, so "
              "there is no head or tail")
    elif frequency is not None:
        parts = [f"{name} ({g['classes']} classes, {g['train_images'][0]:,}-"
                 f"{g['train_images'][1]:,} training images): accuracy {g['accuracy']:.3f}, "
                 f"ECE {g['ece']:.3f}" for name, g in frequency["groups"].items()
                 if "accuracy" in g]
        print(f"  by training frequency (classes in thirds, most images first; imbalance "
              f"{frequency['imbalance_ratio']:.1f}x): " + "; ".join(parts))
    confused = result.top_confusions(limit=5)
    if confused:
        names = result.class_names
        print("  most confused (true -> predicted: images, share of the true class):")
        for c in confused:
            print(printable(f"    {names[c.true]} -> {names[c.predicted]}: {c.count} "
                            f"({c.share_of_true:.1%})"))
    for warning in result.warnings:
        print(f"warning: {warning}")
    if note:
        print(note)
    print(f"wrote {', '.join(p.name for p in paths)} to {Path(args.out).expanduser()}")
    return 0


def evaluation_renderer():
    """(the app's evaluation figure renderer, "") or (None, why figures are skipped)."""
    return _renderer("write_evaluation_figures")


def figure_renderer():
    """(the app's study figure renderer, "") or (None, why figures are skipped)."""
    return _renderer("write_comparison_figures")


def _renderer(name: str):
    try:
        from olsdesk.gui import figures
    except ImportError as exc:  # no Qt, or Qt without its system libraries (libGL, libEGL)
        return None, f"Figures were skipped: Qt cannot load on this machine ({exc})."
    return getattr(figures, name), ""


def _items(text: str | None) -> list[str]:
    """The entries of a comma-separated option, blanks left out."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _values(text: str | None, flag: str) -> list[float]:
    """A comma-separated list of numbers, or UsageError naming the one that is not."""
    out = []
    for part in _items(text):
        try:
            out.append(float(part))
        except ValueError:
            raise UsageError(f"{part!r} in {flag} is not a number.") from None
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    """Train every model x arm x seed (resuming what is done), then write the reports
    and figures: one study a model, and a table over the models."""
    from olsdesk.core.study import IMBALANCE, Study, write_models_report

    losses = _items(args.losses)
    unknown = [x for x in losses if x not in LOSS_NAMES]
    if unknown or not losses:
        raise UsageError(f"unknown loss '{unknown[0] if unknown else ''}' in --losses; choose "
                         f"from {', '.join(LOSS_NAMES)}.")
    models = _items(args.models)
    strange = [m for m in models if m not in MODEL_NAMES]
    if strange:
        raise UsageError(f"unknown model '{strange[0]}' in --models; choose from "
                         f"{', '.join(MODEL_NAMES)}.")
    alphas, epsilons = _values(args.alphas, "--alphas"), _values(args.epsilons, "--epsilons")
    if alphas and not {"ols", "tfkd"} & set(losses):
        raise UsageError("--alphas sets OLS's and TF-KD's α; --losses names neither.")
    if epsilons and "ls" not in losses:
        raise UsageError("--epsilons sets label smoothing's ε; --losses does not name ls.")
    imbalance = _items(args.imbalance)
    odd = [x for x in imbalance if x not in IMBALANCE]
    if odd:
        raise UsageError(f"unknown remedy '{odd[0]}' in --imbalance; choose from "
                         f"{', '.join(IMBALANCE)}.")
    out = Path(args.out).expanduser()
    try:
        base = config_from(args)
        models = models or [base.model]
        studies = [Study(base.replace(model=m).validated(), losses, args.seeds,
                         out / m if len(models) > 1 else out, alphas=alphas,
                         epsilons=epsilons, imbalance=imbalance) for m in models]
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    dataset = None
    for number, study in enumerate(studies):
        if len(studies) > 1:
            print(f"model {number + 1}/{len(studies)}: {study.base.model} -> {study.out}",
                  flush=True)
        study.dataset = dataset  # every model trains on the same data, opened once
        code = _run_study(study, args.resamples, out)
        if code:
            return code
        dataset = study.dataset
    if len(studies) > 1:
        paths = write_models_report(out, studies, args.seeds)
        print(f"wrote {', '.join(p.name for p in paths)} over {len(studies)} models to {out}")
    return 0


def _run_study(study, resamples: int, out: Path) -> int:
    """One study trained, scored on test and reported, as compare prints it."""
    from olsdesk.core.report import EpochReport, RunStarted

    printer = ProgressPrinter()
    try:
        for step in study.run():
            prefix = f"[{step.index + 1}/{step.total}] {step.name}"
            if isinstance(step.item, RunStarted):
                start = step.item.start_epoch
                print(f"{prefix}: " + (f"resuming after epoch {start}" if start else "starting"),
                      flush=True)
            elif isinstance(step.item, EpochReport):
                print(prefix + " ", end="", flush=True)
                printer.epoch(step.item)
            elif isinstance(step.item, str):
                print(f"{prefix}: {step.item}", flush=True)
            else:
                printer.batch(step.item)
    except KeyboardInterrupt:
        print(f"\nstopped; run the same command again to continue in {out}", file=sys.stderr)
        return 130
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    if study.dataset is not None and study.dataset.test is not None and study.stores:
        print(f"scoring every run's best checkpoint on {len(study.dataset.test)} test images "
              f"({resamples} bootstrap resamples)", flush=True)
    try:
        test = study.score_on_test(resamples)
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    renderer, note = figure_renderer()
    if note:
        print(note, flush=True)
    paths = study.write_report(renderer, note)
    if test is not None:
        print("On the test split, against hard labels (paired 95% intervals):")
        for line in test.reading():
            print(f"  {line}")
    print(f"wrote {', '.join(p.name for p in paths)} to {study.out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Hash the dataset's splits and print what repeats, leaks, is blank or unreadable."""
    import json

    from olsdesk.core.audit import audit_dataset
    from olsdesk.core.data.sources import open_dataset

    try:
        dataset = open_dataset(config_from(args, audit_data=False))
    except OlsdeskError as exc:
        raise UsageError(str(exc)) from None
    splits = ", ".join(f"{len(s):,} {name}" for name, s in
                       (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))
                       if s is not None)
    print(f"auditing {dataset.source}: {splits} images, {dataset.num_classes} classes",
          flush=True)
    live = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if live:
            sys.stderr.write(f"\rhashed {done:,} of {total:,} files ")
            sys.stderr.flush()

    started = time.monotonic()
    try:
        report = audit_dataset(dataset, decode=args.decode, progress=progress)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    if live:
        sys.stderr.write("\r" + " " * 40 + "\r")
    for line in report.lines():
        print(line)
    shown = [("in more than one split", report.across_splits),
             ("under two or more labels", report.across_classes),
             ("repeated within a class", report.within_class)]
    for title, groups in shown:
        if groups:
            print(f"identical files {title} (first {min(len(groups), 10)} of {len(groups):,}):")
            for group in groups[:10]:
                print("  " + " = ".join(f"{c.split}:{c.label}:{c.name}" for c in group))
    for copy in report.constant[:10]:
        print(f"constant: {copy.split}:{copy.label}:{copy.name}")
    for _, why in report.unreadable[:10]:
        print(f"unreadable: {why}")
    print(f"{report.total:,} images audited in {time.monotonic() - started:.1f} s")
    if args.json:
        try:
            Path(args.json).expanduser().write_text(json.dumps(report.to_dict(), indent=1),
                                                    encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.json} cannot be written ({exc.strerror}).") from None
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from PIL import Image

    from olsdesk.core.data.demo import make_demo

    out = Path(args.out).expanduser()
    demo = make_demo(args.per_class, seed=args.seed)
    counters: dict[int, int] = {}
    for image, label in zip(demo.images, demo.labels, strict=True):
        folder = out / demo.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        n = counters.get(int(label), 0)
        counters[int(label)] = n + 1
        Image.fromarray(image).save(folder / f"{n:04d}.png")
    print(f"wrote {len(demo.images)} images in {len(demo.class_names)} class folders to {out}")
    return 0


def log_to_file() -> Path | None:
    """Send warnings with their tracebacks (a file a decoder choked on, say) to
    olsdesk.log in the user's log folder, where the one-sentence messages point; None
    when that folder cannot be written (the messages still reach the user)."""
    import logging

    from platformdirs import user_log_dir

    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) for h in root.handlers):
        return None
    path = Path(user_log_dir("olsdesk", appauthor=False)) / "olsdesk.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    except OSError:
        return None
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    # a full disk must not print a traceback a log line: the log is not worth the work
    logging.raiseExceptions = False
    for noisy in ("pydicom",):  # pydicom logs every decoder attempt it makes as an error
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is not None or not args.self_test:
            log_to_file()
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "demo-data":
            return cmd_demo_data(args)
        if args.command == "audit":
            return cmd_audit(args)
        from olsdesk.gui.app import run_app

        return run_app(self_test=args.self_test)
    except UsageError as exc:
        print(f"olsdesk: {exc}", file=sys.stderr)
        return 2
    except OlsdeskError as exc:  # the work failed, in one sentence (a disk full of results)
        print(f"olsdesk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside training's own handling (reading the data)
        print("\nolsdesk: stopped.", file=sys.stderr)
        return 130  # as a shell reports a process ended by SIGINT
    except BrokenPipeError:  # `olsdesk predict ... | head -1`: the reader has all it wants
        _silence_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
            raise
        _silence_stdout()
        logging.getLogger(__name__).warning("output failed", exc_info=exc)
        print(f"olsdesk: the output could not be written ({os_reason(exc)}).", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be
    written does not trace back at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
