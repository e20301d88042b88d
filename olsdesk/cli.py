"""The ``olsdesk`` command: the app with no arguments, or ``train``, ``predict``, ``demo-data``.

Heavy libraries (torch, Qt) are imported inside the commands, so ``olsdesk --version``
and argument errors answer at once. A wrong invocation exits 2 with one sentence on
stderr; a training that fails exits 1 with one sentence.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from olsdesk import __version__
from olsdesk.config import DEVICES, LOSS_NAMES, MODEL_NAMES, OPTIMIZERS, SCHEDULES


class UsageError(Exception):
    """A bad invocation: exit 2 with the message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, no usage dump
        raise UsageError(message[0].upper() + message[1:] + ("" if message.endswith(".") else "."))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="olsdesk", description="Train medical-image classifiers with Online "
                     "Label Smoothing and watch what it does. With no command, opens the app.")
    parser.add_argument("--version", action="version", version=f"olsdesk {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="build the window offscreen, train one tiny epoch, render every "
                             "panel, exit 0 when all is well")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model from the command line")
    train.add_argument("--data", default="demo",
                       help="'demo', an image folder (class sub-folders) or a MedMNIST .npz")
    train.add_argument("--split-csv", metavar="DIR",
                       help="folder with train/val split CSVs (filename,label), RadImageNet style")
    train.add_argument("--model", choices=MODEL_NAMES, default="smallcnn")
    train.add_argument("--weights", metavar="FILE",
                       help="optional local state-dict file to start from (ImageNet, RadImageNet)")
    train.add_argument("--loss", choices=LOSS_NAMES, default="ols")
    train.add_argument("--alpha", type=_unit_float,
                       help="OLS / TF-KD weight (default 0.5 for OLS, 0.95 for TF-KD)")
    train.add_argument("--epsilon", type=_unit_float, default=0.1, help="label smoothing epsilon")
    train.add_argument("--temperature", type=_positive_float, default=6.0, help="TF-KD T")
    train.add_argument("--ols-init", choices=("uniform", "zeros"), default="uniform")
    train.add_argument("--epochs", type=_positive_int,
                       help="epochs to train (default 10; with --resume, a new total)")
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--lr", type=_positive_float, default=0.003)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    train.add_argument("--image-size", type=_positive_int,
                       help="model input size (default 64 for the demo set, 224 otherwise)")
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    train.add_argument("--seed", type=_int, default=0)
    train.add_argument("--split-seed", type=_int, default=0)
    train.add_argument("--val-fraction", type=_unit_float, default=0.2)
    train.add_argument("--demo-per-class", type=_positive_int, default=200)
    train.add_argument("--workers", type=_int, help="data-loader processes (default: auto)")
    train.add_argument("--runs-dir", metavar="DIR", help="where runs are written "
                       "(default: the user data folder)")
    train.add_argument("--resume", metavar="RUN",
                       help="continue a run (its folder, or its name in --runs-dir)")

    predict = sub.add_parser("predict", help="predict the class of images with a checkpoint")
    predict.add_argument("--checkpoint", required=True, metavar="PATH",
                         help="an olsdesk checkpoint (a run's checkpoints/best.pt)")
    predict.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                         help="images (PNG, JPEG, TIFF, BMP, DICOM) or folders of them")
    predict.add_argument("--top-k", type=_positive_int, default=5)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--device", choices=DEVICES, default="auto")

    compare = sub.add_parser("compare", help="train several losses x seeds and report")
    compare.add_argument("--data", default="demo")
    compare.add_argument("--split-csv", metavar="DIR")
    compare.add_argument("--model", choices=MODEL_NAMES, default="smallcnn")
    compare.add_argument("--losses", default="ce,ls,tfkd,ols",
                         help="comma-separated, from " + ",".join(LOSS_NAMES))
    compare.add_argument("--seeds", type=_positive_int, default=3)
    compare.add_argument("--epochs", type=_positive_int, default=10)
    compare.add_argument("--batch-size", type=_positive_int, default=64)
    compare.add_argument("--lr", type=_positive_float, default=0.003)
    compare.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    compare.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    compare.add_argument("--image-size", type=_positive_int)
    compare.add_argument("--device", choices=DEVICES, default="auto")
    compare.add_argument("--demo-per-class", type=_positive_int, default=200)
    compare.add_argument("--out", required=True, metavar="DIR",
                         help="where runs, report.md, results.csv and figures go")

    demo = sub.add_parser("demo-data", help="write the built-in demo set as PNG class folders")
    demo.add_argument("--out", required=True, metavar="DIR")
    demo.add_argument("--per-class", type=_positive_int, default=200)
    demo.add_argument("--seed", type=_int, default=0)
    return parser


