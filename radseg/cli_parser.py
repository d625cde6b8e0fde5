"""The ``radseg`` argument parser: every command, flag, help text and parse-time check.

Kept apart from :mod:`radseg.cli` (which runs the commands) and free of heavy imports, so that
``radseg --help``, ``--version`` and argument errors answer before torch or MONAI is loaded. Each
command's parser sets ``handler``, the name :mod:`radseg.cli` runs it by.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radseg.cli_results import add_result_parsers, positive_int as _positive_int

_DESCRIPTION = """\
radseg trains 3D segmentation networks (MONAI) on CT/MRI datasets (MSD, nnU-Net v2, images/ +
labels/, or CSV), checks every case first, plans the settings for this machine and a time budget,
segments new NIfTI/NRRD/DICOM scans with a trained run, and scores masks against the truth
(Dice, surface distances, lesions). `radseg slices` is the 2D slice classifier branch."""


_EPILOG = """typical workflow:
  radseg phantom data/phantom                       # or bring your own dataset
  radseg check-data --data data/phantom             # every case, before hours of work
  radseg plan --data data/phantom --budget 30m -o plan.yaml
  radseg train --config plan.yaml --data data/phantom -o runs/fold0
  radseg predict -m runs/fold0/best.pt -i scans/ -o masks/
  radseg evaluate --pred masks/ --truth data/phantom -o scores/

`radseg demo` runs all of it on a small phantom; `radseg COMMAND --help` shows each command's flags."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks and adds "(default: X)" to every flag whose help omits it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return help_with_default(action)


def help_with_default(action: argparse.Action) -> str:
    """``action.help`` plus its default, unless the default says nothing (None, False, empty) or is named."""
    text = action.help or ""
    default = action.default
    if (default is None or default is False or default is argparse.SUPPRESS or default == []
            or "default" in text or not action.option_strings):
        return text
    shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
    return f"{text} (default: {shown.replace('%', '%%')})"


