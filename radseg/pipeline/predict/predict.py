"""Prediction on new scans: :func:`predict_case` for one scan, :func:`predict_many` for a batch.

One case: read and preprocess as in training (:mod:`.prepare`), the one sliding-window predictor
with windows outside the body skipped (:mod:`.inference`), back to the scan's own grid slab by slab
(:mod:`.to_grid`), optional clean-ups (:mod:`.postprocess`), files written atomically and a case
whole or not at all (:mod:`.outputs`). A batch checks its options first (:mod:`.options`), goes on
past a failing case, skips cases already done, and under ``torchrun`` gives each process its own
share of the cases.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from radseg.errors import DataError, RadsegError
from radseg.pipeline.predict import outputs
from radseg.pipeline.predict.inference import sliding_window_predict
from radseg.pipeline.predict.inputs import PredictCase, find_cases
from radseg.pipeline.predict.ensemble import load_models
from radseg.pipeline.predict.model import PredictModel
from radseg.pipeline.predict.options import PredictOptions, check_options
from radseg.pipeline.predict.postprocess import PostprocessConfig, postprocess
from radseg.pipeline.predict.prepare import StageClock, prepare_case
from radseg.pipeline.predict.runtime import choose_runtime, used_runtimes
from radseg.pipeline.predict.to_grid import axis_map, logits_to_grid
from radseg.pipeline.predict.window_skip import set_background
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """One case's outcome: ``status`` is "done", "skipped" or "failed"."""

    name: str
    status: str
    mask: Path | None = None
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)


@dataclass
class PredictSummary:
    """The outcome of a batch."""

    results: list[CaseResult]

    def count(self, status: str) -> int:
        """How many cases ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[CaseResult]:
        """The failed cases."""
        return [r for r in self.results if r.status == "failed"]

    def __str__(self) -> str:
        return (f"{self.count('done')} done, {self.count('skipped')} skipped (outputs present), "
                f"{self.count('failed')} failed, of {len(self.results)} cases")


def predict_case(model: PredictModel, case: PredictCase, output: str | Path,
                 options: PredictOptions | None = None) -> CaseResult:
    """Predict one scan and write its outputs (errors propagate; see :func:`predict_many`).

    Args:
        model: from :func:`radseg.pipeline.predict.model.load_predict_model`.
        case: the scan (see :func:`radseg.pipeline.predict.inputs.find_cases`).
        output: the output folder (must exist).
        options: settings; defaults when None.

    Returns:
        The :class:`CaseResult` ("done" or "skipped"), with seconds per stage: ``read``
        (read and check), ``preprocess``, ``network`` (the sliding window), ``to_grid``,
        ``postprocess`` and ``write``.

    Raises:
        RadsegError: the scan is unreadable or unsuitable.
    """
    options = options or PredictOptions()
    files = outputs.CaseOutputs(Path(output), case.name, options.probabilities)
    if files.done() and not options.overwrite:
        return CaseResult(case.name, "skipped", files.mask)
    options = dataclasses.replace(options, postprocess=_cleanups(model, options))
    clock = StageClock()
    if model.grid_members:
        prepared, labels, probs = _grid_ensemble(model, case, options, clock)
    else:
        prepared, labels, probs = _one_model(model, case, options, clock)
    postprocess(labels, model.num_classes, prepared.grid.voxel_ml, options.postprocess,
                spacing=prepared.grid.spacing[::-1], case=case.name)  # labels are (Z, Y, X), the grid (x, y, z)
    clock.lap("postprocess")
    with outputs.staged_case(files.folder, case.name) as staging:  # all of the case's files, or none
        volumes = _write(model, case, prepared, labels, probs,
                         outputs.CaseOutputs(staging, case.name, options.probabilities), options)
    clock.lap("write")
    return CaseResult(case.name, "done", files.mask, seconds=clock.seconds, volumes_ml=volumes)


def _one_model(model: PredictModel, case: PredictCase, options: PredictOptions, clock: StageClock):
    """Preprocess, sliding window, back to the scan's grid: the prepared case, labels and probabilities."""
    prepared = prepare_case(case, model, check_modality=options.check_modality, clock=clock)
    clock.lap("preprocess")
    logits = _network(model, prepared, options)
    clock.lap("network")
    labels, probs = logits_to_grid(logits[0], axis_map(prepared.pre_affine, prepared.original_affine),
                                   prepared.grid.size, probabilities=options.probabilities, slab=options.slab)
    del logits
    clock.lap("to_grid")
    return prepared, labels, probs


