"""Per-class object statistics of label maps: how large, how many and how often each class is.

A planner sizes patches and receptive fields from the largest objects and picks a class-balanced
sampler and a fine enough spacing for the smallest ones; nnU-Net's fingerprint stops at spacings
and shapes. Boxes and diameters are in mm along the RAS axes; an object is a 26-connected component.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from radseg.transforms.io import read_header, read_image


def label_objects(label_path: Union[str, Path]) -> dict[str, Any]:
    """The objects of one label map.

    Args:
        label_path: a label file (integer classes, 0 background).

    Returns:
        ``{"volume_ml": float, "foreground_box_mm": [x, y, z] or None, "classes": {"1": {...}}}``
        where each present class has ``voxel_fraction``, ``volume_ml``, ``box_mm`` (RAS, of all its
        voxels) and ``object_diameters_mm`` (equivalent-sphere diameter of each component).
    """
    header = read_header(label_path)
    axes = header.ras_axes()
    spacing = np.asarray(header.spacing[:3], dtype=float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # numpy order is the reverse of the index axes: numpy axis 2 - i is index axis i
    array = sitk.GetArrayFromImage(read_image(label_path))
    numpy_spacing = spacing[::-1]
    classes: dict[str, Any] = {}
    for value in (int(v) for v in np.unique(array) if v > 0):
        mask = array == value
        components, count = ndimage.label(mask, np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel())[1:] * voxel_ml
        classes[str(value)] = {
            "voxel_fraction": float(mask.mean()),
            "volume_ml": float(mask.sum() * voxel_ml),
            "box_mm": _ras_box(mask, numpy_spacing, axes),
            "object_diameters_mm": [float(d) for d in (6000.0 * sizes / np.pi) ** (1 / 3)],
        }
        del components
    box = _ras_box(array > 0, numpy_spacing, axes) if classes else None
    return {"volume_ml": float(array.size * voxel_ml), "foreground_box_mm": box, "classes": classes}


def summarize_objects(per_case: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-class summary over cases (medians over the cases where a class is present).

    Returns:
        ``{"1": {"cases_present", "cases", "median_voxel_fraction", "median_volume_ml",
        "median_box_mm", "median_objects_per_case", "median_object_diameter_mm",
        "object_diameter_mm_p05", "max_object_diameter_mm", "min_object_volume_ml",
        "min_largest_object_share"}, ...}`` for every class seen in any case. The last two are the
        smallest object's volume and, over cases, the smallest share of a class's volume held by
        its largest object (1.0: one object in every case).
    """
    names = sorted({name for case in per_case for name in case["classes"]}, key=int)
    summary = {}
    for name in names:
        present = [case["classes"][name] for case in per_case if name in case["classes"]]
        diameters = np.concatenate([np.asarray(c["object_diameters_mm"]) for c in present])
        summary[name] = {
            "cases_present": len(present),
            "cases": len(per_case),
            "median_voxel_fraction": float(np.median([c["voxel_fraction"] for c in present])),
            "median_volume_ml": float(np.median([c["volume_ml"] for c in present])),
            "median_box_mm": np.median([c["box_mm"] for c in present], axis=0).tolist(),
            "median_objects_per_case": float(np.median([len(c["object_diameters_mm"]) for c in present])),
            "median_object_diameter_mm": float(np.median(diameters)),
            "object_diameter_mm_p05": float(np.percentile(diameters, 5)),
            "max_object_diameter_mm": float(diameters.max()),
            "min_object_volume_ml": float(_sphere_ml(diameters).min()),
            "min_largest_object_share": float(min(_largest_share(c["object_diameters_mm"]) for c in present)),
        }
    return summary


def median_foreground_box(per_case: Sequence[dict[str, Any]]) -> Union[list[float], None]:
    """Median over cases of the box (mm, RAS) around all foreground classes, or None without any."""
    boxes = [case["foreground_box_mm"] for case in per_case if case["foreground_box_mm"] is not None]
    return np.median(boxes, axis=0).tolist() if boxes else None


def _sphere_ml(diameters_mm: Any) -> np.ndarray:
    """Volumes (mL) of the equivalent spheres of ``diameters_mm`` (the inverse of :func:`label_objects`')."""
    return np.pi * np.asarray(diameters_mm, dtype=float) ** 3 / 6000.0


def _largest_share(diameters_mm: Sequence[float]) -> float:
    """The share of a class's volume in one case held by its largest object."""
    volumes = _sphere_ml(diameters_mm)
    return float(volumes.max() / volumes.sum())


def _ras_box(mask: np.ndarray, numpy_spacing: np.ndarray, ras_axes: list[int]) -> list[float]:
    """Extent in mm of a mask's bounding box along the RAS axes."""
    extent = []
    for axis in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        extent.append(float((hit.max() - hit.min() + 1) * numpy_spacing[axis]))
    by_index_axis = extent[::-1]
    return [by_index_axis[i] for i in ras_axes]
