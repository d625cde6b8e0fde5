"""Reading scans for the whole toolkit, through SimpleITK.

One reader for NIfTI, NRRD, MHA/MHD files and DICOM series folders, so that every part of radseg
(check-data, caching, training, prediction) sees the same geometry. Arrays handed to MONAI are in
(x, y, z) index order with a RAS affine, the conventions of MONAI's ``ITKReader`` with
``affine_lps_to_ras=True`` and of its ``NibabelReader``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys

from radseg.errors import DataError
from radseg.transforms import dicom as _dicom
from radseg.transforms.dicom import list_dicom_series  # noqa: F401 - public here too
from radseg.transforms.integrity import check_nifti_complete

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: file suffixes read as single files; a folder is read as a DICOM series
#: SimpleITK metadata key under which the reader records where an image came from
_SOURCE_KEY = "radseg_source"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass(frozen=True)
class ImageHeader:
    """The geometry of a scan, read without its voxels.

    Attributes:
        path: the file or DICOM folder.
        shape: voxels along each spatial index axis, (x, y, z) (SimpleITK order, not numpy's).
        spacing: mm per voxel along each spatial index axis.
        origin: world (LPS) position of voxel (0, 0, 0), mm.
        direction: direction cosines, row-major, one row per world axis (LPS), 3x3.
        dtype: SimpleITK pixel type, e.g. "16-bit signed integer".
        num_components: image channels: components per voxel, times the length of a 4th axis
            (a 4D NIfTI such as the Decathlon's multi-modal cases keeps its channels there).
        num_series: DICOM series in the folder (0 for a file).
        slices_even: False when DICOM slice positions are unevenly spaced (missing slices).
        gantry_tilt: True when DICOM slices are not stacked along their normal (tilted gantry).
    """

    path: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]
    dtype: str
    num_components: int = 1
    num_series: int = 0
    slices_even: bool = True
    gantry_tilt: bool = False

    def ras_axes(self) -> list[int]:
        """For each RAS axis (the axes after ``Orientationd("RAS")``), the index axis along it.

        Oblique at 45 degrees (two index axes closest to one world axis): the index order.
        """
        direction = np.abs(np.asarray(self.direction, dtype=float))
        axes = np.argmax(direction, axis=1).tolist()  # LPS rows: the same axes as RAS
        return axes if len(set(axes)) == 3 else [0, 1, 2]


def read_image(path: PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a scan file or a DICOM series folder.

    Args:
        path: a NIfTI/NRRD/MHA/MHD file, or a folder holding a DICOM series.
        series_uid: which series to read when the folder holds several.

    Returns:
        The image with its geometry (LPS world coordinates, as SimpleITK keeps them).

    Raises:
        DataError: the path is missing, holds no DICOM, holds several series and none was chosen,
            its slices are not on a regular grid (tilted gantry, uneven positions), or it cannot
            be read (truncated or corrupt file).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"image {path} does not exist; expected a NIfTI/NRRD/MHA file or a DICOM "
                        "folder; fix the path in the datalist or dataset.json")
    if path.is_dir():
        files = _dicom.series_files(path, series_uid)
        _dicom.refuse_irregular(path, _dicom.read_geometry(path, files))
        return _read(path, lambda: _read_series(files))
    check_nifti_complete(path)  # SimpleITK zero-fills truncated NIfTI without an error
    return _read(path, lambda: sitk.ReadImage(str(path)))


def read_header(path: PathLike, series_uid: str | None = None) -> ImageHeader:
    """Read a scan's geometry without its voxels (cheap: headers only).

    Args:
        path: a NIfTI/NRRD/MHA/MHD file, or a DICOM series folder.
        series_uid: which series to describe when the folder holds several.

    Returns:
        The header; for DICOM folders also the number of series and slice-spacing checks.

    Raises:
        DataError: as :func:`read_image`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"image {path} does not exist; fix the path in the datalist or dataset.json")
    if path.is_dir():
        return _dicom_header(path, series_uid)
    check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _read(path, reader.ReadImageInformation)
    return _header_from(str(path), reader)


def sitk_affine_ras(image: Any) -> np.ndarray:
    """The 4x4 voxel-index -> RAS world affine of a SimpleITK image or reader (3 spatial axes)."""
    dims = min(image.GetDimension(), 3)
    full = np.asarray(image.GetDirection(), dtype=np.float64).reshape(image.GetDimension(), -1)
    affine = np.eye(dims + 1)
    affine[:dims, :dims] = full[:dims, :dims] @ np.diag(np.asarray(image.GetSpacing())[:dims])
    affine[:dims, -1] = np.asarray(image.GetOrigin())[:dims]
    return orientation_ras_lps(affine)


def array_to_image(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """Make a SimpleITK image from an (x, y, z) array and its RAS affine (the inverse of the reader).

    Args:
        array: voxels in (x, y, z) index order (no channel axis).
        affine_ras: 4x4 voxel-index -> RAS world affine.

    Returns:
        The image in SimpleITK's LPS geometry.
    """
    affine = orientation_ras_lps(np.asarray(affine_ras, dtype=np.float64))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in affine[:3, 3]])
    image.SetDirection([float(d) for d in (affine[:3, :3] / spacing).ravel()])
    return image