def _grid_ensemble(model: PredictModel, case: PredictCase, options: PredictOptions, clock: StageClock):
    """Members that preprocess differently: each on its own grid, probabilities summed on the scan's."""
    total = None
    member_options = dataclasses.replace(options, probabilities=True)
    for member in model.grid_members:
        prepared, _, probs = _one_model(member, case, member_options, clock)
        total = probs.astype(np.float32) if total is None else np.add(total, probs, out=total)
        del probs
    total /= len(model.grid_members)
    labels = total.argmax(axis=0).astype(np.uint8)
    return prepared, labels, total.astype(np.float16) if options.probabilities else None


def predict_many(checkpoint: str | Path | Sequence[str | Path] | PredictModel, inputs: Sequence[str | Path], output: str | Path,
                 options: PredictOptions | None = None, *, device: str = "auto") -> PredictSummary:
    """Predict every scan under ``inputs`` into ``output``; one failing case does not stop the rest.

    Under ``torchrun --nproc-per-node N`` each process predicts every N-th case (each case exactly
    once); ``volumes.csv`` is written once all processes are done.

    Args:
        checkpoint: a run's ``best.pt``, its run folder, a cross-validation run or several runs (an
            ensemble, :mod:`.ensemble`), or a model already loaded.
        inputs: files, DICOM series folders, folders of them.
        output: the output folder (created).
        options: settings; defaults when None.
        device: "auto", "cpu" or "cuda" (with torchrun: this process's GPU).

    Returns:
        The :class:`PredictSummary` of this process's cases.

    Raises:
        RadsegError: an option is impossible, the checkpoint is unusable, an input path is missing,
            the output folder cannot be written or holds a ``labels.json`` of another model (all
            before any case is predicted).
    """
    from radseg.pipeline.core import distributed as ddp

    options = options or PredictOptions()
    check_options(options, device)
    output = Path(output)
    info = ddp.init_distributed(device)
    ddp.log_device(info.device)
    try:
        model = checkpoint if isinstance(checkpoint, PredictModel) else load_models(checkpoint, str(info.device))
        cases = find_cases(inputs, exclude=output)
        _check_writable(output)
        outputs.write_labels_json(output, model.label_names, overwrite=options.overwrite)
        source = "the run's own" if options.postprocess is None else "as asked"
        options = dataclasses.replace(options, postprocess=_cleanups(model, options))
        logger.info("clean-ups (%s): %s", source, options.postprocess.describe(_class_names(model)))
        _log_mirroring(model, options)
        results = _predict_cases(model, ddp.split_for_rank(cases, info), output, options, single=info.world_size == 1)
        ddp.barrier(info)
        if info.is_main:
            outputs.write_volumes_csv(output)
    finally:
        ddp.cleanup_distributed(info)
    return PredictSummary(results)


def _predict_cases(model, cases: list[PredictCase], output: Path, options: PredictOptions, *,
                   single: bool) -> list[CaseResult]:
    """Each case in turn; if the batch is stopped (Ctrl-C, a bug), ``volumes.csv`` still lists the done ones."""
    try:
        return [_predict_or_report(model, case, output, options)
                for case in progress_bar(cases, desc="predict", unit="case", disable=not options.progress)]
    except BaseException:
        if single:  # under torchrun the main process writes it once every process is done
            outputs.write_volumes_csv(output)
        raise


