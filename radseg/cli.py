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
                               overwrite=args.overwrite, overrides=args.set, pace=not args.fixed_schedule)
    print(result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from radseg.pipeline.train.fit import fit

    if args.budget and not args.resume:
        return _cmd_train_budget(args)
    if args.fixed_schedule:
        print("--fixed-schedule applies to --budget runs only; it is ignored", file=sys.stderr)
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


def _cmd_slices_train(args: argparse.Namespace) -> int:
    from radseg.pipeline.slices.fit import fit_slices

    saved = args.output / "config.yaml"
    source = args.config or (saved if args.resume and saved.is_file() else "slices")
    cfg = _load_checked_config(source, args.set)
    result = fit_slices(cfg, data=args.data, output=args.output, fold=args.fold, resume=args.resume,
                        overwrite=args.overwrite)
    print(result)
    return 0


def _cmd_slices_predict(args: argparse.Namespace) -> int:
    from radseg.pipeline.slices.predict import predict_slices

    for result in predict_slices(args.model, args.input, args.output, overwrite=args.overwrite, device=args.device):
        print(result)
    return 0


def _cmd_slices_evaluate(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.slices.evaluate import evaluate_slices

    spec = discover_dataset(args.data)
    print(evaluate_slices(args.model, spec.test if args.split == "test" else spec.training, device=args.device))
    return 0


def _add_slices_parser(sub) -> None:
    """``radseg slices train|predict|evaluate``: the 2D slice branch."""
    slices = sub.add_parser("slices", help="the 2D slice classifier (liver present per axial slice)")
    commands = slices.add_subparsers(dest="slices_command", required=True)
    p = commands.add_parser("train", help="train a slice classifier (patient-level folds)")
    _add_config_args(p, default=None, default_help="slices; with --resume: the run's own config.yaml")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--fold", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.set_defaults(func=_cmd_slices_train)
    p = commands.add_parser("predict", help="one probability per axial slice (CSV and PNG per scan)")
    p.add_argument("--model", type=Path, required=True, help="RUN/best.pt of radseg slices train")
    p.add_argument("--input", type=Path, required=True, help="a scan file, a DICOM series folder or a folder of them")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs of the same names")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_slices_predict)
    p = commands.add_parser("evaluate", help="per-slice and per-patient metrics with 95%% CIs on labelled cases")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["test", "training"], help="which labelled cases (default test)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_slices_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder

    result = evaluate_folder(args.pred, args.truth, args.output, labels=args.labels,
                             lesion_classes=tuple(args.lesion_classes), tolerance_mm=args.tolerance_mm,
                             resample=args.resample, overwrite=args.overwrite)
    print(result)
    return 0

def _cmd_predict(args: argparse.Namespace) -> int:
    from radseg.pipeline.predict.extra_outputs import dicom_seg_writer, quicklook_writer
    from radseg.pipeline.predict.predict import PredictOptions, predict_many

    options = PredictOptions(
        overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta, probabilities=args.probabilities,
        postprocess=_postprocess_choice(args),
        overwrite=args.overwrite, check_modality=not args.no_modality_check,
        extra_writers=tuple(writer for flag, writer in ((args.dicom_seg, dicom_seg_writer),
                                                        (args.quicklook, quicklook_writer)) if flag),
        locate=_liver_locator(args.locate_with, args.locate_margin_mm, args.device) if args.locate_with else None,
    )
    summary = predict_many(args.model, args.input, args.output, options, device=args.device)
    for result in summary.failed:
        print(f"failed: {result.name}: {result.message}", file=sys.stderr)
    print(f"predict: {summary}; outputs in {args.output}")
    return 1 if summary.failed else 0


def _postprocess_choice(args: argparse.Namespace):
    """The clean-ups predict's flags ask for: None (the run's own), none at all, or the flags' own."""
    from radseg.errors import ConfigError
    from radseg.pipeline.predict.postprocess import PostprocessConfig

    flagged = args.largest_component or args.fill_holes or args.min_component_ml
    if args.no_postprocess:
        if flagged:
            raise ConfigError("--no-postprocess turns every clean-up off; drop it or the clean-up flags")
        return PostprocessConfig()
    if flagged:
        return PostprocessConfig(largest_component=args.largest_component, fill_holes=args.fill_holes,
                                 min_component_ml=args.min_component_ml)
    return None


def _liver_locator(checkpoint: Path, margin_mm: float, device: str):
    """``locate(prepared, model)`` for predict: the slice model's liver z-range on the preprocessed grid."""
    import torch
    from monai.data import MetaTensor

    from radseg.pipeline.slices.locate import locate_z_range
    from radseg.pipeline.slices.infer import load_slice_model

    slice_model = load_slice_model(checkpoint, device)

    def locate(prepared, model):
        image = MetaTensor(prepared.image[0], affine=torch.as_tensor(prepared.pre_affine))
        return locate_z_range(slice_model, image, margin_mm, image_preprocess=model.preprocess.to_dict())

    return locate


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment new scans with a trained run's checkpoint")
    p.add_argument("--model", type=Path, required=True, help="a run's best.pt")
    p.add_argument("--input", nargs="+", required=True, metavar="P",
                   help="NIfTI/NRRD/MHA files, DICOM series folders, or folders of them (searched recursively)")
    p.add_argument("--output", type=Path, required=True, help="folder for the masks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the run's)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument("--tta", action="store_true", help="average over mirrored copies (8x slower)")
    p.add_argument("--probabilities", action="store_true", help="also write float16 probabilities (.npz)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep the largest component of every class (this, --fill-holes or --min-component-ml "
                        "replaces the run's own clean-ups)")
    p.add_argument("--fill-holes", action="store_true", help="fill cavities enclosed by a class (replaces the "
                   "run's own clean-ups)")
    p.add_argument("--min-component-ml", type=float, default=0.0, help="drop components of any class under this "
                   "many mL (a value > 0 replaces the run's own clean-ups)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="no clean-ups, not even the run's own (by default predict applies the clean-ups "
                        "its config names, which radseg plan chooses from the training labels)")
    p.add_argument("--dicom-seg", action="store_true", help="also write a DICOM-SEG for DICOM input (NAME_seg.dcm)")
    p.add_argument("--quicklook", action="store_true", help="also write a PNG of three slices with the mask outlined")
    p.add_argument("--locate-with", type=Path, default=None, metavar="SLICE_RUN/best.pt",
                   help="run the 3D model only on the z-range a slice classifier marks as liver")
    p.add_argument("--locate-margin-mm", type=float, default=20.0, help="margin added around the located liver")
    p.add_argument("--no-modality-check", action="store_true", help="predict scans that look like another modality")
    p.add_argument("--overwrite", action="store_true", help="predict cases whose outputs exist")
    p.set_defaults(func=_cmd_predict)


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
    p.add_argument("--fixed-schedule", action="store_true",
                   help="with --budget: train exactly the planned epochs (no correction to the pace measured in the run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="phantom data, check, cache, train, predict: the quick start")
    p.add_argument("--output", type=Path, default=Path("demo-runs"))
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_demo)
    _add_slices_parser(sub)

    p = sub.add_parser("evaluate", help="score predictions against the truth: metrics, lesions, summary, report")
    p.add_argument("--pred", type=Path, required=True, help="folder of <case>.nii.gz label maps (radseg predict's output)")
    p.add_argument("--truth", type=Path, required=True, help="folder of label files, or a dataset (MSD, nnU-Net, CSV)")
    p.add_argument("--output", type=Path, required=True, help="folder for metrics.csv, summary.json, report.html")
    p.add_argument("--labels", default=None, help="label map: JSON file or 1=liver,2=tumour (default: the truth's)")
    p.add_argument("--lesion-classes", nargs="+", default=[], metavar="CLASS", help="classes scored as lesions too")
    p.add_argument("--tolerance-mm", default=None, help="surface Dice tolerance: 2, or liver=3,tumour=1 (default 2)")
    p.add_argument("--resample", action="store_true", help="resample predictions on another grid onto the truth's (nearest)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --output")
    p.set_defaults(func=_cmd_evaluate)


    _add_predict_parser(sub)
    return parser


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "demo", default_help: str = "demo") -> None:
    p.add_argument("--config", default=default, help=f"preset name or YAML file (default: {default_help})")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")


def _launched_as_radseg() -> bool:
    """Whether this process is ``radseg ...``, ``python -m radseg ...`` or a ``torchrun -m radseg`` rank."""
    launcher = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return launcher.stem == "radseg" or (launcher.name == "__main__.py" and launcher.parent.name == "radseg")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radseg`` console script."""
    if argv is None and _launched_as_radseg():
        from radseg.allocator import ensure_allocator

        ensure_allocator()  # may restart the process once, before anything heavy is imported
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.debug:
        from radseg.allocator import describe_allocator

        logging.getLogger("radseg.allocator").debug(describe_allocator())
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
