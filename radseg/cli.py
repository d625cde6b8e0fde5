"""The ``radseg`` command line: parses arguments (:mod:`radseg.cli_parser`), calls the Python API,
prints. Nothing else.

A user error (:class:`radseg.errors.RadsegError`) prints one line and exits 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from radseg.cli_parser import build_parser, merge_dataset
from radseg.errors import RadsegError

def _cmd_phantom(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.phantom import write_phantom_dataset

    root = write_phantom_dataset(args.out, num_cases=args.cases, seed=args.seed, overwrite=args.overwrite,
                                 num_test=args.test, profile=args.profile)
    print(f"wrote {args.profile} phantom dataset with {args.cases} training and {args.test} test cases to {root}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from radseg.pipeline.data.check_data import check_dataset

    report = check_dataset(args.data)
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
    from radseg.pipeline.data.fill_cache import build_cache_for_dataset

    cfg = _load_checked_config(args.config, args.set)
    summary = build_cache_for_dataset(args.data, cfg)
    print(summary)
    return 0


def _cmd_networks(args: argparse.Namespace) -> int:
    from radseg.networks import network_table

    print(network_table(spacing=args.spacing))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from radseg.pipeline.plan.make_plan import check_plan_output, plan_dataset, write_plan

    check_plan_output(args.output, args.overwrite)  # before minutes of planning
    plan = plan_dataset(args.data, args.budget, args.device, fold_all=args.fold == "all")
    path = write_plan(plan, args.output, overwrite=args.overwrite, source=str(args.data))
    print(plan.summary())
    print(f"wrote the plan to {path}; train with: radseg train --config {path} --data {args.data} --output RUN")
    return 0


def _cmd_train_budget(args: argparse.Namespace) -> int:
    from radseg.errors import ConfigError
    from radseg.pipeline.train.budget_run import train_with_budget

    if args.config:
        raise ConfigError("--budget plans every setting itself; drop --config (or drop --budget to train with it)")
    result = train_with_budget(args.data, args.output, args.budget, device=args.device, fold=args.fold,
                               overwrite=args.overwrite, overrides=args.set, pace=not args.fixed_schedule)
    print(result)
    return 0


def _cmd_train_folds(args: argparse.Namespace) -> int:
    from radseg.errors import ConfigError
    from radseg.pipeline.train.folds_run import train_folds

    if args.fold is not None:
        raise ConfigError("--fold trains one fold and --folds several; pass one of them")
    if args.budget and args.config:
        raise ConfigError("--budget plans every setting itself; drop --config (or drop --budget to train with it)")
    if args.resume and (args.config or args.set or args.budget):
        print("--resume continues each fold with the run's own config (cv.json, fold_K/config.yaml); --config, "
              "--set and --budget are ignored", file=sys.stderr)
    cfg = _load_checked_config(args.config, args.set) if args.config and not args.resume else None
    result = train_folds(args.data, args.output, args.folds, cfg=cfg, budget=args.budget, device=args.device,
                         resume=args.resume, overwrite=args.overwrite, overrides=args.set,
                         pace=not args.fixed_schedule)
    print(result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from radseg.pipeline.train.fit import fit
    from radseg.pipeline.train.run_checks import device_overrides

    if args.folds is not None or (args.resume and (args.output / "cv.json").is_file()):
        return _cmd_train_folds(args)
    if args.budget and not args.resume:
        return _cmd_train_budget(args)
    if args.fixed_schedule:
        print("--fixed-schedule applies to --budget runs only; it is ignored", file=sys.stderr)
    if args.budget:
        print("--resume continues the run's own planned schedule; --budget is ignored", file=sys.stderr)
    saved = args.output / "config.yaml"
    # resuming without --config continues with the run's own config (plus any --set)
    source = args.config or (saved if args.resume and saved.is_file() else "demo")
    cfg = _load_checked_config(source, device_overrides(args.device, args.set))  # --device is train.device
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder

    result = evaluate_folder(args.pred, args.truth, args.output, labels=args.labels,
                             lesion_classes=tuple(args.lesion_classes), tolerance_mm=args.tolerance_mm,
                             resample=args.resample, overwrite=args.overwrite,
                             worst_case_distances=args.worst_case_distances)
    print(result)
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from radseg.pipeline.review import make_server, review_folder
    from radseg.pipeline.review.pages import INDEX_DATA

    if args.serve and not args.overwrite and (args.output / INDEX_DATA).is_file():
        print(f"serving the review already in {args.output} (pass --overwrite to write it afresh)")
    else:
        print(review_folder(args.pred, args.output, truth=args.truth, images=args.images, labels=args.labels,
                            overwrite=args.overwrite))
    if not args.serve:
        return 0
    server = make_server(args.output, args.port)
    print(f"serving {args.output} on http://127.0.0.1:{server.server_address[1]}/index.html (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped serving")
    finally:
        server.server_close()
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from radseg.pipeline.predict.extra_outputs import dicom_seg_writer, quicklook_writer
    from radseg.pipeline.predict.predict import PredictOptions, check_options, predict_many

    options = PredictOptions(
        overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta, probabilities=args.probabilities,
        postprocess=_postprocess_choice(args),
        overwrite=args.overwrite, check_modality=not args.no_modality_check,
        runtime=args.runtime, precision=args.precision,
        extra_writers=tuple(writer for flag, writer in ((args.dicom_seg, dicom_seg_writer),
                                                        (args.quicklook, quicklook_writer)) if flag),
    )
    check_options(options, args.device)  # before the locator's model loads
    if args.locate_with:
        options.locate = _liver_locator(args.locate_with, args.locate_margin_mm, args.device)
    summary = predict_many(args.model, args.input, args.output, options, device=args.device)
    for result in summary.failed:
        print(f"failed: {result.name}: {result.message}", file=sys.stderr)
    print(f"predict: {summary}; outputs in {args.output}")
    return 1 if summary.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from radseg.pipeline.export import export_model

    result = export_model(args.run, args.format, args.output, overwrite=args.overwrite)
    print(f"export: {args.format} in {result.folder} ({', '.join(result.files)}); exported logits within "
          f"{result.max_logit_difference:.1e} of the checkpoint's")
    return 0


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


def _launched_as_radseg() -> bool:
    """Whether this process is ``radseg ...``, ``python -m radseg ...`` or a ``torchrun -m radseg`` rank."""
    launcher = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return launcher.stem == "radseg" or (launcher.name == "__main__.py" and launcher.parent.name == "radseg")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radseg`` console script."""
    # parsed first: --help, --version and argument errors exit here, without the allocator's restart
    args = build_parser().parse_args(argv)
    if argv is None and _launched_as_radseg():
        from radseg.allocator import ensure_allocator

        ensure_allocator()  # may restart the process once, before anything heavy is imported
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.debug:
        from radseg.allocator import describe_allocator

        logging.getLogger("radseg.allocator").debug(describe_allocator())
    # MONAI announces at import that an optional GPU DICOM decoder is absent; radseg never uses it
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    try:
        if hasattr(args, "dataset"):
            merge_dataset(args)
        return _HANDLERS[args.handler](args)
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
        print(_interrupted_message(args), file=sys.stderr)
        return 130


def _interrupted_message(args: argparse.Namespace) -> str:
    """"interrupted", with the command that resumes a training run once its folder holds one."""
    command = {"train": "radseg train"}.get(args.command)
    if args.command == "slices" and getattr(args, "slices_command", None) == "train":
        command = "radseg slices train"
    if command is None:
        return "interrupted"
    if not ((args.output / "config.yaml").is_file() or (args.output / "cv.json").is_file()):
        return f"interrupted before the run folder {args.output} was written; start again with the same command"
    resume = f"{command} --data {shlex.quote(str(args.data))} --output {shlex.quote(str(args.output))} --resume"
    return f"interrupted; continue with: {resume}"


#: each command's function, by the ``handler`` name its parser sets
_HANDLERS = {
    "phantom": _cmd_phantom, "check-data": _cmd_check_data, "cache": _cmd_cache, "networks": _cmd_networks,
    "plan": _cmd_plan, "train": _cmd_train, "demo": _cmd_demo, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
    "export": _cmd_export, "review": _cmd_review,
    "slices train": _cmd_slices_train, "slices predict": _cmd_slices_predict, "slices evaluate": _cmd_slices_evaluate,
}
