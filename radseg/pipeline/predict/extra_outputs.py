"""Optional per-case outputs of ``radseg predict``: a DICOM-SEG for DICOM input, a quick-look PNG.

Each is a writer ``writer(case, labels, prepared, model, folder) -> [paths]`` for
:attr:`radseg.pipeline.predict.predict.PredictOptions.extra_writers`, called after the mask is
written and before the case's record, so a killed run never marks a case done without them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radseg.pipeline.core.masks import bounding_box
from radseg.pipeline.core.quicklook import save_quicklook
from radseg.pipeline.predict.dicom_seg import write_dicom_seg
from radseg.transforms.io import read_image

logger = logging.getLogger(__name__)

DICOM_SEG_SUFFIX = "_seg.dcm"
QUICKLOOK_SUFFIX = "_quicklook.png"


def dicom_seg_writer(case, labels: np.ndarray, prepared, model, folder: Path) -> list[Path]:
    """Write ``NAME_seg.dcm`` referencing the source series; nothing for non-DICOM input.

    Args:
        case: the :class:`~radseg.pipeline.predict.inputs.PredictCase`.
        labels: uint8 ``(Z, Y, X)`` on the scan's grid (SimpleITK array order).
        prepared: the prepared case (its ``grid`` is the scan's own grid).
        model: the loaded model (its ``label_names`` name the segments).
        folder: the output folder.

    Returns:
        The written path, or an empty list for a scan that is not a DICOM series.
    """
    if not case.is_dicom:
        return []
    label_image = prepared.grid.apply(sitk.GetImageFromArray(labels, isVector=False))
    names = {index: name for index, name in model.label_names.items() if index != 0}
    path = folder / f"{case.name}{DICOM_SEG_SUFFIX}"
    write_dicom_seg(label_image, case.path, names, path, series_uid=case.series_uid or None,
                    series_description=f"radseg {Path(str(model.source)).parent.name or 'model'}"[:64])
    return [path]


def quicklook_writer(case, labels: np.ndarray, prepared, model, folder: Path) -> list[Path]:
    """Write ``NAME_quicklook.png``: three orthogonal slices of the scan with the classes outlined.

    Up to two foreground classes are outlined each in its own colour; with more classes, the union
    of all foreground classes and the last (often the smallest: a lesion) are shown.
    """
    source = read_image(case.path, case.series_uid or None)  # kept alive: the view below is its buffer
    scan = sitk.GetArrayViewFromImage(source)
    if scan.ndim != 3:  # a multi-channel scan: show its first channel
        scan = scan[..., 0]
    image = np.transpose(scan, (2, 1, 0))
    volume = np.transpose(labels, (2, 1, 0))
    count = model.num_classes - 1
    if count <= 2:
        masks = [volume == index for index in range(1, count + 1)]
        names = [model.class_name(index) for index in range(1, count + 1)]
    else:
        masks = [volume > 0, volume == count]
        names = ["all classes", model.class_name(count)]
    path = folder / f"{case.name}{QUICKLOOK_SUFFIX}"
    save_quicklook(path, image, masks, spacing=prepared.grid.spacing, names=names,
                   title=f"{case.name}: radseg predict", center=_center(volume))
    del source
    return [path]


def _center(volume: np.ndarray) -> tuple[int, ...] | None:
    """The centre of the predicted foreground's bounding box (the slices pass through it), or None."""
    box = bounding_box(volume > 0)
    return None if box is None else tuple((axis.start + axis.stop - 1) // 2 for axis in box)
