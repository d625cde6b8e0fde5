"""``radseg slices predict``: one probability per axial slice of each input scan, as CSV and PNG.

The scan goes through the slice run's own preprocessing (from its checkpoint); the probabilities
on that grid are mapped back to the input's axial slices by world z (RAS mm), so the CSV has one
row per axial slice of the input whatever its orientation or spacing. Slices outside the body
crop hold no body, so they get probability 0.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radseg.atomic import atomic_path, write_text_atomic
from radseg.errors import DataError
from radseg.pipeline.core.distributed import log_device
from radseg.pipeline.slices.infer import SliceModel, load_slice_model, slice_probabilities

logger = logging.getLogger(__name__)


@dataclass
class SlicePrediction:
    """The per-slice result of one scan."""

    source: Path
    csv: Path
    png: Path
    z_mm: np.ndarray
    probabilities: np.ndarray
    threshold: float
    target: str

    def __str__(self) -> str:
        above = int((self.probabilities >= self.threshold).sum())
        return (f"{self.source}: {len(self.probabilities)} axial slices, {above} with {self.target} "
                f"(threshold {self.threshold:.3f}) -> {self.csv}, {self.png}")


def predict_slices(model: str | Path | SliceModel, input: str | Path, output: str | Path, *,
                   overwrite: bool = False, device: str = "auto") -> list[SlicePrediction]:
    """Classify every axial slice of a scan, a DICOM series folder, or a folder of them.

    Args:
        model: a slice run's ``best.pt`` (or a loaded :class:`SliceModel`).
        input: a NIfTI/NRRD/MHA file, a DICOM series folder, or a folder of such scans.
        output: folder for ``<case>_slices.csv`` (slice, z_mm, probability, predicted label) and
            ``<case>_slices.png`` (probability along z with the threshold).
        overwrite: replace earlier outputs of the same names (else they are refused, before any work).
        device: "auto", "cpu" or "cuda".

    Returns:
        One :class:`SlicePrediction` per scan.

    Raises:
        DataError: no scan at ``input``, outputs that exist already, an unreadable scan.
    """
    from radseg.pipeline.data.cases import case_name

    sources = find_scans(Path(input))
    output = Path(output)
    names = {src: case_name(src) or src.name for src in sources}
    targets = [output / f"{names[s]}_slices.{ext}" for s in sources for ext in ("csv", "png")]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise DataError(f"{len(existing)} output file(s) exist already: {', '.join(existing[:4])}; pass --overwrite "
                        "to replace them or choose another --output")
    slice_model = model if isinstance(model, SliceModel) else load_slice_model(model, device)
    log_device(slice_model.device)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for source in sources:
        z_mm, probabilities = scan_probabilities(slice_model, source)
        result = SlicePrediction(source, output / f"{names[source]}_slices.csv", output / f"{names[source]}_slices.png",
                                 z_mm, probabilities, slice_model.threshold, slice_model.cfg.slices.target)
        _write_csv(result)
        plot_probabilities(result)
        logger.info("%s", result)
        results.append(result)
    return results


def scan_probabilities(slice_model: SliceModel, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """World z (mm) and probability of each axial slice of the input scan, in the input's slice order."""
    from radseg import keys
    from radseg.pipeline.slices.samples import build_slice_transforms, to_slice_case, user_errors
    from radseg.transforms.fingerprint import ResolvedPreprocess
    from radseg.transforms.io import read_header

    resolved = ResolvedPreprocess.from_dict(slice_model.preprocess)
    transform = build_slice_transforms(resolved, slice_model.cfg, None)
    with user_errors():
        case = to_slice_case(transform({keys.IMAGE: str(source), keys.CASE_ID: str(source)}))
    on_grid = slice_probabilities(slice_model.network, case.image, slice_model.context, slice_model.sequence,
                                  device=slice_model.device, amp=slice_model.amp)
    input_z = input_slice_z(read_header(source))
    return input_z, map_to_slices(case.z_mm, on_grid, input_z)


def input_slice_z(header) -> np.ndarray:
    """World z (mm, superior positive) of the centre of each axial slice of a scan, in index order.

    The axial axis is the index axis closest to superior-inferior (``ImageHeader.ras_axes()[2]``).
    """
    axis = header.ras_axes()[2]
    shape = np.asarray(header.shape[:3], dtype=np.float64)
    index = np.tile((shape - 1) / 2, (int(shape[axis]), 1))
    index[:, axis] = np.arange(int(shape[axis]))
    direction = np.asarray(header.direction, dtype=np.float64).reshape(3, 3)
    world = np.asarray(header.origin[:3]) + (index * np.asarray(header.spacing[:3])) @ direction.T
    return world[:, 2]  # LPS and RAS share the superior axis


def map_to_slices(grid_z: np.ndarray, probabilities: np.ndarray, input_z: np.ndarray) -> np.ndarray:
    """Probabilities on the preprocessed z grid, linearly interpolated at the input slices' z.

    Within half a grid step of the first or last grid slice the edge value holds; farther out
    (outside the body crop) the probability is 0.
    """
    order = np.argsort(grid_z)
    z, p = np.asarray(grid_z, dtype=np.float64)[order], np.asarray(probabilities, dtype=np.float64)[order]
    half = abs(z[1] - z[0]) / 2 if len(z) > 1 else 0.5
    return np.interp(input_z, np.concatenate([[z[0] - half], z, [z[-1] + half]]),
                     np.concatenate([[p[0]], p, [p[-1]]]), left=0.0, right=0.0)


def find_scans(path: Path) -> list[Path]:
    """The scans at ``path``: a scan file, a DICOM series folder, or a folder of those.

    Raises:
        DataError: nothing readable there.
    """
    from radseg.pipeline.data.cases import case_name
    from radseg.transforms.dicom import list_dicom_series

    if not path.exists():
        raise DataError(f"--input {path} does not exist; pass a NIfTI file, a DICOM series folder or a folder of them")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and case_name(p))
    if not files and list_dicom_series(path):
        return [path]
    scans = files + sorted(p for p in path.iterdir() if p.is_dir() and list_dicom_series(p))
    if not scans:
        raise DataError(f"--input {path} holds no scan (NIfTI/NRRD/MHA files or DICOM series folders); check the path")
    return scans


def _write_csv(result: SlicePrediction) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["slice", "z_mm", "probability", result.target])
    for index, (z, p) in enumerate(zip(result.z_mm, result.probabilities)):
        writer.writerow([index, f"{z:.2f}", f"{p:.5f}", int(p >= result.threshold)])
    write_text_atomic(result.csv, buffer.getvalue())


def plot_probabilities(result: SlicePrediction) -> Path:
    """Draw the probability along z with the threshold and the slices above it (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(result.z_mm)
    z, p = result.z_mm[order], result.probabilities[order]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(z, p, marker=".", label=f"P({result.target})")
    ax.axhline(result.threshold, color="red", linestyle="--", label=f"threshold {result.threshold:.3f}")
    ax.fill_between(z, 0, 1, where=p >= result.threshold, color="orange", alpha=0.2, step="mid",
                    label=f"{result.target} slices")
    ax.set_xlabel("z (mm, inferior -> superior)")
    ax.set_ylabel("probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{result.source.name}: {len(p)} axial slices")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(result.png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return result.png
