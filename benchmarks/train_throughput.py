"""Training throughput with the RAM cache, the disk cache and no cache: one table from one run.

For each cache mode (``none``, ``disk``, ``ram``) this runs real training steps (forward, Dice+CE
loss, backward, AdamW step, as :mod:`radseg.pipeline.train.loop` does) on a generated phantom
dataset and times every step in two parts:

* **data wait**: time blocked in ``next(loader_iterator)``, including the loader's worker start-up
  at the top of each epoch (radseg's ``fit`` builds a fresh loader every epoch, and so does this);
* **compute**: forward + loss + backward + optimiser step (CUDA is synchronised before the clock
  stops).

The table gives, per mode: the RAM cache fill time (``CacheDataset`` construction; the disk cache
fills itself during epoch 1), the data wait of the first and the last epoch ("load s"), their ratio
(for ``disk`` this is the epoch-2-reads-the-cache speed-up), patches/s and the data-wait share of
step time in the last (steady-state) epoch, and whether a cached mode meets the target: data wait
under 10% of step time.

Threads: the training step gets every usable core (``--threads``, default ``len(sched_getaffinity)``).
PyTorch limits each DataLoader worker to one thread, and with a cache the workers only crop and
augment, so they are idle most of the time; without a cache they preprocess whole volumes and
compete with the step for the same cores, which is the cost this benchmark exists to show. Giving
the step ``cores - workers`` threads (0 or 1 on 2 cores) would instead slow every mode's compute.

Usage (about 3 minutes with the defaults on 2 CPU cores)::

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --cases 16 --iterations 20 --network unet3d --widths 16,32,64,128
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import monai
import torch

from radseg import keys
from radseg.configs.loader import load_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import RadsegError
from radseg.networks import build_network
from radseg.pipeline.data.cache import build_dataset, build_loader
from radseg.pipeline.data.datalist import discover_dataset, to_datalist
from radseg.pipeline.train.losses import build_loss
from radseg.pipeline.data.phantom import write_phantom_dataset
from radseg.pipeline.train.schedule import build_optimizer
from radseg.pipeline.train.loop import cycle_batches
from radseg.transforms.fingerprint import compute_fingerprint, resolve_preprocess
from radseg.transforms.preprocess import build_train_transforms

logger = logging.getLogger("train_throughput")

MODES = ("none", "disk", "ram")
CACHED_MODES = ("disk", "ram")
#: the issue's target: with a cache, data wait under 10% of step time
TARGET_WAIT_SHARE = 0.10


@dataclass
class EpochTiming:
    """Per-step sums over one epoch (seconds)."""

    steps: int = 0
    patches: int = 0
    data_wait: float = 0.0
    compute: float = 0.0
    #: the wait for the first batch: worker start-up plus one batch made while nothing overlaps it
    first_wait: float = 0.0

    @property
    def step_time(self) -> float:
        """Wall time of the epoch's steps: waiting plus computing."""
        return self.data_wait + self.compute

    @property
    def wait_share(self) -> float:
        """Fraction of step time spent waiting for data."""
        return self.data_wait / self.step_time if self.step_time > 0 else 0.0

    @property
    def patches_per_second(self) -> float:
        """Training patches through the network per second of step time."""
        return self.patches / self.step_time if self.step_time > 0 else 0.0


@dataclass
class ModeResult:
    """Timings of one cache mode."""

    mode: str
    fill_seconds: float | None
    cached_cases: int | None
    num_cases: int
    epochs: list[EpochTiming] = field(default_factory=list)


@dataclass
class BenchData:
    """The generated dataset and what every mode shares."""

    cfg: RadsegConfig
    datalist: list[dict]
    settings: dict[str, Any]
    resolved: Any
    num_classes: int
    in_channels: int
    cache_dir: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8, help="phantom training cases (default 8)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per mode, >= 2: the first fills the disk cache, the last is reported")
    parser.add_argument("--iterations", type=int, default=0,
                        help="steps per epoch; 0 (default) = one pass over the cases")
    parser.add_argument("--roi-size", type=_sizes, default=[64, 64, 32], help="patch x,y,z (default 64,64,32)")
    parser.add_argument("--batch-size", type=int, default=2, help="cases per batch (default 2)")
    parser.add_argument("--num-samples", type=int, default=2, help="patches per case (default 2)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--network", default="unet3d", help="registered network name (default unet3d)")
    parser.add_argument("--widths", type=_sizes, default=[8, 16, 32, 64],
                        help="unet3d widths (default 8,16,32,64; ignored for other networks)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides on the demo preset, e.g. train.loss=dice")
    parser.add_argument("--modes", type=lambda text: text.split(","), default=list(MODES),
                        help="comma-separated cache modes (default none,disk,ram)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the step; 0 = usable cores")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for data and cache (default: temp)")
    parser.add_argument("--seed", type=int, default=0, help="phantom, shuffling and init seed (default 0)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (epoch 1 fills the disk cache, later ones read it), not {args.epochs}")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"--modes must be among {', '.join(MODES)}, not {', '.join(unknown)}")
    return args


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_config(args: argparse.Namespace) -> RadsegConfig:
    """The demo preset with this run's patch, batch, network, workers and seed."""
    overrides = [
        f"network.name={args.network}",
        f"train.roi_size={args.roi_size}",
        f"train.batch_size={args.batch_size}",
        f"train.seed={args.seed}",
        f"augment.num_samples={args.num_samples}",
        f"cache.num_workers={args.num_workers}",
    ]
    if args.network == "unet3d":
        overrides.append(f"network.params.widths={args.widths}")
    return load_config("demo", overrides + list(args.overrides))