def _predict_or_report(model, case: PredictCase, output: Path, options: PredictOptions) -> CaseResult:
    try:
        result = predict_case(model, case, output, options)
    except (RadsegError, OSError, RuntimeError, ValueError, MemoryError) as err:
        message = str(err) if isinstance(err, RadsegError) else f"{type(err).__name__}: {err}"
        logger.error("case %s failed: %s", case.name, message, exc_info=logger.isEnabledFor(logging.DEBUG))
        return CaseResult(case.name, "failed", message=message.splitlines()[0] if message else type(err).__name__)
    if result.status == "done":
        logger.info("case %s: %s (%s)", case.name, result.mask,
                    ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
    return result


def _cleanups(model: PredictModel, options: PredictOptions) -> PostprocessConfig:
    """The clean-ups to apply: the options' own, else the run's planned ones."""
    if options.postprocess is not None:
        return options.postprocess
    return PostprocessConfig.planned(model.cfg.inference, model.num_classes)


def _class_names(model: PredictModel) -> list[str]:
    return [model.class_name(c) for c in range(model.num_classes)]


def _network(model: PredictModel, prepared, options: PredictOptions):
    cfg = model.cfg.inference
    changes = {"mirror": cfg.mirror or options.tta}
    if options.overlap is not None:
        changes["overlap"] = options.overlap
    if options.sw_batch_size is not None:
        changes["sw_batch_size"] = options.sw_batch_size
    z_range = None if options.locate is None else options.locate(prepared, model)
    runtime = choose_runtime(model, prepared.image, options.runtime, options.precision, options.sw_batch_size)
    logits = sliding_window_predict(
        model.network, prepared.image, dataclasses.replace(cfg, **changes), model.cfg.train.roi_size,
        device=model.device, amp=model.amp, output_device="cpu", body_mask=_located_body(prepared.body, z_range),
        mirror_axes=model.mirror_axes, forward=runtime.forward,
    )
    if z_range is not None:  # windows reaching past the located range do not label outside it
        outside = torch.ones(logits.shape[-1], dtype=torch.bool)
        outside[z_range[0]:z_range[1]] = False
        with torch.inference_mode():  # the logits are an inference tensor
            set_background(logits, outside)
    return logits


def _located_body(body, z_range: tuple[int, int] | None):
    """The body mask, cut to the locator's z-range when the locator found one."""
    if z_range is None:
        return body
    body = body.clone()
    body[..., :z_range[0]] = False
    body[..., z_range[1]:] = False
    return body


def _log_mirroring(model: PredictModel, options: PredictOptions) -> None:
    """Say which axes test-time mirroring uses, or that it does nothing for this model."""
    if not (options.tta or model.cfg.inference.mirror):
        return
    axes = model.mirror_axes
    if axes:
        logger.info("test-time mirroring over axes %s (those flipped in training): %d passes per case",
                    ", ".join("xyz"[a] for a in axes), 2 ** len(axes))
    else:
        (logger.warning if options.tta else logger.info)(
            "test-time mirroring does nothing for this model: it was trained without flips "
            "(augment.flip_prob=0), so mirrored scans are ones it never saw; predicting one pass")


def _write(model, case, prepared, labels: np.ndarray, probs, files: outputs.CaseOutputs,
           options: PredictOptions) -> dict[str, float]:
    names = _class_names(model)
    outputs.write_mask(labels, prepared.grid, files.mask)
    if probs is not None:
        outputs.write_probabilities(probs, prepared.original_affine, names, files.probability_file)
    for writer in options.extra_writers:
        files.extra.extend(Path(p) for p in _run_writer(writer, case, labels, prepared, model, files.folder))
    volumes = dict(zip(names[1:], outputs.volumes_ml(labels, model.num_classes, prepared.grid.voxel_ml)))
    outputs.write_record({
        "case": case.name, "source": str(case.path), "series_uid": case.series_uid,
        "model": model.source, "members": list(model.members), "mask": files.mask.name, "shape": list(prepared.grid.size),
        "spacing": list(prepared.grid.spacing), "volumes_ml": volumes,
        "postprocess": options.postprocess.describe(names), "runtime": ", ".join(used_runtimes(model)),
        "extra_files": [p.name for p in files.extra],
    }, files.record)
    return volumes


def _run_writer(writer, case, labels, prepared, model, folder: Path) -> list:
    """An extra writer's paths; its failure, whatever the type (highdicom's included), fails this case only."""
    try:
        return list(writer(case, labels, prepared, model, folder) or ())
    except (RadsegError, OSError, MemoryError):
        raise
    except Exception as err:
        name = getattr(writer, "__name__", type(writer).__name__)
        detail = (str(err).strip().splitlines() or ["no message"])[0]
        raise DataError(f"{name} failed on case {case.name} ({type(err).__name__}: {detail}); "
                        "none of the case's files were written; fix: predict without that output "
                        "(--dicom-seg, --quicklook), or rerun with --debug and report the traceback") from err


def _check_writable(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".radseg-write-test-{id(output)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(f"output folder {output} cannot be written ({err.strerror or err}); expected a "
                        "folder radseg may create files in; fix: choose another --output or fix its "
                        "permissions") from err
