"""``radseg export``: a trained run as a MONAI bundle, a TorchScript network or an ONNX network.

Everything is written into a temporary folder beside ``--output`` and renamed onto it at the end,
so a failed export leaves nothing half-written, and an existing folder is replaced only with
``overwrite``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from radseg.atomic import atomic_folder
from radseg.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = ("monai-bundle", "torchscript", "onnx")


@dataclass
class ExportResult:
    """Where the export went, and how far the exported network's logits are from the checkpoint's."""

    folder: Path
    files: list[str]
    max_logit_difference: float


def export_model(run: str | Path, format: str, output: str | Path, *, overwrite: bool = False) -> ExportResult:
    """Export a run's best checkpoint.

    Args:
        run: a run folder or checkpoint (as ``radseg predict --model`` takes).
        format: "monai-bundle", "torchscript" or "onnx".
        output: the folder to write (``configs/ models/ docs/`` for a bundle; the network and
            ``preprocessing.json`` otherwise).
        overwrite: replace an existing ``output``.

    Returns:
        The :class:`ExportResult`.

    Raises:
        DataError: an unknown format, ``output`` exists without ``overwrite``, the checkpoint is
            unusable, or the exported network's logits disagree with the checkpoint's.
    """
    from radseg.pipeline.core.checkpoint import load_checkpoint, resolve_checkpoint
    from radseg.pipeline.predict.model import load_predict_model

    if format not in FORMATS:
        raise DataError(f"export format must be one of {', '.join(FORMATS)}, not {format!r}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"export folder {output} exists; fix: choose another --output or pass --overwrite")
    model = load_predict_model(run, device="cpu")
    saved = load_checkpoint(resolve_checkpoint(run))
    with atomic_folder(output, overwrite=True) as staging:
        difference = _write(model, saved, format, staging)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    logger.info("exported %s as %s to %s", model.source, format, output)
    return ExportResult(output, files, difference)


def _write(model, saved: dict, format: str, folder: Path) -> float:
    from radseg.pipeline.export.bundle_writer import write_bundle
    from radseg.pipeline.export.describe import preprocessing_document
    from radseg.pipeline.export.network_files import write_onnx, write_torchscript

    if format == "monai-bundle":
        network = folder / "model.ts"
        difference = write_torchscript(model, network)
        write_bundle(model, saved, folder, network)
        return difference
    name = "model.ts" if format == "torchscript" else "model.onnx"
    difference = (write_torchscript if format == "torchscript" else write_onnx)(model, folder / name)
    document = preprocessing_document(model, name, format)
    (folder / "preprocessing.json").write_text(json.dumps(document, indent=4) + "\n")
    return difference
