"""The machine a plan is made for, and a short measured calibration of the training step.

A plan's iteration count comes from seconds per step measured here, on this machine, with the
network and patch the plan chose (a few real forward + backward + optimiser steps on random
data), not from a table of other machines.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from radseg.errors import ConfigError
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)

#: (widths, roi_size, patches per step, in_channels, out_channels, network=name) -> seconds per training step
StepTimer = Callable[..., float]
#: the U-Nets a plan sizes: radseg's ``unet3d`` (two convolutions at full resolution, as nnU-Net) and MONAI's
#: ``monai_unet`` (its first residual unit is strided: only the output layer runs at full resolution)
PLANNED_NETWORKS = ("unet3d", "monai_unet")
#: a CPU calibration whose process got less than this share of its threads' CPU time ran beside
#: another busy program (see :func:`_timed`)
BUSY_SHARE = 0.6


@dataclass(frozen=True)
class Machine:
    """What a plan may use: the device, CPU cores, host RAM and (for CUDA) GPU memory."""

    device: str  # "cpu" or "cuda"
    cores: int
    memory_gb: float  # host RAM available now
    gpu_memory_gb: float = 0.0
    name: str = ""

    def describe(self) -> str:
        """One line for the plan's header."""
        if self.device == "cuda":
            return f"CUDA {self.name} with {self.gpu_memory_gb:.0f} GB, {self.cores} CPU cores, {self.memory_gb:.0f} GB RAM"
        return f"CPU with {self.cores} usable cores and {self.memory_gb:.1f} GB RAM available"


def detect_machine(device: str = "auto") -> Machine:
    """This machine: usable cores, available RAM, and the first CUDA device when asked for.

    Args:
        device: "auto" (CUDA when present), "cpu" or "cuda".

    Raises:
        ConfigError: "cuda" is asked for but no CUDA device is visible.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory = _available_ram_gb()
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible on this machine; plan where you will "
                          "train, or pass --device cpu")
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Machine("cuda", cores, memory, props.total_memory / 2**30, props.name)
    return Machine("cpu", cores, memory)


def _available_ram_gb() -> float:
    """MemAvailable from /proc/meminfo (what can be used without swapping), else total RAM."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def planned_network(name: str, widths: Sequence[int], deep_supervision: bool = False):
    """The ``network`` section of a plan: one of :data:`PLANNED_NETWORKS` with ``widths`` per level.

    Raises:
        ConfigError: a network the planner does not size.
    """
    from radseg.configs.schema import NetworkConfig

    if name == "unet3d":
        return NetworkConfig(name=name, params={"widths": list(widths), "deep_supervision": deep_supervision})
    if name == "monai_unet":
        return NetworkConfig(name=name, params={"channels": list(widths), "num_res_units": 2})
    raise ConfigError(f"the planner sizes {', '.join(PLANNED_NETWORKS)}, not {name!r}")


def measure_step_seconds(widths: Sequence[int], roi_size: Sequence[int], patches: int, in_channels: int,
                         out_channels: int, *, device: str = "cpu", steps: int = 3, network: str = "unet3d",
                         batches: Iterable[dict] | None = None, channels_last: bool | None = None) -> float:
    """Seconds per training step of a planned network, the median of ``steps`` timed steps.

    A step is what training runs: forward, Dice + cross-entropy loss (``train.loss: dice_ce``),
    backward, gradient clipping and an AdamW step, in the memory layout training uses. With
    ``batches`` (dicts with ``image`` and ``label``, e.g. a real DataLoader over a preprocessed
    case) each step also waits for its batch, so the loader's workers share the machine as in
    training; without, the step runs on random tensors. Two warm-up steps are not timed (worker
    start-up, first allocations); the median ignores a step another process pre-empted.

    Args:
        widths: the U-Net's channels per level.
        roi_size: patch size (x, y, z), divisible by the network's divisor.
        patches: patches per step (batch size x samples per case).
        in_channels, out_channels: channels of the input and classes of the output.
        device: "cpu" or "cuda".
        steps: timed steps.
        network: one of :data:`PLANNED_NETWORKS`.
        batches: an iterable of batches of ``patches`` patches of ``roi_size``, or None.
        channels_last: time this layout (CPU; :mod:`radseg.pipeline.plan.layout` times both);
            None: the layout training uses by default.
    """
    from monai.losses import DiceCELoss

    from radseg.networks import build_network
    from radseg.configs.schema import TrainConfig
    from radseg.pipeline.core.memory_format import plain_tensor, use_channels_last

    name = network
    network = build_network(planned_network(name, widths), in_channels=in_channels,
                            out_channels=out_channels).to(device)
    if channels_last is None or device != "cpu":
        channels_last = use_channels_last(True, device, 3, training=True)  # the layout training will use
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=True)
    source = iter(batches) if batches is not None else None
    random_batch = None if source is not None else {
        "image": torch.randn(patches, in_channels, *roi_size),
        "label": torch.randint(0, out_channels, (patches, 1, *roi_size), dtype=torch.uint8)}
    amp = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else None

    def step(batch: dict) -> None:
        image = plain_tensor(batch["image"]).to(device).float()
        label = plain_tensor(batch["label"]).to(device)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=amp or torch.float32, enabled=amp is not None):
            output = network(image)
        loss_fn(output.float(), label).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), TrainConfig().grad_clip)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    def next_batch() -> dict:
        return next(source) if source is not None else random_batch

    times, share = _timed(step, next_batch, steps, warm_up=2)
    if device == "cpu" and share < BUSY_SHARE:
        logger.warning("calibration: this process got %.0f%% of the CPU time of its %d threads: another program may "
                       "be using the cores; timing again", 100 * share, torch.get_num_threads())
        again, share = _timed(step, next_batch, steps, warm_up=0)
        times = min(times, again, key=statistics.median)
        if share < BUSY_SHARE:
            logger.warning("calibration: the machine is still busy (%.0f%%), so the plan is sized for a busy machine "
                           "(fewer, coarser steps); plan on an idle machine for a larger model", 100 * share)
    del network, optimizer, source, random_batch
    seconds = statistics.median(times)
    logger.info("calibration: " + name + " %s, patch %s x %d%s%s: %.3f s/step", list(widths), list(roi_size), patches,
                " with data loading" if batches is not None else "", " channels-last" if channels_last else "", seconds)
    return seconds


