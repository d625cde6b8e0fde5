"""A quick-look picture: three orthogonal slices of a scan with two masks outlined, and a legend.

Used by ``radseg evaluate`` (the worst cases in its report) and usable by ``radseg predict``: it
takes arrays, not files or cases.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from radseg.atomic import atomic_path

#: outline colours of the first and second mask (truth, prediction): colour-blind safe, visible on grey
OUTLINE_COLOURS = ("#00e000", "#ff2a9d")
_VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def save_quicklook(
    target: str | Path | BinaryIO,
    image: np.ndarray | None,
    masks: Sequence[np.ndarray | None] = (),
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    center: Sequence[int] | None = None,
    names: Sequence[str] = ("truth", "prediction"),
    title: str = "",
    window: tuple[float, float] | None = None,
    dpi: int = 80,
) -> None:
    """Save a PNG of three orthogonal slices through a point, the scan in grey and masks outlined.

    Slices are shown in the arrays' index order (axis 0 across, axis 1 up for the axial view), with
    each pixel's aspect from ``spacing``, so they look right for any voxel size.

    Args:
        target: a ``.png`` path (written atomically) or a binary file object (e.g. ``io.BytesIO``).
        image: the scan ``(X, Y, Z)``; None draws the outlines on black.
        masks: up to two boolean masks ``(X, Y, Z)`` on the scan's grid, outlined in
            :data:`OUTLINE_COLOURS`; None entries are skipped.
        spacing: mm per voxel along X, Y, Z.
        center: the voxel the slices pass through; default: the centre of the masks' disagreement
            (voxels in exactly one mask), else of their union, else of the volume.
        names: legend entries of the masks.
        title: a line above the slices.
        window: grey-level range; default: the scan's 1st to 99th percentile.
        dpi: resolution of the PNG.
    """
    present = [(np.asarray(m, dtype=bool), names[i], OUTLINE_COLOURS[i]) for i, m in enumerate(masks[:2]) if m is not None]
    shape = image.shape if image is not None else present[0][0].shape
    volume = np.zeros(shape, np.float32) if image is None else np.asarray(image, dtype=np.float32)
    point = tuple(int(c) for c in center) if center is not None else _default_center([m for m, _, _ in present], shape)
    low, high = window or (tuple(np.percentile(volume[::4, ::4, ::2], [1, 99])) if image is not None else (0.0, 1.0))
    figure = Figure(figsize=(12, 4.6), dpi=dpi, facecolor="black")
    for column, (view, axis) in enumerate(_VIEWS):
        ax = figure.add_subplot(1, 3, column + 1)
        index = [slice(None)] * 3
        index[axis] = point[axis]
        across, up = [a for a in range(3) if a != axis]
        ax.imshow(volume[tuple(index)].T, cmap="gray", vmin=low, vmax=high if high > low else low + 1,
                  origin="lower", aspect=spacing[up] / spacing[across], interpolation="nearest")
        for mask, _, colour in present:
            section = mask[tuple(index)].T
            if section.any() and not section.all():
                ax.contour(section.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(f"{view} {'xyz'[axis]}={point[axis]}", color="white", fontsize=10)
        ax.set_axis_off()
    handles = [Line2D([], [], color=colour, linewidth=2, label=name) for _, name, colour in present]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    if title:
        figure.suptitle(title, color="white", fontsize=11)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.08, top=0.88, wspace=0.03)
    _save(figure, target)


def quicklook_png(image: np.ndarray | None, masks: Sequence[np.ndarray | None] = (), **kwargs) -> bytes:
    """The PNG bytes :func:`save_quicklook` would write (to embed in a report)."""
    buffer = io.BytesIO()
    save_quicklook(buffer, image, masks, **kwargs)
    return buffer.getvalue()


def _default_center(masks: list[np.ndarray], shape: tuple[int, ...]) -> tuple[int, ...]:
    for region in _regions(masks):
        if region.any():
            return tuple(int(round(np.mean(i))) for i in np.nonzero(region))
    return tuple(s // 2 for s in shape)


def _regions(masks: list[np.ndarray]):
    if len(masks) == 2:
        yield masks[0] ^ masks[1]
    if masks:
        yield np.logical_or.reduce(masks)


def _save(figure: Figure, target: str | Path | BinaryIO) -> None:
    if isinstance(target, (str, Path)):
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format="png", facecolor=figure.get_facecolor())
    else:
        figure.savefig(target, format="png", facecolor=figure.get_facecolor())
