"""What a training run leaves in its folder for a person: metrics.csv, curves.png, train.log, TensorBoard.

Only rank 0 of a distributed run creates a :class:`RunLog`; the other ranks log nothing to files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from radseg.atomic import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
LOG_FILE = "train.log"


class RunLog:
    """Per-epoch metrics, training curves, a log file and optional TensorBoard events.

    ``rows`` is the whole history (one dict per epoch); metrics.csv is rewritten from it each
    epoch, so a resumed run that restores ``rows`` from its checkpoint drops epochs that were
    logged after the last checkpoint.

    Args:
        folder: the run folder.
        rows: history to start from (from a checkpoint when resuming).
        tensorboard: write TensorBoard events when ``torch.utils.tensorboard`` is importable.
    """

    def __init__(self, folder: str | Path, rows: list[dict[str, Any]] | None = None, tensorboard: bool = True):
        self.folder = Path(folder)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]
        self._handler = _attach_file_handler(self.folder / LOG_FILE)
        self._writer = _summary_writer(self.folder / "tensorboard") if tensorboard else None
        self._write_csv()

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append one epoch's metrics, rewrite metrics.csv, send scalars to TensorBoard."""
        self.rows.append(dict(row))
        self._write_csv()
        if self._writer is not None:
            step = int(row.get("epoch", len(self.rows)))
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch" and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def draw_curves(self, metric_prefix: str = "dice_", metric_label: str = "validation Dice") -> Path | None:
        """Redraw curves.png (loss and Dice per class against epoch); None when there is nothing yet.

        Args:
            metric_prefix, metric_label: see :func:`plot_curves`.
        """
        if not self.rows:
            return None
        return plot_curves(self.rows, self.folder / CURVES_FILE, metric_prefix, metric_label)

    def close(self) -> None:
        """Detach the log file handler and close TensorBoard."""
        if self._handler is not None:
            logging.getLogger("radseg").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_csv(self) -> None:
        if not self.rows:
            return
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.folder / METRICS_FILE, buffer.getvalue())


def plot_curves(rows: list[dict[str, Any]], path: str | Path, metric_prefix: str = "dice_",
                metric_label: str = "validation Dice") -> Path:
    """Draw training loss, learning rate and validation Dice per class against epoch.

    Args:
        rows: one dict per epoch with ``epoch``, ``loss``, ``lr`` and ``dice_<class>`` entries.
        path: the PNG to write (atomically).
        metric_prefix: the right panel plots the columns starting with this (``val_`` for the
            slice branch's AUC, sensitivity and specificity).
        metric_label: the right panel's y label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r.get("loss", math.nan) for r in rows], label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [r.get("lr", math.nan) for r in rows], color="grey", linestyle=":", label="lr")
    ax_lr.set_ylabel("learning rate")
    ax_loss.legend(loc="upper right")
    dice_keys = [k for k in rows[-1] if k.startswith(metric_prefix) and k != metric_prefix + "loss"]
    for key in dice_keys:
        points = [(r["epoch"], r[key]) for r in rows if _is_number(r.get(key))]
        if points:
            ax_dice.plot(*zip(*points), marker="o", label=key[len(metric_prefix):])
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel(metric_label)
    ax_dice.set_ylim(0, 1)
    if dice_keys:
        ax_dice.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _attach_file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("radseg")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def _summary_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        logger.debug("tensorboard is not installed; no TensorBoard events")
        return None
    return SummaryWriter(log_dir=str(folder))