def _timed(step: Callable[[dict], None], next_batch: Callable[[], dict], steps: int,
           warm_up: int) -> tuple[list[float], float]:
    """Wall seconds of ``steps`` steps after ``warm_up`` untimed ones, and this process's CPU share.

    The share is the process's CPU time over the wall time of its intra-op threads: near 1 when the
    step has its cores (a loader worker beside it takes a little), far below when another program
    takes them, which would make the plan too small for the machine.
    """
    times, cpu, wall = [], 0.0, 0.0
    for index in progress_bar(range(steps + warm_up), desc="calibration", unit="step", leave=False):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(next_batch())
        if index >= warm_up:
            times.append(time.perf_counter() - start)
            cpu, wall = cpu + time.process_time() - start_cpu, wall + times[-1]
    return times, cpu / max(wall * torch.get_num_threads(), 1e-9)


def measured_step_timer(device: str, data: Callable[[Sequence[int], int], Iterable[dict]] | None = None) -> StepTimer:
    """A :data:`StepTimer` that measures on ``device`` and remembers each measurement.

    Args:
        device: "cpu" or "cuda".
        data: ``data(roi_size, patches)`` gives batches of real training patches (see
            :func:`measure_step_seconds`); None times the step on random tensors.
    """
    memo: dict[tuple, float] = {}

    def timer(widths, roi_size, patches, in_channels, out_channels, network="unet3d", channels_last=None) -> float:
        if channels_last is None:  # the layout training uses by default: one memo entry for both spellings
            from radseg.pipeline.core.memory_format import use_channels_last

            channels_last = use_channels_last(True, device, 3, training=True)
        key = (tuple(widths), tuple(roi_size), patches, in_channels, out_channels, network, channels_last)
        if key not in memo:
            logger.info("calibration %d: timing %s %s on patches %s x %d%s", len(memo) + 1, network, list(widths),
                        list(roi_size), patches, " with data loading" if data is not None else "")
            batches = data(roi_size, patches) if data is not None else None
            memo[key] = measure_step_seconds(widths, roi_size, patches, in_channels, out_channels, device=device,
                                             network=network, steps=6 if data is not None else 3, batches=batches,
                                             channels_last=channels_last)
            del batches  # a DataLoader's persistent workers end with it
        return memo[key]

    return timer


def unet_gflops(widths: Sequence[int], roi_size: Sequence[int], in_channels: int, out_channels: int,
                network: str = "unet3d") -> float:
    """Forward GFLOPs of a planned network with ``widths`` on one patch (counted on the meta device)."""
    from radseg.networks import build_network, count_gflops

    network = build_network(planned_network(network, widths), in_channels=in_channels, out_channels=out_channels)
    return count_gflops(network, roi_size, in_channels)


def flops_step_timer(gflops_per_second: float) -> StepTimer:
    """A :data:`StepTimer` from counted FLOPs at an assumed rate (forward + backward = 3 forwards).

    For tests and for planning a machine one cannot measure; ``radseg plan`` measures instead.
    """
    memo: dict[tuple, float] = {}

    def timer(widths, roi_size, patches, in_channels, out_channels, network="unet3d", channels_last=None) -> float:
        key = (tuple(widths), tuple(roi_size), in_channels, out_channels, network)  # FLOPs: the same in any layout
        if key not in memo:
            memo[key] = unet_gflops(widths, roi_size, in_channels, out_channels, network)
        return 3 * patches * memo[key] / gflops_per_second

    return timer


def training_memory_gb(widths: Sequence[int], roi_size: Sequence[int], patches: int, bytes_per_value: int = 4,
                       network: str = "unet3d") -> float:
    """Estimated activation memory of a planned network's training step (GB), with a 1.5x margin.

    Each level keeps about 11 tensors of its width for the backward pass (two conv-norm-act
    stages in the encoder and decoder, the upsampled tensor and the concatenation); ``monai_unet``'s
    levels sit one halving lower (its first unit is strided), plus a few full-resolution tensors.
    """
    voxels = 1
    for size in roi_size:
        voxels *= size
    first = 1 if network == "monai_unet" else 0
    values = sum(11 * width * voxels / 8 ** (level + first) for level, width in enumerate(widths))
    values += 4 * widths[0] * voxels * first
    return 1.5 * values * patches * bytes_per_value / 2**30
