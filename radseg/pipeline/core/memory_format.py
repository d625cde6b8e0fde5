"""Which memory layout a 3D network runs in: channels-last 3D where it was measured faster.

oneDNN (PyTorch's CPU convolutions) and cuDNN both have ``channels_last_3d`` kernels; whether they
beat the contiguous ones depends on the device and on the work. The training stage, its
validation, the planner's calibration and predict all ask :func:`use_channels_last`, so they agree.
:func:`plain_tensor` drops MONAI's MetaTensor wrapper from a batch before it meets the network.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

#: channels_last_3d on CPU (oneDNN), per use. Measured on 2 AVX2 cores (benchmarks/cpu_speed.py, two runs): the
#: demo's training step 1.12x faster (2.30 -> 2.06 s, 2.49 -> 2.23 s), its sliding window up to 1.31x slower.
#: So training steps run channels-last and validation switches the weights back to contiguous for its windows
#: (:func:`contiguous_weights`). On a Xeon with AMX the channels-last step was 1.21x slower (issue 24), so a plan
#: times both layouts on the machine and sets ``train.channels_last`` (:mod:`radseg.pipeline.plan.layout`);
#: this default is what a preset gets.
CPU_CHANNELS_LAST = {"train": True, "infer": False}


def use_channels_last(setting: bool, device: torch.device | str, spatial_dims: int, *, training: bool = False) -> bool:
    """Whether a 3D network runs on ``channels_last_3d`` tensors (``train.channels_last``).

    On CUDA the setting is followed for training and inference alike. On CPU (oneDNN) channels-last
    3D was measured (benchmarks/cpu_speed.py) against contiguous tensors: faster for the training
    step, slower for the sliding window, so it is used for ``training=True`` only (see
    ``CPU_CHANNELS_LAST``).
    """
    if not setting or spatial_dims != 3:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return True
    use = CPU_CHANNELS_LAST["train" if training else "infer"]
    return device.type == "cpu" and use and torch.backends.mkldnn.is_available()


@contextlib.contextmanager
def contiguous_weights(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``network`` with contiguous weights inside the block, then restore channels-last ones.

    oneDNN picks its channels-last kernels when either the input or the weight is channels-last, so
    a network trained channels-last on CPU would run its validation windows channels-last too (the
    slower choice there). The parameters stay the same objects (the optimizer's state still refers to
    them); only their memory layout changes, and back. A network without channels-last weights is
    left alone.
    """
    was_last = any(p.dim() == 5 and p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
                   for p in network.parameters())
    if not was_last:
        yield network
        return
    network.to(memory_format=torch.contiguous_format)
    try:
        yield network
    finally:
        network.to(memory_format=torch.channels_last_3d)


def plain_tensor(tensor: Any) -> torch.Tensor:
    """A MetaTensor as a plain tensor (metadata tracking slows autograd and DDP)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)
