"""The ``radseg`` command line: parses arguments, calls the Python API, prints. Nothing else.

A user error (:class:`radseg.errors.RadsegError`) prints one line and exits 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from radseg.errors import RadsegError


def _cmd_phantom(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.phantom import write_phantom_dataset

    root = write_phantom_dataset(args.out, num_cases=args.cases, seed=args.seed, overwrite=args.overwrite,
                                 num_test=args.test, profile=args.profile)
    print(f"wrote {args.profile} phantom dataset with {args.cases} training and {args.test} test cases to {root}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.check_data import check_dataset

    report = check_dataset(args.dataset)
    for line in report.lines():
        print(line)
    print(report.summary())
    return 0 if report.ok else 1


def _load_checked_config(source, overrides):
    """The config with its network section checked too, before any expensive work."""
    from radseg.configs import load_config
    from radseg.networks import check_network_config

    cfg = load_config(source, overrides)
    check_network_config(cfg)
    return cfg


def _cmd_cache(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.cache import build_cache_for_dataset

    cfg = _load_checked_config(args.config, args.set)
    summary = build_cache_for_dataset(args.dataset, cfg)
    print(summary)
    return 0


def _cmd_networks(args: argparse.Namespace) -> int:
    from radseg.networks import network_table

    print(network_table(spacing=args.spacing))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from radseg.pipeline.plan.make_plan import plan_dataset, write_plan

    plan = plan_dataset(args.data, args.budget, args.device, fold_all=args.fold == "all")
    path = write_plan(plan, args.output, overwrite=args.overwrite, source=str(args.data))
    print(plan.summary())
    print(f"wrote the plan to {path}; train with: radseg train --config {path} --data {args.data} --output RUN")
    return 0


def _fold(text: str) -> int | str:
    """``--fold``: a fold number or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fold must be a fold number or all, not {text!r}") from None


def _cmd_train_budget(args: argparse.Namespace) -> int:
    from radseg.errors import ConfigError
    from radseg.pipeline.train.budget_run import train_with_budget

    if args.config:
        raise ConfigError("--budget plans every setting itself; drop --config (or drop --budget to train with it)")
    result = train_with_budget(args.data, args.output, args.budget, device=args.device, fold=args.fold,
                               overwrite=args.overwrite, overrides=args.set)
    print(result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from radseg.pipeline.train.fit import fit

    if args.budget and not args.resume:
        return _cmd_train_budget(args)
    if args.budget:
        print("--resume continues the run's own planned schedule; --budget is ignored", file=sys.stderr)
    saved = args.output / "config.yaml"
    # resuming without --config continues with the run's own config (plus any --set)
    source = args.config or (saved if args.resume and saved.is_file() else "demo")
    cfg = _load_checked_config(source, args.set)
    result = fit(cfg, data=args.data, output=args.output, fold=args.fold, resume=args.resume, overwrite=args.overwrite)
    print(result)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from radseg.pipeline.train.demo import run_demo

    print(run_demo(output=args.output, cases=args.cases, overwrite=args.overwrite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="radseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write a synthetic abdominal CT dataset (MSD layout)")
    p.add_argument("out", type=Path)
    p.add_argument("--cases", type=int, default=6, help="number of training cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing phantom folder")
    p.add_argument("--test", type=int, default=2, help="number of held-out test cases (with labels in labelsTs)")
    p.add_argument("--profile", default="abdomen", choices=("abdomen", "chest-pelvis"),
                   help="abdomen: 120-160 mm slab (fast); chest-pelvis: 180-300 mm, distractors, oblique cases")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("check-data", help="check every case of a dataset before training")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("cache", help="fingerprint a dataset and fill the preprocessing cache")
    p.add_argument("dataset", type=Path)
    _add_config_args(p)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("networks", help="list the registered networks with receptive fields and FLOPs")
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"))
    p.set_defaults(func=_cmd_networks)

    p = sub.add_parser("plan", help="plan settings from a dataset, this machine and a time budget")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--budget", default="15m", help="wall clock for training, e.g. 15m, 2h (default 15m)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--fold", type=_fold, default=None, help="plan for a fold, or all (train on every case)")
    p.add_argument("--output", type=Path, required=True, help="the plan YAML to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("train", help="train a network on a dataset")
    _add_config_args(p, default=None, default_help="demo; with --resume: the run's own config.yaml")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--fold", type=_fold, default=None, help="fold number, or all (train on every case)")
    p.add_argument("--budget", default=None, help="without --config: plan for this wall clock (15m, 2h), then train")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="with --budget: plan for it")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="phantom data, check, cache, train, predict: the quick start")
    p.add_argument("--output", type=Path, default=Path("demo-runs"))
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "demo", default_help: str = "demo") -> None:
    p.add_argument("--config", default=default, help=f"preset name or YAML file (default: {default_help})")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radseg`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # MONAI announces at import that an optional GPU DICOM decoder is absent; radseg never uses it
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except RadsegError as err:
        if args.debug:
            raise
        print(f"radseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave cannot be read or written (permissions, disk full)
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"radseg {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
