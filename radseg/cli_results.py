"""The parsers of the commands that apply a trained model or look at its results: ``predict``, ``export``,
``evaluate`` and ``review`` (part of :mod:`radseg.cli_parser`, free of heavy imports like it).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_result_parsers(sub) -> None:
    """Add ``evaluate``, ``review``, ``predict`` and ``export`` to the command subparsers ``sub``."""
    _add_evaluate_parser(sub)
    _add_review_parser(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)


def fraction(text: str) -> float:
    """``--overlap``: a number in [0, 1), refused while parsing (before anything heavy is imported)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (e.g. 0.5), not {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1, refused while parsing."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _add_evaluate_parser(sub) -> None:
    """``radseg evaluate``: predictions scored against the truth."""
    p = sub.add_parser("evaluate", help="score predictions against the truth: metrics, lesions, summary, report")
    p.add_argument("--pred", type=Path, required=True, help="folder of <case>.nii.gz label maps (radseg predict's output)")
    p.add_argument("--truth", type=Path, required=True, help="folder of label files, or a dataset (MSD, nnU-Net, CSV)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for metrics.csv, summary.json, report.html")
    p.add_argument("--labels", default=None, help="label map: JSON file or 1=liver,2=tumour (default: the truth's)")
    p.add_argument("--lesion-classes", nargs="+", default=[], metavar="CLASS", help="classes scored as lesions too")
    p.add_argument("--tolerance-mm", default=None, help="surface Dice tolerance: 2, or liver=3,tumour=1 (default 2)")
    p.add_argument("--resample", action="store_true", help="resample predictions on another grid onto the truth's (nearest)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --output")
    p.add_argument("--worst-case-distances", action="store_true",
                   help="HD95/ASSD of a structure missing from the prediction or the truth = the volume's diagonal "
                        "in mm (default: undefined, left out of the mean and counted as n_undefined)")
    p.set_defaults(handler="evaluate")


def _add_review_parser(sub) -> None:
    """``radseg review``: browser pages of every case, worst first."""
    p = sub.add_parser("review", help="browser pages to review predictions: every case worst first, on its scan")
    p.add_argument("--pred", type=Path, required=True, help="folder of <case>.nii.gz label maps (radseg predict's output)")
    p.add_argument("--truth", type=Path, default=None, help="folder of label files, or a dataset (default: none, "
                   "volumes only)")
    p.add_argument("--images", type=Path, default=None, help="folder of the scans (files or DICOM series) named as the "
                   "cases (default: the truth dataset's)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for index.html and the case pages")
    p.add_argument("--labels", default=None, help="label map: JSON file or 1=liver,2=tumour (default: the truth's)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier review in --output")
    p.add_argument("--serve", action="store_true", help="then serve the pages on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=int, default=0, help="port for --serve (default: 0, a free one, printed)")
    p.set_defaults(handler="review")


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment new scans with a trained run's checkpoint")
    p.add_argument("-m", "--model", type=Path, nargs="+", required=True, metavar="RUN",
                   help="a run folder (its best.pt; last.pt if it has none), a checkpoint file or a MONAI bundle "
                        "folder (configs/, models/); a cross-validation run (train --folds) or several of these "
                        "predict as an ensemble (mean of their probabilities)")
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="P",
                   help="NIfTI/NRRD/MHA files, DICOM series folders, or folders of them (searched recursively)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the masks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the network runs")
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                   help="how the network runs: auto (default) measures the candidates on the first case and takes "
                        "the fastest whose masks agree with torch fp32, cached per network, machine and library "
                        "versions; onnxruntime and openvino are CPU-only extras (pip install 'radseg[fast]')")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: fp32 and, where the CPU (AMX, AVX512-BF16) or GPU computes it natively, bf16 "
                        "candidates; bf16 is refused where it would be emulated")
    p.add_argument("--overlap", type=fraction, default=None,
                   help="sliding-window overlap in [0, 1) (default: the run's)")
    p.add_argument("--sw-batch-size", type=positive_int, default=None,
                   help="windows per forward pass (default: the run's)")
    p.add_argument("--tta", action="store_true", help="average over copies mirrored along the axes flipped in "
                   "training (up to 8x slower; nothing for a model trained without flips)")
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
    p.set_defaults(handler="predict")


def _add_export_parser(sub) -> None:
    """``radseg export``: a run as a MONAI bundle, or its network as TorchScript or ONNX."""
    p = sub.add_parser("export", help="share a trained run: a MONAI bundle, TorchScript or ONNX")
    p.add_argument("run", type=Path, help="a run folder (its best.pt; last.pt if it has none) or a checkpoint file")
    p.add_argument("--format", required=True, choices=("monai-bundle", "torchscript", "onnx"),
                   help="monai-bundle: configs/, models/, docs/ in MONAI's layout; torchscript, onnx: the network "
                        "with a preprocessing.json beside it (ONNX: opset 17, dynamic batch axis)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --output (never another folder, a file or the run)")
    p.set_defaults(handler="export")
