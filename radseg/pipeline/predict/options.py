"""How ``radseg predict`` runs (:class:`PredictOptions`), checked once before any work (:func:`check_options`).

Each impossible setting is refused in one line naming the command-line flag, the value given and
what is allowed, before the model loads or a scan is read, not once per case after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from radseg.errors import ConfigError
from radseg.pipeline.core.distributed import require_device
from radseg.pipeline.predict.postprocess import PostprocessConfig
from radseg.pipeline.predict.runtime import check_runtime

#: the devices ``--device`` accepts
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class PredictOptions:
    """How to predict (None: the checkpoint's own inference settings).

    Attributes:
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        tta: average over copies mirrored along the axes flipped in training (up to 8 passes in
            3D; one pass for a model trained without flips).
        probabilities: also write float16 class probabilities.
        postprocess: clean-ups on the label map; None applies the run's own (its config's
            ``inference.largest_component`` and ``inference.min_component_ml``, which radseg plan
            sets), ``PostprocessConfig()`` none.
        overwrite: predict cases whose outputs exist (default: skip them), and replace a
            ``labels.json`` of another model.
        check_modality: refuse scans that look like another modality than the model's.
        slab: original slices taken back to the grid at a time (bounds the memory).
        progress: progress bars.
        extra_writers: called as ``writer(case, labels, prepared, model, folder)`` after the mask is
            written, each writing into ``folder`` and returning the paths it wrote (DICOM-SEG,
            quick-look pictures); ``folder`` is the case's private staging folder, whose files are
            moved into the output folder only once the whole case succeeded.
        runtime: how the network runs (:mod:`.runtime`): "torch" (the default here; the CLI's is
            "auto"), "auto" (the fastest measured on this machine), "onnxruntime" or "openvino".
        precision: "auto", "fp32" or "bf16" (bf16 only where the device computes it natively).
        locate: optional ``locate(prepared, model) -> (z_start, z_stop) | None`` on the preprocessed grid
            (the slice branch's liver locator, passed in by the caller: predict does not import
            it); windows outside that z-range are skipped like windows outside the body, and the
            mask is still written on the scan's full grid. None from it runs the whole volume.
    """

    overlap: float | None = None
    sw_batch_size: int | None = None
    tta: bool = False
    probabilities: bool = False
    postprocess: PostprocessConfig | None = None
    overwrite: bool = False
    check_modality: bool = True
    slab: int = 16
    progress: bool = True
    extra_writers: Sequence[Callable] = ()
    locate: Callable | None = None
    runtime: str = "torch"
    precision: str = "auto"


def check_options(options: PredictOptions, device: str = "auto") -> None:
    """Refuse settings no case could run with, before the model loads or a scan is read.

    Args:
        options: the settings.
        device: "auto", "cpu" or "cuda".

    Raises:
        ConfigError: the first impossible setting, in one line naming its flag, the value and
            what is allowed.
    """
    overlap, batch = options.overlap, options.sw_batch_size
    if overlap is not None and not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ConfigError(f"--overlap {overlap} is out of range: the share of a window its neighbour overlaps "
                          "must be at least 0 and below 1; fix: e.g. --overlap 0.5, or leave it out for the run's own")
    if batch is not None and not (_is_int(batch) and batch >= 1):
        raise ConfigError(f"--sw-batch-size {batch} is out of range: windows per forward pass must be a whole "
                          "number of at least 1; fix: e.g. --sw-batch-size 2, or leave it out for the run's own")
    if not (_is_int(options.slab) and options.slab >= 1):
        raise ConfigError(f"slab {options.slab} is out of range: slices taken back to the grid at a time must "
                          "be a whole number of at least 1; fix: e.g. slab=16")
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r} is not one of {', '.join(DEVICES)}; fix: --device auto")
    require_device(device, "--device")
    check_runtime(options.runtime, options.precision, device)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