def _version_text() -> str:
    """``radseg X`` plus the installed torch and MONAI versions, read from package metadata (no import)."""
    from importlib import metadata

    from radseg import __version__

    found = []
    for dist, name in (("torch", "torch"), ("monai", "MONAI")):
        try:
            found.append(f"{name} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"radseg {__version__} ({', '.join(found)})"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def _dataset_path(text: str) -> Path:
    """``--data``: a path that exists, refused while parsing (not seconds later, after the imports)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"dataset path {text!r} does not exist; pass a dataset folder or a CSV file")
    return path


def _fold(text: str) -> int | str:
    """``--fold``: a fold number or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fold must be a fold number or all, not {text!r}") from None


def _folds(text: str):
    """``--folds``: ``all-cv``, ``0-4`` or ``0,2,3``."""
    from radseg.pipeline.train.cross_validation import parse_folds

    try:
        return parse_folds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_slices_parser(sub) -> None:
    """``radseg slices train|predict|evaluate``: the 2D slice branch."""
    slices = sub.add_parser("slices", help="the 2D slice classifier (liver present per axial slice)")
    commands = slices.add_subparsers(dest="slices_command", required=True, metavar="COMMAND", title="commands",
                                     help="run `radseg slices COMMAND --help` for its flags")
    p = commands.add_parser("train", help="train a slice classifier (patient-level folds)")
    _add_config_args(p, default=None, default_help="slices; with --resume: the run's own config.yaml")
    p.add_argument("--data", type=_dataset_path, required=True, help=_DATA_HELP)
    p.add_argument("-o", "--output", type=Path, required=True, help="the run folder (checkpoints, logs, curves)")
    p.add_argument("--fold", type=int, default=None, help="cross-validation fold (default: the config's data.fold)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.set_defaults(handler="slices train")
    p = commands.add_parser("predict", help="one probability per axial slice (CSV and PNG per scan)")
    p.add_argument("-m", "--model", type=Path, required=True, help="a radseg slices train run folder (its best.pt) or a checkpoint file")
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="a scan file, a DICOM series folder or a folder of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the CSV and PNG per scan")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs of the same names")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the network runs")
    p.set_defaults(handler="slices predict")
    p = commands.add_parser("evaluate", help="per-slice and per-patient metrics with 95%% CIs on labelled cases")
    p.add_argument("-m", "--model", type=Path, required=True, help="a radseg slices train run folder (its best.pt) or a checkpoint file")
    p.add_argument("--data", type=_dataset_path, required=True, help=_DATA_HELP)
    p.add_argument("--split", default="test", choices=["test", "training"], help="which labelled cases (default test)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the network runs")
    p.set_defaults(handler="slices evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="radseg", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print radseg's version (and torch's, MONAI's) and exit")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands",
                                help="run `radseg COMMAND --help` for its flags")

    p = sub.add_parser("phantom", help="write a synthetic abdominal CT dataset (MSD layout)")
    p.add_argument("out", type=Path, help="the dataset folder to write")
    p.add_argument("--cases", type=_positive_int, default=6, help="number of training cases")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same volumes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing phantom folder")
    p.add_argument("--test", type=int, default=2, help="number of held-out test cases (with labels in labelsTs)")
    p.add_argument("--profile", default="abdomen", choices=("abdomen", "chest-pelvis", "irregular"),
                   help="abdomen: 120-160 mm slab (fast); chest-pelvis: 180-300 mm, distractors, oblique cases; "
                        "irregular: a second family held out from tuning (lobulated hypo/hyper lesions, "
                        "look-alike organs, correlated noise, 1-5 mm slices, cut livers, flipped/oblique)")
    p.set_defaults(handler="phantom")

    p = sub.add_parser("check-data", help="check every case of a dataset before training")
    _add_dataset_args(p)
    p.set_defaults(handler="check-data")

    p = sub.add_parser("cache", help="fingerprint a dataset and fill the preprocessing cache")
    _add_dataset_args(p)
    _add_config_args(p)
    p.set_defaults(handler="cache")

    p = sub.add_parser("networks", help="list the registered networks with receptive fields and FLOPs")
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"),
                   help="voxel spacing in mm, to state receptive fields in mm")
    p.set_defaults(handler="networks")

    p = sub.add_parser("plan", help="plan settings from a dataset, this machine and a time budget")
    p.add_argument("--data", type=_dataset_path, required=True, help=_DATA_HELP)
    p.add_argument("--budget", default="15m", help="wall clock for training, e.g. 15m, 2h (default 15m)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="the device to plan for")
    p.add_argument("--fold", type=_fold, default=None, help="plan for a fold, or all (train on every case)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the plan YAML to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    p.set_defaults(handler="plan")

    p = sub.add_parser("train", help="train a network on a dataset")
    _add_config_args(p, default=None, default_help="demo; with --resume: the run's own config.yaml")
    p.add_argument("--data", type=_dataset_path, required=True, help=_DATA_HELP)
    p.add_argument("-o", "--output", type=Path, required=True, help="the run folder (checkpoints, logs, curves)")
    p.add_argument("--fold", type=_fold, default=None,
                   help="fold number, or all (train on every case) (default: the config's data.fold)")
    p.add_argument("--folds", type=_folds, default=None, metavar="0-4|all-cv",
                   help="cross-validation: train these folds in turn into OUTPUT/fold_K (under one --budget), then "
                        "predict and score each fold's validation cases (OUTPUT/cv: the cross-validated table)")
    p.add_argument("--budget", default=None, help="without --config: plan for this wall clock (15m, 2h), then train")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where training runs (with --budget, also the device the plan is sized for)")
    p.add_argument("--fixed-schedule", action="store_true",
                   help="with --budget: train exactly the planned epochs (no correction to the pace measured in the run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.set_defaults(handler="train")

    p = sub.add_parser("demo", help="phantom data, check, cache, train, predict: the quick start")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-runs"),
                   help="folder for the phantom, the runs, the predictions and the report")
    p.add_argument("--cases", type=_positive_int, default=12, help="phantom training cases")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --output")
    p.set_defaults(handler="demo")
    _add_slices_parser(sub)

    add_result_parsers(sub)
    _finish_subparsers(parser)
    return parser


_DEBUG_HELP = "show tracebacks and debug logging (before or after the command)"


def _finish_subparsers(parser: argparse.ArgumentParser) -> None:
    """Every (nested) command gets the house help format and ``--debug`` after its name too."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for command in action.choices.values():
            command.formatter_class = _HelpFormatter
            # SUPPRESS: a command that is not given --debug leaves the top-level value alone
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
            _finish_subparsers(command)


_DATA_HELP = "the dataset: an MSD or nnU-Net v2 folder, a folder with images/ and labels/, or a CSV file"


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """``--data PATH`` as in every other command; the older positional ``DATASET`` still works."""
    p.add_argument("dataset", type=_dataset_path, nargs="?", default=None, metavar="DATASET",
                   help="the dataset, as before --data existed (give it one way, not both)")
    p.add_argument("--data", type=_dataset_path, default=None, help=_DATA_HELP)


def merge_dataset(args: argparse.Namespace) -> None:
    """``args.data`` from ``--data`` or the positional ``DATASET``; refuses both or neither."""
    from radseg.errors import ConfigError

    if args.dataset is not None and args.data is not None:
        raise ConfigError(f"the dataset was given twice ({args.dataset} and --data {args.data}); pass only --data")
    if args.dataset is None and args.data is None:
        raise ConfigError("no dataset given; pass --data PATH (a dataset folder or a CSV file)")
    args.data = args.data if args.data is not None else args.dataset


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "demo", default_help: str = "demo") -> None:
    p.add_argument("--config", default=default, help=f"preset name or YAML file (default: {default_help})")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting (repeat for several), e.g. --set train.max_epochs=5")
