"""Per-class object statistics of label maps: how large, how many and how often each class is.

A planner sizes patches and receptive fields from the largest objects and picks a class-balanced
sampler and a fine enough spacing for the smallest ones; nnU-Net's fingerprint stops at spacings
and shapes. Boxes and diameters are in mm along the RAS axes. A component is 26-connected; an object
is a component above the fragment floor (:func:`fragments`): the spacing a planner picks must resolve
lesions, not the one-voxel pieces an irregular lesion border leaves beside them. The distances from
each class's objects to each other class (does every tumour touch the liver?) are measured in the
same pass over the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from radseg.transforms.containment import component_distances, grown_box
from radseg.transforms.io import read_header, read_image

#: fragments (:func:`fragments`) have at most this many voxels of the source grid ...
FRAGMENT_VOXELS = 8
#: ... and under this share of their class's largest component in the same label
FRAGMENT_SHARE = 0.1
#: how far (mm) from another class an object's distance is measured; farther counts as "not near it"
DISTANCE_CAP_MM = 20.0


def label_objects(label_path: Union[str, Path]) -> dict[str, Any]:
    """The objects of one label map, and how far each class's objects lie from each other class.

    Args:
        label_path: a label file (integer classes, 0 background).

    Returns:
        ``{"volume_ml": float, "foreground_box_mm": [x, y, z] or None, "classes": {"1": {...}}}``
        where each present class has ``voxel_fraction``, ``volume_ml``, ``box_mm`` (RAS, of all its
        voxels), ``component_diameters_mm`` (equivalent-sphere diameter of every component),
        ``object_diameters_mm`` (of the components above the fragment floor, :func:`fragments`),
        ``fragments`` (how many components were set aside) and ``distance_to_mm``: for each other
        class present, the largest distance (mm) from one of this class's objects to it (0: every
        object touches it, :func:`radseg.transforms.containment.component_distances`), or None when
        some object lies farther than :data:`DISTANCE_CAP_MM`.
    """
    header = read_header(label_path)
    axes = header.ras_axes()
    spacing = np.asarray(header.spacing[:3], dtype=float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # numpy order is the reverse of the index axes: numpy axis 2 - i is index axis i
    array = sitk.GetArrayFromImage(read_image(label_path))
    numpy_spacing = spacing[::-1]
    volume_ml = float(array.size * voxel_ml)
    box = grown_box(array > 0)
    if box is None:
        return {"volume_ml": volume_ml, "foreground_box_mm": None, "classes": {}}
    region = array[box]  # every class lies in the foreground's box: label and measure there only
    values = [int(v) for v in np.unique(region) if v > 0]
    classes = {str(value): _class_objects(region, value, values, numpy_spacing, axes, array.size)
               for value in values}
    return {"volume_ml": volume_ml, "foreground_box_mm": _ras_box(region > 0, numpy_spacing, axes),
            "classes": classes}


def _class_objects(region: np.ndarray, value: int, values: Sequence[int], numpy_spacing: np.ndarray,
                   axes: list[int], total_voxels: int) -> dict[str, Any]:
    """One class's entry of :func:`label_objects` (``region``: the label's foreground box, numpy order)."""
    voxel_ml = float(np.prod(numpy_spacing)) / 1000.0
    mask = region == value
    components, count = ndimage.label(mask, np.ones((3, 3, 3), bool))
    voxels = np.bincount(components.ravel(), minlength=count + 1)[1:]
    keep = ~fragments(voxels)
    renumber = np.zeros(count + 1, np.int32)  # the objects as components 1..n, fragments 0
    renumber[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    objects = renumber[components]
    del components
    return {
        "voxel_fraction": float(mask.sum() / total_voxels),
        "volume_ml": float(mask.sum() * voxel_ml),
        "box_mm": _ras_box(mask, numpy_spacing, axes),
        "component_diameters_mm": _diameters(voxels * voxel_ml),
        "object_diameters_mm": _diameters(voxels[keep] * voxel_ml),
        "fragments": int((~keep).sum()),
        "distance_to_mm": {str(other): _distance(objects, int(keep.sum()), region == other, numpy_spacing)
                           for other in values if other != value},
    }


def fragments(voxels: np.ndarray) -> np.ndarray:
    """Which components of one class in one label are fragments, not objects.

    A fragment has at most :data:`FRAGMENT_VOXELS` voxels of the source grid *and* under
    :data:`FRAGMENT_SHARE` of the class's largest component in the same label. Eight voxels fit in a
    2x2x2 block, where no voxel has a full neighbourhood of its own class: such a piece is all border
    (a partial-volume voxel or a stroke of the annotator's brush beside a lesion), not a shape a
    network could resolve. The relative test keeps a label's only lesions however small they are
    (the class is then genuinely small, and the spacing must resolve it); it is relative to the
    largest component, not the median, because fragments can outnumber lesions (a ring of twenty
    pieces around one lesion makes the median component a fragment).

    Args:
        voxels: ``(N,)`` voxel count of each component.

    Returns:
        ``(N,)`` booleans, True for a fragment.
    """
    voxels = np.asarray(voxels)
    if voxels.size == 0:
        return np.zeros(0, bool)
    return (voxels <= FRAGMENT_VOXELS) & (voxels < FRAGMENT_SHARE * voxels.max())


def summarize_objects(per_case: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-class summary over cases (medians over the cases where a class is present).

    Returns:
        ``{"1": {...}, ...}`` for every class seen in any case, with ``cases_present``, ``cases``,
        ``median_voxel_fraction``, ``median_volume_ml``, ``median_box_mm``; every component:
        ``components`` (count) and ``component_diameter_mm_p05``/``_p50``/``_p95``; the objects
        above the fragment floor: ``objects`` (count), ``fragments`` (set aside),
        ``median_objects_per_case``, ``object_diameter_mm_p05``, ``median_object_diameter_mm``,
        ``object_diameter_mm_p95``, ``max_object_diameter_mm``, ``min_object_volume_ml``;
        ``min_largest_object_share`` (over cases, the smallest share of a class's volume held by its
        largest component; 1.0: one component in every case) and ``distance_to_mm``: for each other
        class, the largest distance (mm) from an object of this class to it over the labels holding
        this class, None where that class was missing or farther than :data:`DISTANCE_CAP_MM` in one.
    """
    names = sorted({name for case in per_case for name in case["classes"]}, key=int)
    summary = {}
    for name in names:
        present = [case["classes"][name] for case in per_case if name in case["classes"]]
        components = np.concatenate([np.asarray(c["component_diameters_mm"]) for c in present])
        diameters = np.concatenate([np.asarray(c["object_diameters_mm"]) for c in present])
        summary[name] = {
            "cases_present": len(present),
            "cases": len(per_case),
            "median_voxel_fraction": float(np.median([c["voxel_fraction"] for c in present])),
            "median_volume_ml": float(np.median([c["volume_ml"] for c in present])),
            "median_box_mm": np.median([c["box_mm"] for c in present], axis=0).tolist(),
            "components": int(components.size),
            **{f"component_diameter_mm_p{q:02d}": float(np.percentile(components, q)) for q in (5, 50, 95)},
            "objects": int(diameters.size),
            "fragments": int(sum(c["fragments"] for c in present)),
            "median_objects_per_case": float(np.median([len(c["object_diameters_mm"]) for c in present])),
            "median_object_diameter_mm": float(np.median(diameters)),
            "object_diameter_mm_p05": float(np.percentile(diameters, 5)),
            "object_diameter_mm_p95": float(np.percentile(diameters, 95)),
            "max_object_diameter_mm": float(diameters.max()),
            "min_object_volume_ml": float(_sphere_ml(diameters).min()),
            "min_largest_object_share": float(min(_largest_share(c["component_diameters_mm"]) for c in present)),
            "distance_to_mm": _largest_distances(name, names, present),
        }
    return summary


def median_foreground_box(per_case: Sequence[dict[str, Any]]) -> Union[list[float], None]:
    """Median over cases of the box (mm, RAS) around all foreground classes, or None without any."""
    boxes = [case["foreground_box_mm"] for case in per_case if case["foreground_box_mm"] is not None]
    return np.median(boxes, axis=0).tolist() if boxes else None


def _diameters(volumes_ml: np.ndarray) -> list[float]:
    """Equivalent-sphere diameters (mm) of volumes in mL."""
    return [float(d) for d in (6000.0 * np.asarray(volumes_ml, dtype=float) / np.pi) ** (1 / 3)]


def _distance(objects: np.ndarray, count: int, other: np.ndarray, spacing: np.ndarray) -> Union[float, None]:
    """The largest distance (mm) from one of ``objects`` (a component map) to ``other``, or None
    when one lies farther than :data:`DISTANCE_CAP_MM` (measured on the objects' box grown by it)."""
    margin = [int(np.ceil(DISTANCE_CAP_MM / s)) + 1 for s in spacing]
    box = grown_box(objects > 0, margin)
    farthest = float(component_distances(objects[box], count, other[box], spacing).max())
    return farthest if farthest <= DISTANCE_CAP_MM else None


def _largest_distances(name: str, names: Sequence[str], present: Sequence[dict]) -> dict[str, Any]:
    """Per other class, the largest of the per-case distances (None when any is None or missing)."""
    out: dict[str, Any] = {}
    for other in (n for n in names if n != name):
        values = [c.get("distance_to_mm", {}).get(other) for c in present]
        out[other] = None if any(v is None for v in values) else float(max(values))
    return out


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
