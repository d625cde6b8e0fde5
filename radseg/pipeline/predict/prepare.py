"""One scan read, checked and preprocessed exactly as in training, plus its body mask.

The scan is read once through SimpleITK (the reader every stage of radseg uses), checked for what
would make a prediction meaningless (not 3D, wrong modality, a DICOM series without pixels, with
missing slices or a tilted gantry), then preprocessed as the training's own deterministic chain
(:func:`radseg.transforms.preprocess.build_inference_transforms`) does: its orientation, body crop
and resampling by :mod:`.grid_in` on the scan as read (the same grid and values, several times
faster; MONAI's steps for a sheared affine), then the chain's own intensity steps. The region the
sliding windows must cover is taken from the resampled intensities before normalisation: the body
with its holes (lung, bowel gas) filled per axial slice, dilated by half a window
(:mod:`.body_mask`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pydicom
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Spacingd
from monai.utils import MetaKeys, SpaceKeys

from radseg import keys
from radseg.errors import DataError
from radseg.pipeline.predict.body_mask import body_mask, window_cover
from radseg.pipeline.predict.grid_in import orient_crop_resample
from radseg.pipeline.predict.inputs import PredictCase
from radseg.transforms import dicom as _dicom
from radseg.transforms.io import read_image, sitk_affine_ras
from radseg.transforms.preprocess import build_inference_transforms

logger = logging.getLogger(__name__)

#: a CT scan has air: some voxel below this many HU; an MRI has (almost) no such negative values
CT_AIR_HU = -200.0
MRI_MOST_NEGATIVE = -500.0


@dataclass(frozen=True)
class Grid:
    """A scan's own grid in SimpleITK's terms (LPS, index order x, y, z)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of a SimpleITK image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` (same size) this grid's spacing, origin and direction."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass
class PreparedCase:
    """A scan ready for the sliding window.

    Attributes:
        image: ``(1, C, X', Y', Z')`` float32, preprocessed (RAS, cropped, resampled, normalised).
        body: ``(X', Y', Z')`` bool, on the same grid: where windows must run (the body, holes
            filled per axial slice, dilated by half a window); windows outside it are skipped.
        pre_affine: 4x4 RAS affine of the preprocessed grid.
        original_affine: 4x4 RAS affine of the scan as read.
        grid: the scan's own grid, for writing.
    """

    image: torch.Tensor
    body: torch.Tensor
    pre_affine: np.ndarray
    original_affine: np.ndarray
    grid: Grid


class StageClock:
    """Seconds per stage: ``lap(name)`` records the time since the previous lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Record the time since the last lap under ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now


def prepare_case(case: PredictCase, model, *, check_modality: bool = True,
                 clock: StageClock | None = None) -> PreparedCase:
    """Read, check and preprocess one scan for ``model``.

    Args:
        case: the scan.
        model: a :class:`radseg.pipeline.predict.model.PredictModel`.
        check_modality: refuse a scan whose intensities (or DICOM Modality) contradict the
            model's modality.
        clock: when given, gets a ``read`` lap once the scan is read and checked.

    Returns:
        The :class:`PreparedCase`.

    Raises:
        DataError: the scan cannot be read or is unsuitable (with the reason and the fix).
    """
    if model.in_channels != 1:
        raise DataError(f"the model takes {model.in_channels} image channels per case; radseg predict "
                        "reads one scan per case; fix: use a single-channel model")
    if case.is_dicom:
        _check_dicom_series(case, model.modality if check_modality else None)
    image = read_image(case.path, case.series_uid)
    _check_dimensions(image, case)
    if check_modality:
        _check_intensities(image, case, model.modality)
    grid = Grid.of(image)
    if clock is not None:
        clock.lap("read")
    window = model.cfg.inference.roi_size or model.cfg.train.roi_size
    affine = sitk_affine_ras(image)
    resampled = orient_crop_resample(np.asarray(sitk.GetArrayViewFromImage(image)).T, affine, model.preprocess)
    if resampled is None:  # a sheared affine: MONAI's chain
        return _preprocess(_to_metatensor(image, case), model.preprocess, grid, window)
    del image
    meta = {MetaKeys.ORIGINAL_AFFINE: affine, MetaKeys.AFFINE: resampled.affine, MetaKeys.SPACE: SpaceKeys.RAS,
            "filename_or_obj": str(case.path)}
    raw = MetaTensor(resampled.image[None], meta=meta)
    return _finish(raw, model.preprocess, grid, window, build_inference_transforms(model.preprocess).transforms)


def _check_dicom_series(case: PredictCase, modality: str | None) -> None:
    files = list(case.files) or _dicom.series_files(case.path, case.series_uid)
    try:
        geometry = _dicom.slice_geometry(files)
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise DataError(f"cannot read the DICOM slice positions of series {case.name} in {case.path}: {err}; "
                        "expected ImagePositionPatient/ImageOrientationPatient/PixelSpacing on every slice; "
                        "fix: re-export the series") from err
    if not geometry.slices_even:
        raise DataError(f"DICOM series {case.name} in {case.path} has unevenly spaced slices (missing "
                        "slices?); a 3D grid cannot hold it and the mask would be misplaced; fix: export "
                        "the complete series, or resample it to even spacing (dcm2niix) and predict the NIfTI")
    if geometry.gantry_tilt:
        raise DataError(f"DICOM series {case.name} in {case.path} was acquired with a tilted gantry; "
                        "its slices are sheared, which a 3D grid cannot hold; fix: convert it with tilt "
                        "correction (dcm2niix) and predict the NIfTI")
    dataset = pydicom.dcmread(files[0], force=True)
    if "PixelData" not in dataset:
        raise DataError(f"DICOM series {case.name} in {case.path} holds no pixel data (SOP class "
                        f"{dataset.get('SOPClassUID', 'unknown')}); expected an image series; fix: point "
                        "to the CT/MR image series")
    tag = str(dataset.get("Modality", "")).upper()
    if modality is not None and tag in ("CT", "MR") and {"CT": "CT", "MR": "MRI"}[tag] != modality:
        raise DataError(f"DICOM series {case.name} is {tag} (Modality tag) but the model was trained on "
                        f"{modality}; fix: use a {tag} model, or pass --no-modality-check if the tag is wrong")


def _check_dimensions(image: sitk.Image, case: PredictCase) -> None:
    size = image.GetSize()
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1 or min(size) < 2:
        shape = "x".join(str(s) for s in size)
        components = image.GetNumberOfComponentsPerPixel()
        raise DataError(f"scan {case.path} is {image.GetDimension()}D with shape {shape} and {components} "
                        "component(s); expected one 3D volume with at least 2 voxels along each axis; fix: "
                        "split 4D series into 3D volumes, and predict 2D images with a 2D model")


def _check_intensities(image: sitk.Image, case: PredictCase, modality: str) -> None:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    low = stats.GetMinimum()
    if modality == "CT" and low > CT_AIR_HU:
        raise DataError(f"scan {case.path} has no voxel below {CT_AIR_HU:g} (minimum {low:g}): it does not "
                        "look like CT in Hounsfield units (an MRI?), and the model expects CT; fix: use an "
                        "MRI model, or pass --no-modality-check if this really is CT")
    if modality == "MRI" and low < MRI_MOST_NEGATIVE:
        raise DataError(f"scan {case.path} has values down to {low:g}: it looks like CT in Hounsfield "
                        "units, and the model expects MRI; fix: use a CT model, or pass "
                        "--no-modality-check if this really is MRI")


def _to_metatensor(image: sitk.Image, case: PredictCase) -> MetaTensor:
    """What ``LoadImaged(reader=SimpleITKReader())`` gives, from an image already read.

    The voxels are viewed in SimpleITK's buffer, transposed to (x, y, z) as a strided view and
    cast to float32 in one pass; no C-contiguous copy is made (MONAI's loader makes one, which
    costs more than the file read itself on a large scan).
    """
    array = np.asarray(sitk.GetArrayViewFromImage(image)).T.astype(np.float32)
    affine = sitk_affine_ras(image)
    meta = {
        "spacing": np.asarray(image.GetSpacing()),
        MetaKeys.ORIGINAL_AFFINE: affine,
        MetaKeys.AFFINE: affine.copy(),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()),
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        "filename_or_obj": str(case.path),
    }
    return MetaTensor(torch.from_numpy(array), meta=meta)


def _preprocess(loaded: MetaTensor, resolved, grid: Grid, window) -> PreparedCase:
    """The whole MONAI chain after its loader (for sheared affines, which the fast path cannot take)."""
    chain = build_inference_transforms(resolved).transforms
    if not isinstance(chain[0], LoadImaged):
        raise RuntimeError(f"the inference chain starts with {type(chain[0]).__name__}, not LoadImaged")
    data = Compose(chain[1:_spacing_end(chain)])({keys.IMAGE: loaded})
    del loaded
    return _finish(data[keys.IMAGE], resolved, grid, window, chain)


def _spacing_end(chain) -> int:
    """Index just past the chain's ``Spacingd``: what follows is intensity normalisation and casting."""
    return max(i for i, t in enumerate(chain) if isinstance(t, Spacingd)) + 1


def _finish(raw: MetaTensor, resolved, grid: Grid, window, chain) -> PreparedCase:
    """The body mask on the resampled intensities, then the chain's steps after ``Spacingd``."""
    body = window_cover(body_mask(raw.as_tensor(), resolved.modality, resolved.body_threshold_hu), window)
    data = Compose(chain[_spacing_end(chain):])({keys.IMAGE: raw})
    image = data[keys.IMAGE]
    return PreparedCase(
        image=image.as_tensor()[None].float(), body=body,
        pre_affine=np.asarray(image.affine, dtype=np.float64),
        original_affine=np.asarray(image.meta[MetaKeys.ORIGINAL_AFFINE], dtype=np.float64), grid=grid,
    )
