"""Reading one case for scoring: label maps checked against the label map, probability maps, geometry."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from radseg.errors import DataError
from radseg.pipeline.evaluate.geometry import GRID_TOLERANCE_MM, grid_difference, resample_to
from radseg.pipeline.evaluate.inputs import CasePair
from radseg.transforms.io import array_to_image, read_header, read_image, sitk_affine_ras

logger = logging.getLogger(__name__)


@dataclass
class LoadedCase:
    """One case's arrays on the truth's grid, ``(X, Y, Z)`` in index order.

    Attributes:
        pred, truth: class indices.
        spacing: mm per voxel along X, Y, Z.
        affine: voxel index -> world (RAS, mm).
        probabilities: ``{class index: (X, Y, Z) float32}`` for the classes asked for.
        probability_grid_checked: False when the probability map carries no affine (``.npy``, or an
            ``.npz`` without one), so only its shape could be checked.
    """

    pred: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)
    probability_grid_checked: bool = True


def check_geometry(pairs: list[CasePair], resample: bool) -> list[str]:
    """Compare every prediction's grid with its truth's (headers only, before any scoring).

    Args:
        pairs: the cases; those without a prediction are skipped.
        resample: allow different grids (the prediction will be resampled onto the truth's).

    Returns:
        The case ids whose prediction is on another grid (to resample).

    Raises:
        DataError: a label map is not 3D, or grids differ without ``resample`` (every case listed,
            each naming both files and the difference).
    """
    differing, problems = [], []
    for pair in pairs:
        if pair.pred is None:
            continue
        pred, truth = read_header(pair.pred), read_header(pair.truth)
        not_3d = [h for h in (pred, truth) if len(h.shape) != 3 or h.num_components != 1]
        problems += [f"{h.path} is not a 3D label map (shape {list(h.shape)}, {h.num_components} component(s)); "
                     "expected one class index per voxel" for h in not_3d]
        difference = None if not_3d else grid_difference(pred, truth)
        if difference:
            differing.append(pair.case_id)
        if difference and not resample:
            problems.append(f"case {pair.case_id}: prediction {pair.pred} and truth {pair.truth} are not on the same "
                            f"grid: {difference}")
    if problems:
        raise DataError(f"{len(problems)} prediction(s) cannot be compared voxel by voxel with their truth; predict "
                        "on the truth's own scans, or pass --resample (nearest neighbour onto the truth grid):\n"
                        + "\n".join(problems))
    return differing


def load_case(pair: CasePair, num_classes: int, *, resample: bool = False,
              probability_classes: tuple[int, ...] = ()) -> LoadedCase:
    """Read a case's prediction and truth onto the truth's grid and check their values.

    Args:
        pair: the case (with a prediction).
        num_classes: classes in the label map, background included.
        resample: resample the prediction (and its probability map) onto the truth's grid.
        probability_classes: classes whose probability maps to read, when the case has one.

    Returns:
        The arrays, spacing and affine.

    Raises:
        DataError: a label value outside the label map, or a probability map that is malformed,
            on another grid or holds NaN.
    """
    truth_image, pred_image = read_image(pair.truth), read_image(pair.pred)
    pred_affine = sitk_affine_ras(pred_image)
    if resample:
        pred_image = resample_to(pred_image, truth_image)
    truth, pred = _labels_of(truth_image, pair.truth, num_classes), _labels_of(pred_image, pair.pred, num_classes)
    affine = sitk_affine_ras(truth_image)
    loaded = LoadedCase(pred, truth, tuple(float(s) for s in truth_image.GetSpacing()), affine)
    if pair.probabilities is not None and probability_classes:
        loaded.probabilities, loaded.probability_grid_checked = _probabilities(
            pair, probability_classes, num_classes, pred_affine, truth_image if resample else None)
    return loaded


def _labels_of(image: sitk.Image, path: Path, num_classes: int) -> np.ndarray:
    array = sitk.GetArrayFromImage(image).T  # a copy: a view dies with the image
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise DataError(f"label map {path} holds non-integer values; expected class indices 0..{num_classes - 1}")
    low, high = array.min(), array.max()
    if low < 0 or high >= num_classes:
        values = np.flatnonzero(np.bincount((array.astype(np.int64) - min(low, 0)).ravel())) + min(low, 0)
        raise DataError(f"label values {{{', '.join(str(int(v)) for v in values)}}} in {path} exceed the "
                        f"{num_classes} classes of the label map (0..{num_classes - 1}); pass the right --labels "
                        "or fix the file")
    return np.asarray(array, dtype=np.uint8 if num_classes <= 256 else np.int32)


def _probabilities(pair: CasePair, classes: tuple[int, ...], num_classes: int, pred_affine: np.ndarray,
                   reference: sitk.Image | None) -> tuple[dict[int, np.ndarray], bool]:
    """The probability maps of ``classes``, and whether the map's grid could be checked (it had an affine)."""
    path = pair.probabilities
    array, affine = _read_probabilities(path)
    if affine is not None and affine.shape != (4, 4):
        raise DataError(f"case {pair.case_id}: probability map {path} holds an affine of shape {list(affine.shape)}; "
                        "expected 4x4 (RAS, voxel index to mm); re-run radseg predict --probabilities")
    if affine is None:
        logger.warning("case %s: probability map %s has no affine, so only its shape can be checked against %s; "
                       "write it as .npz with an 'affine' (radseg predict --probabilities does) or as NIfTI",
                       pair.case_id, path.name, pair.pred.name)
    elif np.abs(affine - pred_affine).max() > GRID_TOLERANCE_MM:
        raise DataError(f"case {pair.case_id}: probability map {path} is not on the grid of its label map "
                        f"{pair.pred}: {_grids(affine, pred_affine)}; re-run radseg predict --probabilities for "
                        "this case, or remove the probability map")
    pred_shape = list(read_header(pair.pred).shape)
    if array.ndim != 4 or list(array.shape) != [num_classes, *pred_shape]:
        layout = "(X, Y, Z, C)" if path.name.endswith((".nii", ".nii.gz")) else "(C, X, Y, Z)"
        raise DataError(f"probability map {path} has {list(array.shape)} voxels; expected {layout} with C = {num_classes} "
                        f"classes (background first) on the grid of {pair.pred} {pred_shape}")
    maps = {}
    for cls in classes:
        channel = np.asarray(array[cls], dtype=np.float32)
        if np.isnan(channel).any():
            raise DataError(f"probability map {path} holds NaN in channel {cls}; expected probabilities in 0..1; "
                            "re-run radseg predict (a NaN usually means a diverged network)")
        if reference is not None:
            channel = sitk.GetArrayFromImage(resample_to(array_to_image(channel, pred_affine), reference, linear=True)).T
        maps[cls] = channel
    return maps, affine is not None


def _read_probabilities(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The map channel first, ``(C, X, Y, Z)``, whatever its file format, and its RAS affine (None in a .npy)."""
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r"), None
        if path.suffix == ".npz":
            with np.load(path) as archive:
                names = [name for name in archive.files if name not in ("affine", "class_names")]
                key = "probabilities" if "probabilities" in archive.files else names[0]
                affine = np.asarray(archive["affine"], dtype=np.float64) if "affine" in archive.files else None
                return archive[key], affine
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except (OSError, ValueError, IndexError, EOFError) as err:
        raise DataError(f"cannot read probability map {path} ({err}); re-run radseg predict") from err
    array = array[:, :, :, 0] if array.ndim == 5 and array.shape[3] == 1 else array
    return (np.moveaxis(array, -1, 0) if array.ndim == 4 else array), image.affine


def _grids(affine: np.ndarray, pred_affine: np.ndarray) -> str:
    """The two grids side by side: origin and spacing, and the direction when it differs (RAS, mm)."""
    def describe(matrix: np.ndarray, with_direction: bool) -> str:
        spacing = np.linalg.norm(matrix[:3, :3], axis=0)
        text = f"origin {_fmt(matrix[:3, 3])} mm, spacing {_fmt(spacing)} mm"
        return text + (f", direction {_fmt((matrix[:3, :3] / spacing).ravel())}" if with_direction else "")

    turned = not np.allclose(affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0),
                             pred_affine[:3, :3] / np.linalg.norm(pred_affine[:3, :3], axis=0), atol=1e-4)
    return f"map {describe(affine, turned)} vs label map {describe(pred_affine, turned)} (RAS)"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
