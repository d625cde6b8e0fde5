"""``radseg export``: a trained run as a MONAI bundle, a TorchScript network or an ONNX network.

Everything is written into a temporary folder beside ``--output`` and renamed onto it at the end,
so a failed export leaves nothing half-written. ``overwrite`` replaces only an earlier export (a
bundle radseg wrote, or a network file with ``preprocessing.json``): never another folder, a file,
or anything that is, holds or lies inside the run being exported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from radseg.atomic import atomic_folder, holds_files
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
        overwrite: replace an earlier export in ``output``.

    Returns:
        The :class:`ExportResult`.

    Raises:
        DataError: an unknown format; ``output`` is a file, a folder that is no export, an export
            without ``overwrite``, or the run itself (or a folder holding or inside it); the
            checkpoint is unusable; or the exported network's logits disagree with the checkpoint's.
    """
    from radseg.pipeline.core.checkpoint import load_checkpoint, resolve_checkpoint
    from radseg.pipeline.predict.model import load_predict_model

    if format not in FORMATS:
        raise DataError(f"export format must be one of {', '.join(FORMATS)}, not {format!r}")
    output = Path(output)
    check_output(output, Path(run), overwrite)
    model = load_predict_model(run, device="cpu")
    saved = load_checkpoint(resolve_checkpoint(run))
    with atomic_folder(output, overwrite=True) as staging:
        difference = _write(model, saved, format, staging)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    logger.info("exported %s as %s to %s", model.source, format, output)
    return ExportResult(output, files, difference)


def check_output(output: Path, run: Path, overwrite: bool) -> None:
    """Refuse an ``output`` that would replace the run, a file, a folder that is no export, or an
    earlier export without ``overwrite`` (an empty folder is fine)."""
    run_folder = (run if run.is_dir() else run.parent).resolve()
    target = output.resolve()
    if target == run_folder or target in run_folder.parents or run_folder in target.parents:
        where = "is" if target == run_folder else "holds" if target in run_folder.parents else "lies inside"
        raise DataError(f"--output {output} {where} the run folder {run_folder} being exported; the export would "
                        "replace or mix with the run; fix: choose a folder outside the run")
    if not holds_files(output, "--output", "the export"):
        return
    if not is_export(output):
        raise DataError(f"--output {output} exists and holds other files, not an earlier radseg export, so "
                        "--overwrite will not replace it; fix: choose a new or empty folder")
    if not overwrite:
        raise DataError(f"export folder {output} exists (an earlier export); fix: choose another --output or "
                        "pass --overwrite to replace it")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier radseg export: a bundle whose metadata has a ``radseg`` key,
    or ``model.ts``/``model.onnx`` with ``preprocessing.json``."""
    metadata = folder / "configs" / "metadata.json"
    if metadata.is_file():
        try:
            return isinstance(json.loads(metadata.read_text()).get("radseg"), dict)
        except (OSError, ValueError, AttributeError):
            return False
    network = (folder / "model.ts").is_file() or (folder / "model.onnx").is_file()
    return network and (folder / "preprocessing.json").is_file()


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