class SimpleITKReader(ImageReader):
    """MONAI image reader backed by SimpleITK: ``LoadImaged(keys, reader=SimpleITKReader())``.

    Gives arrays in (x, y, z) index order and meta ``affine``/``original_affine`` in RAS, like
    MONAI's ``ITKReader(affine_lps_to_ras=True)``. A list of paths (one per channel, nnU-Net
    style) is stacked on a new first axis with ``original_channel_dim=0``; a multi-component or
    4D image keeps its channels last (``original_channel_dim=-1``), so ``EnsureChannelFirstd``
    handles both.

    Args:
        series_uid: which DICOM series to read when a folder holds several.
    """

    def __init__(self, series_uid: str | None = None):
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every name is a folder (DICOM series) or has a suffix SimpleITK reads."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(IMAGE_SUFFIXES) for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        """Read one path, or a list of paths (channels), into SimpleITK image(s)."""
        names = [data] if isinstance(data, (str, Path)) else list(data)
        images = [read_image(n, self.series_uid) for n in names]
        for image, name in zip(images, names):  # kept on the image: thread-safe, unlike the reader
            image.SetMetaData(_SOURCE_KEY, str(name))
        return images if len(names) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Array (x, y, z[, c]) or (c, x, y, z) for several files, and MONAI meta."""
        images = list(img) if isinstance(img, (list, tuple)) else [img]
        names = [i.GetMetaData(_SOURCE_KEY) if i.HasMetaDataKey(_SOURCE_KEY) else "" for i in images]
        arrays, metas = zip(*(_array_and_meta(i) for i in images))
        meta = dict(metas[0])
        for other, name in zip(metas[1:], names[1:]):
            _check_same_grid(meta, other, names[0], name)
        if len(arrays) == 1:
            return arrays[0], meta
        if not np.isnan(meta[MetaKeys.ORIGINAL_CHANNEL_DIM]):
            raise DataError(f"channel files {names} are multi-component images; expected one "
                            "scalar image per channel; fix: split the components into files")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta


def _array_and_meta(image: sitk.Image) -> tuple[np.ndarray, dict]:
    """(x, y, z[, c]) array and the MONAI meta of one SimpleITK image."""
    array = sitk.GetArrayFromImage(image).T  # numpy (z, y, x) -> (x, y, z); components first
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, 0, -1)
    dims = min(image.GetDimension(), 3)
    affine = sitk_affine_ras(image)
    meta = {
        "spacing": np.asarray(image.GetSpacing()[:dims]),
        MetaKeys.ORIGINAL_AFFINE: affine,
        MetaKeys.AFFINE: affine.copy(),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()[:dims]),
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if array.ndim == dims else -1,
    }
    return array, meta


def _check_same_grid(meta: dict, other: dict, name: str, other_name: str) -> None:
    same_shape = np.array_equal(meta[MetaKeys.SPATIAL_SHAPE], other[MetaKeys.SPATIAL_SHAPE])
    if not same_shape or not np.allclose(meta[MetaKeys.AFFINE], other[MetaKeys.AFFINE], atol=1e-3):
        raise DataError(
            f"channel {other_name} is not on the grid of {name}: shape "
            f"{other[MetaKeys.SPATIAL_SHAPE].tolist()} vs {meta[MetaKeys.SPATIAL_SHAPE].tolist()}, "
            "affines differ; expected all channels of a case on one grid; fix: resample them")


def _read(path: Path, action):
    """Run a SimpleITK read, turning its RuntimeError into a DataError naming the file."""
    try:
        return action()
    except RuntimeError as err:
        raise DataError(
            f"cannot read image {path}: {_itk_reason(err)}; expected a complete NIfTI/NRRD/MHA file "
            "or DICOM series; fix: re-export or re-download the file (is it truncated?)") from err


def _itk_reason(err: RuntimeError) -> str:
    """The informative lines of an ITK exception, without source paths and object addresses."""
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [re.sub(r"^(ITK ERROR: \w+\(0x[0-9a-f]+\):|sitk::ERROR:)\s*", "", line) for line in lines
             if line and not line.startswith("Exception thrown in")]
    useful = [line for line in lines if "trouble" not in line and not line.endswith(":")]
    return " / ".join(useful or lines)[-300:]


def _read_series(files: list[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _header_from(path: str, reader: sitk.ImageFileReader) -> ImageHeader:
    """The header of a file; a 4D image (MSD's multi-modal cases) is 3D with its 4th axis as channels."""
    dims = reader.GetDimension()
    spatial = min(dims, 3)
    direction = np.asarray(reader.GetDirection()).reshape(dims, dims)[:spatial, :spatial]
    size = reader.GetSize()
    channels = int(reader.GetNumberOfComponents()) * (int(np.prod(size[3:])) if dims > 3 else 1)
    return ImageHeader(
        path=path,
        shape=tuple(int(s) for s in size[:spatial]),
        spacing=tuple(float(s) for s in reader.GetSpacing()[:spatial]),
        origin=tuple(float(o) for o in reader.GetOrigin()[:spatial]),
        direction=tuple(tuple(float(v) for v in row) for row in direction),
        dtype=sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        num_components=channels,
    )


def _dicom_header(folder: Path, series_uid: str | None) -> ImageHeader:
    series = _dicom.list_dicom_series(folder)
    files = _dicom.series_files(folder, series_uid, series)
    num_series = len(series)
    reader = sitk.ImageFileReader()  # pixel type after rescale, as the series read will give it
    reader.SetFileName(files[0])
    _read(Path(files[0]), reader.ReadImageInformation)
    geometry = _dicom.read_geometry(folder, files)
    return ImageHeader(
        path=str(folder),
        shape=(int(reader.GetSize()[0]), int(reader.GetSize()[1]), len(files)),
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        dtype=sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        num_components=int(reader.GetNumberOfComponents()),
        num_series=num_series,
        slices_even=geometry.slices_even,
        gantry_tilt=geometry.gantry_tilt,
    )
