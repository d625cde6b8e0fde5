"""One validation pass: whole volumes through the shared sliding-window predictor, scored per class.

Returns per-class Dice sums and counts, which sum correctly across DDP ranks. Training calls it
every ``train.val_interval`` epochs; :func:`radseg.pipeline.evaluate.checkpoint_eval.evaluate_checkpoint`
calls it on held-out cases.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from radseg import keys
from radseg.configs.schema import InferenceConfig
from radseg.pipeline.evaluate.metrics import dice_per_class
from radseg.pipeline.core.memory_format import plain_tensor
from radseg.pipeline.predict.inference import sliding_window_predict
from radseg.progress import progress_bar


def validate(
    network: torch.nn.Module,
    cases: Iterable[dict],
    inference_cfg: InferenceConfig,
    roi_size: list[int],
    num_classes: int,
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    progress: bool = True,
    mirror_axes: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[float]]]:
    """Predict each whole validation volume and score it.

    Args:
        network: the bare model (not DDP-wrapped: ranks validate different numbers of cases).
        cases: batches of one case each: ``image`` ``(1, C, X, Y, Z)``, ``label`` ``(1, 1, X, Y, Z)``.
        inference_cfg: sliding-window settings (the same ones inference uses).
        roi_size: the window when ``inference_cfg.roi_size`` is None.
        num_classes: classes including background.
        device: where the windows run.
        amp: autocast dtype or None.
        progress: show a tqdm bar over cases.
        mirror_axes: the axes ``inference_cfg.mirror`` mirrors: those flipped in training
            (:func:`radseg.pipeline.predict.mirroring.trained_mirror_axes`); None mirrors all.

    Returns:
        ``(dice_sum, dice_count, per_case)``: per-class sums and counts of scored cases
        (``(num_classes - 1,)`` float64, to be summed across ranks), and each case's scores.
    """
    was_training = network.training
    network.eval()
    dice_sum = torch.zeros(num_classes - 1, dtype=torch.float64)
    dice_count = torch.zeros(num_classes - 1, dtype=torch.float64)
    per_case: dict[str, list[float]] = {}
    for index, batch in enumerate(progress_bar(cases, desc="validate", unit="case", leave=False, disable=not progress)):
        # the whole volume and its blended logits stay in host memory; only windows visit the device
        image = plain_tensor(batch[keys.IMAGE]).float()
        logits = sliding_window_predict(network, image, inference_cfg, roi_size, device=device, amp=amp,
                                        output_device="cpu", mirror_axes=mirror_axes)
        pred = logits.argmax(dim=1).cpu()
        label = plain_tensor(batch[keys.LABEL])[:, 0].cpu().long()
        scores = dice_per_class(pred, label, num_classes)
        scored = ~torch.isnan(scores)
        dice_sum[scored] += scores[scored]
        dice_count += scored.double()
        per_case[_case_id(batch, index)] = scores.tolist()
    network.train(was_training)
    return dice_sum, dice_count, per_case


def _case_id(batch: dict, index: int) -> str:
    value = batch.get(keys.CASE_ID, index)
    return str(value[0] if isinstance(value, (list, tuple)) else value)
