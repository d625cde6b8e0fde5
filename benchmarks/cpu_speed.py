"""How close do the demo's training step and sliding window come to this CPU's convolution peak?

One run, one table. Every row runs in a fresh child process (the allocator setting only takes
effect at process start), with the demo preset's network (``unet3d``, widths 16-128):

- **conv3d peak**: the best of a few 3x3x3 ``Conv3d`` layers (32-128 channels, batch 4 of 32^3),
  forward only, fp32 / fp32 channels-last / bf16 (GFLOP/s = 2 * multiply-adds / second);
- **train step**: ``train_one_epoch`` (forward, Dice+CE, backward, AdamW) on batch 4 of 64x64x32
  random patches; FLOPs of forward + backward counted by PyTorch's FlopCounterMode (the counter
  ``radseg.networks.count_gflops`` uses) on the ``meta`` device;
- **window**: ``sliding_window_predict`` over a 160x160x96 volume with the demo's inference
  settings; FLOPs = windows run x ``count_gflops`` of one window.

Each is given in s, GFLOP/s, % of the matching conv peak (fp32 contiguous, fp32 channels-last or
bf16), system time as % of wall time, and minor page faults, per step / per volume. ``--demo``
also times the whole ``radseg demo`` with the allocator off and on (about 16 minutes).

    python benchmarks/cpu_speed.py                 # about 8 minutes on 2 CPU cores
    python benchmarks/cpu_speed.py --demo          # + the demo twice
    python benchmarks/cpu_speed.py --demo --bf16   # bf16 against float32 training: held-out Dice over seeds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROI, BATCH, CLASSES, VOLUME = (64, 64, 32), 4, 3, (160, 160, 96)

# (label, environment changes, child flags); the allocator comparison first, then the kernels
VARIANTS = [
    ("before: glibc defaults", {"RADSEG_ALLOCATOR": "off"}, []),
    ("mallopt in-process (32 MiB cap)", {"RADSEG_ALLOCATOR": "off"}, ["--mallopt"]),
    ("mimalloc (LD_PRELOAD)", {"RADSEG_ALLOCATOR": "off", "LD_PRELOAD": "{mimalloc}"}, []),
    ("radseg: GLIBC_TUNABLES", {}, []),
    ("radseg + channels-last (both)", {}, ["--channels-last"]),
    ("radseg now: CL step, plain window", {}, ["--channels-last-train"]),
    ("radseg + bf16 autocast", {}, ["--bf16"]),
]


# ----------------------------------------------------------------------------- child side
def _usage() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def _timed(work, repeats: int) -> dict:
    """Wall s, system % and minor faults per repeat of ``work()``."""
    _, sys0, faults0 = _usage()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    wall = (time.perf_counter() - start) / repeats
    _, sys1, faults1 = _usage()
    return {"s": wall, "sys_pct": 100 * (sys1 - sys0) / repeats / wall, "faults": (faults1 - faults0) / repeats}


def native_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic (AVX512-BF16 or AMX); without it bf16 is emulated, slowly."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _conv_peak(repeats: int) -> dict:
    import torch

    results = {}
    for kind in ("fp32", "channels-last", "bf16"):
        emulated = kind == "bf16" and not native_bf16()  # ~300x slower here: one small layer is enough to show it
        best, size = 0.0, 16 if emulated else 32
        for channels in (32,) if emulated else (32, 64, 128):
            conv = torch.nn.Conv3d(channels, channels, 3, padding=1)
            x = torch.randn(BATCH, channels, size, size, size)
            if kind == "channels-last":
                conv, x = conv.to(memory_format=torch.channels_last_3d), x.contiguous(memory_format=torch.channels_last_3d)
            if kind == "bf16":
                conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
            flops = 2 * channels * channels * 27 * x.numel() / channels
            with torch.inference_mode():
                conv(x)
                seconds = _timed(lambda: conv(x), 1 if emulated else repeats)["s"]
            best = max(best, flops / seconds / 1e9)
        results[kind] = best
    results["native_bf16"] = native_bf16()
    return results


def _demo_network(channels_last: bool):
    import torch

    from radseg.configs import load_config
    from radseg.networks import build_network

    cfg = load_config("demo")
    torch.manual_seed(0)
    network = build_network(cfg.network, in_channels=1, out_channels=CLASSES)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    return cfg, network


def _train_gflops(network) -> float:
    """Forward + backward GFLOPs of one training step, counted on the meta device."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(network).to("meta").train()
    x = torch.zeros(BATCH, 1, *ROI, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 1e9


def _train_step(args) -> dict:
    import torch

    from radseg import keys
    from radseg.pipeline.train.loop import train_one_epoch
    from radseg.pipeline.train.losses import build_loss
    from radseg.pipeline.train.schedule import build_optimizer

    channels_last = args.channels_last or args.channels_last_train
    cfg, network = _demo_network(channels_last)
    gflops = _train_gflops(network)
    optimizer = build_optimizer(cfg.train, network.parameters())
    loss_fn = build_loss(cfg.train, CLASSES)
    generator = torch.Generator().manual_seed(0)
    batch = {keys.IMAGE: torch.randn(BATCH, 1, *ROI, generator=generator),
             keys.LABEL: torch.randint(0, CLASSES, (BATCH, 1, *ROI), generator=generator)}
    amp = torch.bfloat16 if args.bf16 else None

    def run(steps: int) -> None:
        train_one_epoch(network, [batch] * steps, loss_fn, optimizer, cfg.train, start_iteration=0,
                        device=torch.device("cpu"), amp=amp, channels_last=channels_last, progress=False)

    run(2)  # warm-up: oneDNN primitives, allocator pools
    result = _timed(lambda: run(1), args.steps)
    return {**result, "gflops": gflops / result["s"]}


class _CountingNetwork:
    """Counts the windows a network is called on."""

    def __init__(self, network) -> None:
        self.network, self.windows = network, 0

    def __call__(self, patch):
        self.windows += patch.shape[0]
        return self.network(patch)


def _window_pass(args) -> dict:
    import torch

    from radseg.networks import count_gflops
    from radseg.pipeline.predict.inference import sliding_window_predict

    cfg, network = _demo_network(args.channels_last)
    network.eval()
    per_window = count_gflops(network, ROI)
    counting = _CountingNetwork(network)
    volume = torch.randn(1, 1, *VOLUME, generator=torch.Generator().manual_seed(0))
    amp = torch.bfloat16 if args.bf16 else None
    run = lambda: sliding_window_predict(counting, volume, cfg.inference, cfg.train.roi_size,  # noqa: E731
                                         device="cpu", amp=amp, channels_last=args.channels_last)
    run()
    counting.windows = 0
    result = _timed(run, args.windows)
    return {**result, "gflops": per_window * counting.windows / args.windows / result["s"]}


def _fed_steps(args) -> dict:
    """Training steps fed by a real DataLoader (the demo's patch sampling and augmentation)."""
    import torch
    from monai.data import Dataset

    from radseg import keys
    from radseg.pipeline.data.cache import build_loader
    from radseg.pipeline.train.loop import cycle_batches, train_one_epoch
    from radseg.pipeline.train.losses import build_loss
    from radseg.pipeline.train.schedule import build_optimizer
    from radseg.transforms.preprocess import build_augment_transforms

    cfg, network = _demo_network(args.channels_last)
    generator = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in VOLUME], indexing="ij")).norm(dim=0)
    cases = [{keys.IMAGE: torch.randn(1, *VOLUME, generator=generator),
              keys.LABEL: ((grid < 0.5).long() + (grid < 0.2).long()).unsqueeze(0)} for _ in range(4)]
    dataset = Dataset(cases, build_augment_transforms(cfg.augment, cfg.train.roi_size, CLASSES))
    loader = build_loader(dataset, cfg.train.batch_size, args.workers, True, 0)
    optimizer = build_optimizer(cfg.train, network.parameters())
    batches = cycle_batches(loader, args.steps + 2)
    epoch = lambda count: train_one_epoch(  # noqa: E731
        network, (next(batches) for _ in range(count)), build_loss(cfg.train, CLASSES), optimizer, cfg.train,
        start_iteration=0, device=torch.device("cpu"), channels_last=args.channels_last, progress=False)
    epoch(2)  # workers started, warm
    start = time.perf_counter()
    metrics = epoch(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    return {"s": wall, "wait_pct": 100 * metrics["data_time"] / metrics["epoch_time"]}


def _child(args) -> None:
    if args.mallopt:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD, glibc's cap for mallopt
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    import torch

    torch.set_num_threads(args.threads or os.cpu_count())
    if args.child == "peak":
        out = _conv_peak(args.steps)
    elif args.child == "fed":
        out = _fed_steps(args)
    else:
        out = {"train": _train_step(args), "window": _window_pass(args)}
    from radseg.allocator import describe_allocator

    out["allocator"] = describe_allocator()
    print(json.dumps(out))


# ----------------------------------------------------------------------------- parent side
def _run_child(kind: str, env_changes: dict, flags: list, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update({k: v.format(mimalloc=args.mimalloc or "") for k, v in env_changes.items()})
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--steps", str(args.steps),
               "--windows", str(args.windows), "--threads", str(args.threads), *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {kind} {flags} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_for(flags: list, peaks: dict, part: str) -> float:
    """The conv peak matching a variant's kernels for one part (``train`` or ``window``)."""
    last = "--channels-last" in flags or ("--channels-last-train" in flags and part == "train")
    return peaks["bf16" if "--bf16" in flags else "channels-last" if last else "fp32"]


def _row(label: str, part: dict, peak: float, base: dict) -> str:
    speedup = base["s"] / part["s"]
    return (f"{label:<34} {part['s']:>8.3f} {speedup:>6.2f}x {part['gflops']:>8.1f} {100 * part['gflops'] / peak:>6.1f}%"
            f" {part['sys_pct']:>6.1f}% {part['faults'] / 1e3:>10.1f}")


_DEMO_BEFORE = ("import sys; from radseg.pipeline.train.demo import run_demo; "
                "print(run_demo(sys.argv[1], overrides=('train.channels_last=false',)))")


def _demo_rows(args) -> list[str]:
    """The whole demo as it was (allocator off, float32 contiguous) and as ``radseg demo`` is now."""
    rows, base = [], None
    runs = (("demo before (defaults off)", "off", ["-c", _DEMO_BEFORE]), ("demo now (radseg demo)", "on", ["-m", "radseg", "demo", "--output"]))
    for label, switch, command in runs:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, PYTHONPATH=str(ROOT), RADSEG_ALLOCATOR=switch)
            before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            done = subprocess.run([sys.executable, *command, tmp], env=env, capture_output=True, text=True, check=False)
            wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise SystemExit(f"demo failed:\n{done.stderr[-3000:]}")
            train = _demo_train_seconds(Path(tmp) / "run" / "metrics.csv")
            base = base or train
            rows.append(f"{label:<28} 200 it {train:6.1f} s ({base / train:4.2f}x)  wall {wall:6.1f} s  user "
                        f"{after.ru_utime - before.ru_utime:6.1f} s  sys {after.ru_stime - before.ru_stime:5.1f} s  "
                        f"faults {(after.ru_minflt - before.ru_minflt) / 1e6:5.1f} M")
            rows.extend(f"    {line.strip()}" for line in done.stdout.splitlines() if "Dice" in line or "mean" in line)
    return rows


def _demo_train_seconds(metrics: Path) -> float:
    """Seconds of training steps (``epoch_time`` summed; validation excluded) from a run's metrics.csv."""
    import csv

    with metrics.open() as handle:
        return sum(float(row["epoch_time"]) for row in csv.DictReader(handle))


def _thread_rows(args) -> list[str]:
    """Steps fed by DataLoader workers: intra-op threads of the step vs workers (1 thread each)."""
    cores = os.cpu_count() or 1
    choices = [(cores, 0), (cores, 1), (max(1, cores - 1), 1), (cores, 2)]
    lines = [f"train step fed by a DataLoader (demo augmentation), {cores} cores",
             f"{'intra-op threads, workers':<34} {'s':>8} {'vs 1st':>7} {'data wait':>10}"]
    base = None
    for threads, workers in choices:
        flags = ["--workers", str(workers)]
        out = _run_child("fed", {}, flags, argparse.Namespace(**{**vars(args), "threads": threads}))
        base = base or out["s"]
        lines.append(f"{f'{threads} threads, {workers} workers':<34} {out['s']:>8.3f} {base / out['s']:>6.2f}x"
                     f" {out['wait_pct']:>9.1f}%")
    return lines + [""]


def _parent(args) -> None:
    if args.bf16 and (args.demo or args.demo_only):  # the held-out check of bf16 training (bf16_training.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bf16_training import bf16_rows

        print("\n".join(bf16_rows(args.seeds)))
        return
    if args.demo_only:
        print("\n".join(_demo_rows(args)))
        return
    peaks = _run_child("peak", {}, [], args)
    header = f"{'change':<34} {'s':>8} {'vs 1st':>7} {'GFLOP/s':>8} {'%peak':>7} {'sys%':>7} {'kfaults':>10}"
    lines = [f"conv3d peak (GFLOP/s, {args.threads or os.cpu_count()} threads): fp32 {peaks['fp32']:.1f}, "
             f"fp32 channels-last {peaks['channels-last']:.1f}, bf16 {peaks['bf16']:.1f}", ""]
    results = []
    skipped = []
    for label, env_changes, flags in VARIANTS:
        if ("{mimalloc}" in str(env_changes) and not args.mimalloc) or ("--bf16" in flags and not peaks["native_bf16"]):
            skipped.append(label)
            continue
        results.append((label, flags, _run_child("step", env_changes, flags, args)))
    for part, title in (("train", f"train step, batch {BATCH} x {ROI}"), ("window", f"sliding window, {VOLUME}")):
        lines += [f"{title}: per step / per volume", header]
        base = results[0][2][part]
        lines += [_row(label, out[part], _peak_for(flags, peaks, part), base) for label, flags, out in results]
        lines.append("")
    lines += _thread_rows(args)
    lines += [f"allocator ({label}): {out['allocator']}" for label, _, out in results]
    lines += [f"not run: {label} (no --mimalloc path, or bf16 without native CPU support: "
              f"bf16 conv peak {peaks['bf16']:.1f} vs fp32 {peaks['fp32']:.1f} GFLOP/s)" for label in skipped]
    if args.demo:
        lines += [""] + _demo_rows(args)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (and conv repeats)")
    parser.add_argument("--windows", type=int, default=2, help="timed sliding-window passes")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: every core)")
    parser.add_argument("--mimalloc", default=os.environ.get("MIMALLOC_PATH", ""),
                        help="path of libmimalloc.so to compare (e.g. from the cmeel-mimalloc wheel)")
    parser.add_argument("--demo", action="store_true", help="also time the whole demo, allocator off and on")
    parser.add_argument("--demo-only", action="store_true", help="time only the whole demo, allocator off and on")
    parser.add_argument("--child", choices=["peak", "step", "fed"], help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channels-last-train", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true",
                        help="with --demo: train the demo in float32 and in bf16 over --seeds and compare held-out Dice")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for --demo --bf16 (default 3)")
    parser.add_argument("--mallopt", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from radseg.allocator import ensure_allocator

        ensure_allocator()  # what every radseg entry point does (a no-op with RADSEG_ALLOCATOR=off)
        _child(args)
    else:
        _parent(args)


if __name__ == "__main__":
    main()