def prepare_data(args: argparse.Namespace, workdir: Path) -> BenchData:
    """Write the phantom, fingerprint it and resolve the preprocessing (shared by every mode)."""
    cfg = make_config(args)
    start = time.perf_counter()
    root = write_phantom_dataset(workdir / "phantom", num_cases=args.cases, seed=args.seed,
                                 num_test=0, overwrite=True)
    spec = discover_dataset(root)
    datalist = to_datalist(spec.training)
    modality = spec.modality if cfg.data.modality == "auto" else cfg.data.modality
    fingerprint = compute_fingerprint(datalist, modality, seed=args.seed, progress=False)
    resolved = resolve_preprocess(cfg.preprocess, fingerprint, modality)
    logger.info("phantom of %d cases written and fingerprinted in %.1f s; target spacing %s",
                len(datalist), time.perf_counter() - start, resolved.target_spacing)
    settings = {**resolved.to_dict(), "image_dtype": cfg.cache.image_dtype}
    return BenchData(cfg, datalist, settings, resolved, spec.num_classes, len(spec.channel_names),
                     workdir / "disk-cache")


def _training_parts(data: BenchData, device: torch.device, seed: int):
    """A freshly initialised network (same seed in every mode), its loss and its optimiser."""
    torch.manual_seed(seed)
    network = build_network(data.cfg.network, in_channels=data.in_channels, out_channels=data.num_classes,
                            roi_size=data.cfg.train.roi_size).to(device)
    network.train()
    loss_fn = build_loss(data.cfg.train, data.num_classes, deep_supervision=getattr(network, "deep_supervision", False))
    return network, loss_fn, build_optimizer(data.cfg.train, network.parameters())


def _plain(tensor: Any) -> torch.Tensor:
    """A MetaTensor as a plain tensor (metadata tracking slows autograd)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def train_step(network, loss_fn, optimizer, batch: dict, device: torch.device, grad_clip: float | None) -> int:
    """One optimiser step on a batch ``{IMAGE: (B, C, X, Y, Z), LABEL: (B, 1, X, Y, Z)}``.

    Returns:
        The number of patches (B) trained on.
    """
    image = _plain(batch[keys.IMAGE]).to(device).float()
    label = _plain(batch[keys.LABEL]).to(device)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(network(image), label)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return int(image.shape[0])


def timed_epoch(batches: Iterable[dict], step) -> EpochTiming:
    """Run ``step(batch)`` over ``batches``, timing the wait for each batch and the step itself.

    Args:
        batches: a DataLoader (its ``iter()``, which starts the workers, counts as data wait) or a
            generator over one.
        step: ``batch -> number of patches``.
    """
    timing = EpochTiming()
    waiting_since = time.perf_counter()
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return timing
        ready = time.perf_counter()
        patches = step(batch)
        done = time.perf_counter()
        if timing.steps == 0:
            timing.first_wait = ready - waiting_since
        timing.steps, timing.patches = timing.steps + 1, timing.patches + patches
        timing.data_wait += ready - waiting_since
        timing.compute += done - ready
        waiting_since = done


def _build_mode_dataset(data: BenchData, mode: str):
    """The dataset of one mode and its fill time (RAM only: the disk cache fills during epoch 1)."""
    if mode == "disk":
        shutil.rmtree(data.cache_dir, ignore_errors=True)  # epoch 1 must really fill it
    transform = build_train_transforms(data.cfg, data.resolved, data.num_classes)
    start = time.perf_counter()
    cache_cfg = dataclasses.replace(data.cfg.cache, mode=mode, cache_dir=str(data.cache_dir))
    dataset = build_dataset(data.datalist, transform, cache_cfg, settings=data.settings, progress=False)
    fill = time.perf_counter() - start
    if mode != "ram":
        return dataset, None, None
    cached = int(getattr(dataset, "cache_num", len(data.datalist)))
    if cached < len(data.datalist):
        logger.warning("the RAM cache holds only %d of %d cases (cache.ram_budget_gb=%g); the rest load "
                       "every epoch", cached, len(data.datalist), data.cfg.cache.ram_budget_gb)
    return dataset, fill, cached


def run_mode(data: BenchData, mode: str, args: argparse.Namespace, device: torch.device) -> ModeResult:
    """Build one mode's dataset, then train ``args.epochs`` timed epochs from a fresh network."""
    logger.info("mode %s: building the dataset", mode)
    dataset, fill, cached = _build_mode_dataset(data, mode)
    result = ModeResult(mode, fill, cached, len(data.datalist))
    network, loss_fn, optimizer = _training_parts(data, device, args.seed)
    grad_clip = data.cfg.train.grad_clip

    def step(batch: dict) -> int:
        return train_step(network, loss_fn, optimizer, batch, device, grad_clip)

    for epoch in range(args.epochs):
        # same shuffling and augmentation seeds in every mode: the modes see the same patches
        loader = build_loader(dataset, args.batch_size, args.num_workers, shuffle=True, seed=args.seed + epoch)
        batches = cycle_batches(loader, args.iterations) if args.iterations > 0 else loader
        timing = timed_epoch(batches, step)
        del batches, loader  # ends this epoch's workers, as fit does
        result.epochs.append(timing)
        logger.info("mode %s epoch %d: %d steps, %d patches, data wait %.2f s (first batch %.2f s), "
                    "compute %.2f s (%.0f%% wait)", mode, epoch + 1, timing.steps, timing.patches,
                    timing.data_wait, timing.first_wait, timing.compute, 100 * timing.wait_share)
    return result


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(result: ModeResult) -> list[str]:
    first, last = result.epochs[0], result.epochs[-1]
    ratio = last.data_wait / first.data_wait if first.data_wait > 0 else float("nan")
    if result.mode in CACHED_MODES:
        target = "met" if last.wait_share < TARGET_WAIT_SHARE else "NOT met"
    else:
        target = "-"
    return [result.mode, _seconds(result.fill_seconds), _seconds(first.data_wait), _seconds(last.data_wait),
            f"{ratio:.3f}", f"{last.patches_per_second:.2f}", f"{100 * last.wait_share:.1f}", target]


