"""The data of one case page: its volumes on the display grid, encoded once, and what the page says."""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes

from radseg.pipeline.review.disagreement import error_components
from radseg.pipeline.review.volumes import MAX_DISPLAY_VOXELS, CaseVolumes, display_grid, encode, encode_image


def case_payload(case_id: str, volumes: CaseVolumes, labels: dict[int, str], scores: dict,
                 max_voxels: int = MAX_DISPLAY_VOXELS) -> dict:
    """Everything the case page draws, as JSON-ready values.

    Args:
        case_id: the case's name.
        volumes: its arrays on its own grid.
        labels: ``{class index: name}``, background included.
        scores: the case's index metrics (:func:`radseg.pipeline.review.scoring.case_scores`).
        max_voxels: the display cap (see :mod:`radseg.pipeline.review.volumes`).

    Returns:
        ``{"shape", "affine" (display index -> RAS mm, row-major 4x4), "step", "pred", "truth",
        "image", "probability", "errors", ...}``; arrays are base64 zlib (``encode``).
    """
    grid = display_grid(volumes.pred.shape, volumes.affine, max_voxels)
    pred = grid.apply(volumes.pred)
    truth = grid.apply(volumes.truth) if volumes.truth is not None else None
    voxel_ml = abs(float(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
    payload = {
        "case_id": case_id, "shape": list(grid.shape), "affine": grid.affine.ravel().tolist(), "step": grid.step,
        "source_shape": list(volumes.pred.shape), "source_spacing": list(volumes.spacing),
        "world_to_source": np.linalg.inv(volumes.affine).ravel().tolist(),  # the read-out's file voxel index
        "orientation": _axis_codes(volumes.affine), "labels": {str(k): v for k, v in labels.items()},
        "scores": scores, "pred": encode(pred, "u1"), "truth": None if truth is None else encode(truth, "u1"),
        "image": None, "probability": None,
    }
    payload["errors"], payload["error_count"] = error_components(pred, truth, voxel_ml) if truth is not None else ([], 0)
    if volumes.image is not None:
        payload["image"] = encode_image(grid.apply(volumes.image))
    if volumes.probability is not None:
        payload["probability"] = encode(np.clip(np.round(grid.apply(volumes.probability) * 255), 0, 255), "u1")
    return payload


def _axis_codes(affine: np.ndarray) -> str:
    """The source grid's orientation code (``LPS``, ``RAS``, ...), shown on the page."""
    return "".join(aff2axcodes(affine))
