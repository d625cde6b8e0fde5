"""Each way ``radseg predict --runtime`` can run the network, on this machine: one table.

The network of the issue's table: MONAI's spleen-tutorial UNet (channels 16-256, 2 residual units,
batch norm, 3 classes, seeded random weights, background logit +0.3, as in infer_speed.py), on a
batch of windows (default 2 of 96³) cut from a synthetic CT (a body with organs and noise, HU
window -57..164). Every candidate of :func:`radseg.pipeline.predict.runtime.candidates` (torch
eager float32 contiguous and channels-last; bf16 autocast with either layout where the CPU has
native bf16; onnxruntime and OpenVINO when installed), built by the same code predict uses, gets
one warm-up and ``--repeats`` timed runs (the median counts). Columns: seconds per batch, speed-up
against torch eager fp32, the largest absolute logit difference from it, the share of voxels
whose argmax agrees, the least per-class Dice of the argmax, and whether ``auto`` would keep it
(Dice at least 0.999 for fp32, 0.995 for bf16).

Usage (about 2 minutes on 2 CPU cores)::

    python benchmarks/runtime_speed.py
    python benchmarks/runtime_speed.py --batch 4 --repeats 3 --all   # --all: bf16 too where emulated
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def windows(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """``batch`` windows of a synthetic CT through the -57..164 HU window, ``(batch, 1, size, size, size)``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    out = []
    for k in range(batch):
        shift = rng.uniform(-0.3, 0.3, size=3)[:, None, None, None]
        x, y, z = grid + shift
        hu = np.where((x / 0.9) ** 2 + (y / 0.7) ** 2 < 1, 30.0, -1000.0)
        hu[((x + 0.3) / 0.35) ** 2 + (y / 0.3) ** 2 + (z / 0.5) ** 2 < 1] = 60.0
        hu[((x - 0.4) / 0.15) ** 2 + (y / 0.2) ** 2 < 1] = 50.0
        hu[(x / 0.1) ** 2 + ((y - 0.5) / 0.1) ** 2 < 1] = 400.0
        hu += rng.normal(0, 15, size=hu.shape)
        out.append(np.clip((hu + 57.0) / 221.0, 0, 1)[None])
    return torch.from_numpy(np.stack(out).astype(np.float32))


def _model(size: int, batch: int):
    from infer_speed import _network

    from radseg.configs.loader import load_config
    from radseg.pipeline.predict.model import PredictModel

    cfg = load_config("demo", [f"train.roi_size={[size] * 3}", f"inference.sw_batch_size={batch}"])
    return PredictModel(network=_network(), cfg=cfg, preprocess=None, label_names={0: "bg", 1: "a", 2: "b"},
                        in_channels=1, num_classes=3, device=torch.device("cpu"), amp=None, source="benchmark")


def measure(candidate, model, batch: torch.Tensor, repeats: int, onnx_file) -> dict:
    """One candidate: built by predict's own code, warmed up, timed; its logits kept for the comparison."""
    from radseg.pipeline.predict.runtime_backends import build_forward

    start = time.perf_counter()
    try:
        forward = build_forward(candidate, model, onnx_file)
        with torch.inference_mode():
            logits = forward(batch)
            build = time.perf_counter() - start
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                forward(batch)
                times.append(time.perf_counter() - start)
    except Exception as err:  # a runtime that cannot run this network: a row that says so
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}"}
    return {"seconds": statistics.median(times), "first": build, "logits": logits}


def table(rows: list[tuple[str, dict]], reference: torch.Tensor) -> str:
    from radseg.pipeline.predict.runtime import MIN_DICE, class_dice

    head = (f"{'runtime':<28}{'s/batch':>9}{'speed-up':>10}{'first s':>9}{'max|diff|':>11}{'argmax %':>10}"
            f"{'min Dice':>10}{'auto keeps':>12}")
    lines = [head, "-" * len(head)]
    base = dict(rows)["torch-fp32"]["seconds"]
    for name, r in rows:
        if "error" in r:
            lines.append(f"{name:<28}failed: {r['error']}")
            continue
        logits = r["logits"]
        diff = float((logits - reference).abs().max())
        agree = 100.0 * float((logits.argmax(1) == reference.argmax(1)).float().mean())
        dice = class_dice(reference, logits)
        keeps = "yes" if dice >= MIN_DICE[name.split("-")[1]] else "no"
        lines.append(f"{name:<28}{r['seconds']:>9.3f}{base / r['seconds']:>9.2f}x{r['first']:>9.2f}{diff:>11.2e}"
                     f"{agree:>10.3f}{dice:>10.4f}{keeps:>12}")
    return "\n".join(lines)


def main() -> None:
    from radseg.pipeline.predict.runtime import RUNTIMES, candidates
    from radseg.pipeline.predict.runtime_backends import Candidate, export_onnx
    from radseg.pipeline.predict.runtime_cache import cpu_description, library_versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="windows per forward pass (default 2)")
    parser.add_argument("--size", type=int, default=96, help="window edge (default 96)")
    parser.add_argument("--threads", type=int, default=0, help="torch/onnxruntime/OpenVINO threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per candidate (default 5)")
    parser.add_argument("--all", action="store_true", help="bf16 candidates even where the CPU would emulate them")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, batch = _model(args.size, args.batch), windows(args.batch, args.size)
    found = candidates("cpu", runtimes=RUNTIMES)  # onnxruntime too, which auto leaves out
    if args.all and not any(c.precision == "bf16" for c in found):
        found += [Candidate("torch", "bf16"), Candidate("torch", "bf16", True)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="radseg-runtime-") as tmp:
        onnx_file = lambda: export_onnx(model, Path(tmp) / "network.onnx")  # noqa: E731
        for candidate in found:
            rows.append((candidate.name, measure(candidate, model, batch, args.repeats, onnx_file)))
            print(f"{candidate.name}: {rows[-1][1].get('seconds', rows[-1][1].get('error'))}", file=sys.stderr)
    print(f"CPU: {cpu_description()}; torch threads {torch.get_num_threads()}; "
          f"{', '.join(f'{k} {v}' for k, v in library_versions().items() if v)}")
    print(f"MONAI spleen UNet 16-256, batch {args.batch} of {args.size}^3 windows; median of {args.repeats} runs "
          "after one warm-up ('first s': build + warm-up)")
    print(table(rows, dict(rows)["torch-fp32"]["logits"]))


if __name__ == "__main__":
    main()