def format_table(results: list[ModeResult], args: argparse.Namespace, threads: int) -> str:
    """The plain-text report: one row per mode, then how the numbers were taken."""
    last = args.epochs
    header = ["mode", "cache fill s", "epoch1 load s", f"epoch{last} load s", f"e{last}/e1 load",
              "patches/s", "data wait %", f"wait<{TARGET_WAIT_SHARE:.0%}"]
    rows = [header] + [_row(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += _footnotes(results, args, threads)
    return "\n".join(lines)


def _footnotes(results: list[ModeResult], args: argparse.Namespace, threads: int) -> list[str]:
    steps = results[0].epochs[-1].steps if results else 0
    notes = [
        "",
        f"load s = time blocked in next(loader) over the epoch (worker start-up included); patches/s and "
        f"data wait % are from epoch {args.epochs} ({steps} steps of up to "
        f"{args.batch_size} cases x {args.num_samples} patches); cache fill = CacheDataset construction "
        "(ram); the disk cache fills during epoch 1. Loading that overlaps the step is not counted as "
        "load time but slows the step when workers and step share the cores (see patches/s).",
        f"cases {args.cases}, roi_size {args.roi_size}, network {args.network}"
        + (f" widths {args.widths}" if args.network == "unet3d" else "")
        + f", device {args.device}, workers {args.num_workers}, seed {args.seed}",
        f"torch threads {threads} (step) + 1 per worker, usable cores {usable_cores()}; torch {torch.__version__}, "
        f"monai {monai.__version__}, python {platform.python_version()}, {platform.machine()}",
    ]
    cached = [r for r in results if r.mode in CACHED_MODES]
    if cached:
        verdicts = ", ".join(f"{r.mode} {'met' if r.epochs[-1].wait_share < TARGET_WAIT_SHARE else 'NOT met'}"
                             for r in cached)
        notes.append(f"target (with a cache, data wait < {TARGET_WAIT_SHARE:.0%} of step time on 2 cores; "
                     f"measured on {usable_cores()}): {verdicts}")
    for result in results:
        if result.cached_cases is not None and result.cached_cases < result.num_cases:
            notes.append(f"note: the RAM cache held {result.cached_cases} of {result.num_cases} cases")
    return notes


def _configure_threads(requested: int) -> int:
    """Give the training step every usable core unless told otherwise (see the module docstring)."""
    threads = requested if requested > 0 else usable_cores()
    torch.set_num_threads(threads)
    return threads


def main(argv: list[str] | None = None) -> int:
    """Run every requested mode and print the table; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    threads = _configure_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radseg-throughput-"))
    try:
        data = prepare_data(args, workdir)
        results = [run_mode(data, mode, args, torch.device(args.device)) for mode in args.modes]
    except RadsegError as err:  # a bad --set or --network: one line, as the CLI does
        raise SystemExit(f"error: {err}") from err
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(results, args, threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
