"""Where prediction and truth disagree, as components: the page's "jump to the next error" targets.

A wrong voxel is one whose predicted class differs from the true class. Wrong voxels are grouped in
26-connected components (as lesions are counted), largest first; each gets a target voxel inside it
(the one nearest its centroid, which may lie outside a curved component) and a kind: false
positive (truth is background), false negative (prediction is background) or wrong class.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: components kept per case (largest first); the rest are left to scrolling
MAX_COMPONENTS = 200


def error_components(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> tuple[list[dict], int]:
    """The components of disagreement, largest first (at most :data:`MAX_COMPONENTS`), and how many there are.

    Args:
        pred: predicted classes on the display grid ``(I, J, K)``.
        truth: true classes on the same grid.
        voxel_ml: the volume of one display voxel, mL.

    Returns:
        ``[{"voxel": [i, j, k], "voxels": n, "volume_ml": v, "kind": "FP" | "FN" | "class"}]`` and the
        number of components.
    """
    wrong = pred != truth
    ids, count = ndimage.label(wrong, np.ones((3, 3, 3), dtype=bool))
    if not count:
        return [], 0
    sizes = np.bincount(ids.ravel())[1:]
    largest = np.argsort(-sizes, kind="stable")[:MAX_COMPONENTS]
    boxes = ndimage.find_objects(ids)
    components = []
    for index in largest:
        box = boxes[index]
        inside = ids[box] == index + 1
        components.append({"voxel": _target(inside, box), "voxels": int(sizes[index]),
                           "volume_ml": float(sizes[index]) * voxel_ml,
                           "kind": _kind(pred[box][inside], truth[box][inside])})
    return components, int(count)


def _target(inside: np.ndarray, box: tuple[slice, ...]) -> list[int]:
    """The component's voxel nearest its centroid, in the full grid's indices."""
    points = np.argwhere(inside)
    nearest = points[np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1))]
    return [int(n + s.start) for n, s in zip(nearest, box)]


def _kind(pred: np.ndarray, truth: np.ndarray) -> str:
    false_positive = int(np.count_nonzero(truth == 0))
    false_negative = int(np.count_nonzero(pred == 0))
    if false_positive >= max(false_negative, 1) and false_positive * 2 >= pred.size:
        return "FP"
    if false_negative * 2 >= pred.size:
        return "FN"
    return "class"