def _config_from(args: argparse.Namespace):
    from olsdesk.config import RunConfig

    return RunConfig(
        data=args.data, split_csv=args.split_csv, model=args.model, weights=args.weights,
        loss=args.loss, alpha=args.alpha, epsilon=args.epsilon, temperature=args.temperature,
        ols_init=args.ols_init, epochs=args.epochs or RunConfig.epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, weight_decay=args.weight_decay, schedule=args.schedule,
        image_size=args.image_size, device=args.device, amp=not args.no_amp, seed=args.seed,
        split_seed=args.split_seed, val_fraction=args.val_fraction,
        demo_per_class=args.demo_per_class, num_workers=args.workers,
    ).validated()


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
              f" ece {r.ece:.3f}  {r.epoch_seconds:.1f}s {r.images_per_second:.0f} img/s{skipped}",
              file=self.out, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from olsdesk.config import ConfigError
    from olsdesk.core.data.sources import DataError
    from olsdesk.core.models import WeightsError
    from olsdesk.core.report import EpochReport
    from olsdesk.core.runs import RunError
    from olsdesk.core.trainer import Trainer, TrainingError, describe_device

    try:
        if args.resume:
            trainer = Trainer.resume(args.resume, args.runs_dir, epochs=args.epochs)
        else:
            trainer = Trainer(_config_from(args), runs_dir=args.runs_dir)
        trainer.prepare()
    except (ConfigError, DataError, RunError, WeightsError) as exc:
        raise UsageError(str(exc)) from None
    data = trainer.dataset
    print(f"{data.source}: {len(data.train)} training and {len(data.val)} validation images, "
          f"{data.num_classes} classes; {trainer.config.model}, loss {trainer.config.loss}, "
          f"on {describe_device(trainer.device)}", flush=True)
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
    except TrainingError as exc:
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

    from olsdesk.config import ConfigError
    from olsdesk.core.predictor import Predictor, PredictorError

    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    except (PredictorError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    missing = [p for p in args.paths if not Path(p).expanduser().exists()]
    if missing and len(missing) == len(args.paths):
        raise UsageError(f"{missing[0]} does not exist.")
    failed = 0
    for prediction in predictor.predict(args.paths, top_k=args.top_k):
        failed += not prediction.ok
        if args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        elif prediction.ok:
            top = "  ".join(f"{c} {p:.1%}" for c, p in
                            zip(prediction.top_classes, prediction.top_probabilities, strict=True))
            print(f"{prediction.path}: {top}  (calibrated {prediction.calibrated_confidence:.1%},"
                  f" entropy {prediction.entropy:.2f})", flush=True)
        else:
            print(f"{prediction.path}: ERROR {prediction.error}", flush=True)
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train every loss x seed (resuming what is done), then write the report and figures."""
    from olsdesk.config import ConfigError, RunConfig
    from olsdesk.core import compare
    from olsdesk.core.data.sources import DataError
    from olsdesk.core.report import EpochReport
    from olsdesk.core.runs import RunError

    losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    unknown = [x for x in losses if x not in LOSS_NAMES]
    if unknown or not losses:
        raise UsageError(f"unknown loss '{unknown[0] if unknown else ''}' in --losses; choose "
                         f"from {', '.join(LOSS_NAMES)}.")
    try:
        base = RunConfig(data=args.data, split_csv=args.split_csv, model=args.model,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, schedule=args.schedule,
                         image_size=args.image_size, device=args.device,
                         demo_per_class=args.demo_per_class).validated()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out).expanduser()
    printer = ProgressPrinter()

    def on_item(name, index, total, item):
        if isinstance(item, EpochReport):
            print(f"[{index + 1}/{total}] {name} ", end="", flush=True)
            printer.epoch(item)
        elif isinstance(item, str):
            print(f"[{index + 1}/{total}] {name}: {item}", flush=True)
        else:
            printer.batch(item)

    try:
        stores = compare.run_comparison(base, losses, args.seeds, out, on_item)
    except (DataError, RunError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"\nstopped; run the same command again to continue in {out}", file=sys.stderr)
        return 130
    paths = write_comparison(stores, base, args.seeds, out)
    print(f"wrote {', '.join(p.name for p in paths)} to {out}")
    return 0


def write_comparison(stores, base, seeds: int, out: Path) -> list[Path]:
    """report.md, results.csv and the figures for finished comparison runs."""
    from olsdesk.core import compare
    from olsdesk.gui.figures import write_comparison_figures

    histories: dict[str, list] = {}
    for store in stores:
        histories.setdefault(store.config().loss, []).append(store.load_reports())
    finals = {loss: [r[-1] for r in runs] for loss, runs in histories.items()}
    rows = compare.summarise(finals)
    compare.write_results_csv(rows, out / "results.csv")
    figures = write_comparison_figures(histories, out)
    info = stores[0].info()["dataset"]
    line = (f"{info['source']} ({info['train_images']} training and {info['val_images']} "
            f"validation images, {len(stores[0].class_names)} classes)")
    compare.write_report(rows, base, seeds, figures, out / "report.md", line)
    return [out / "report.md", out / "results.csv", *(out / f for f in figures)]


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "demo-data":
            return cmd_demo_data(args)
        from olsdesk.gui.app import run_app

        return run_app(self_test=args.self_test)
    except UsageError as exc:
        print(f"olsdesk: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
