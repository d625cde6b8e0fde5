"""The table of benchmarks/gpu_check.sh: training, prediction with AMP, bf16 against fp32 masks, on one GPU.

Called by gpu_check.sh after it made the chest-pelvis phantom and trained on it for 5 minutes::

    python benchmarks/gpu_check.py --run RUN --data PHANTOM --work WORK --train-gpu-peak-gb 3.2 --train-seconds 301
    python benchmarks/gpu_check.py --header     # the table's header only (gpu_check.sh --dry-run)

Rows: ``train`` (steps/s from the run's metrics.csv and config, the GPU memory peak nvidia-smi saw, the
best validation Dice); ``predict test cases`` with the checkpoint's AMP (bf16 where the GPU has it)
and with ``--precision fp32`` (seconds per case by stage, peak GPU memory, held-out Dice against
labelsTs, and the bf16 masks' Dice against the fp32 ones); ``predict 512x512x800`` (the same stages
on a synthetic 800-slice CT from infer_speed.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("row", "cases", "s/case", "read", "preproc", "network", "to_grid", "write", "GPU peak GB", "Dice",
           "vs fp32")


def header() -> str:
    """The table's header and rule."""
    line = f"{COLUMNS[0]:<34}" + "".join(f"{c:>12}" for c in COLUMNS[1:])
    return line + "\n" + "-" * len(line)


def _row(name: str, values: dict) -> str:
    cells = [values.get(c, "") for c in COLUMNS[1:]]
    return f"{name:<34}" + "".join(f"{c:>12.3f}" if isinstance(c, float) else f"{str(c):>12}" for c in cells)


def train_row(run: Path, gpu_peak_gb: float, seconds: float) -> dict:
    """Steps/s over the run's epochs, the GPU peak and the best validation Dice."""
    import yaml

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    config = yaml.safe_load((run / "config.yaml").read_text())
    iterations = int(config["train"]["iterations_per_epoch"])
    epoch_time = sum(float(r["epoch_time"]) for r in rows)
    dice = max((float(r["mean_dice"]) for r in rows if r.get("mean_dice")), default=float("nan"))
    return {"cases": f"{len(rows)} ep", "s/case": round(seconds, 1), "network": f"{iterations * len(rows) / epoch_time:.2f} st/s",
            "GPU peak GB": gpu_peak_gb, "Dice": dice}


def predict_rows(run: Path, scans: list[Path], work: Path, labels: Path | None,
                 device: str = "cuda") -> list[tuple[str, dict]]:
    """Predict ``scans`` with the checkpoint's AMP and in fp32: seconds by stage, GPU peak, Dice."""
    import torch

    from radseg.pipeline.predict.predict import PredictOptions, predict_many

    rows, masks = [], {}
    for precision in ("auto", "fp32"):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out = work / f"pred-{precision}-{scans[0].parent.name}"
        options = PredictOptions(progress=False, overwrite=True, runtime="torch", precision=precision)
        summary = predict_many(run, scans, out, options, device=device)
        done = [r for r in summary.results if r.status == "done"]
        stages = {k: float(np.mean([r.seconds[k] for r in done])) for k in done[0].seconds} if done else {}
        values = {"cases": f"{len(done)}/{len(scans)}", "s/case": sum(stages.values()), "read": stages.get("read"),
                  "preproc": stages.get("preprocess"), "network": stages.get("network"),
                  "to_grid": stages.get("to_grid"), "write": stages.get("write"),
                  "GPU peak GB": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else "cpu"}
        masks[precision] = {r.name: np.asarray(_load(r.mask)) for r in done}
        if labels is not None:
            values["Dice"] = _mean_dice(masks[precision], {n: labels / f"{n}.nii.gz" for n in masks[precision]})
        rows.append((f"{precision} ({json.loads((out / f'{done[0].name}.json').read_text())['runtime']})"
                     if done else precision, values))
    agreement = [_dice(masks["auto"][n], masks["fp32"][n]) for n in masks["auto"] if n in masks["fp32"]]
    rows[0][1]["vs fp32"] = float(np.min(agreement)) if agreement else "n/a"
    return rows


def _load(path: Path):
    import nibabel as nib

    return nib.load(str(path)).dataobj


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either mask."""
    scores = []
    for value in sorted(set(np.unique(a)) | set(np.unique(b)) - {0}):
        x, y = a == value, b == value
        scores.append(2.0 * float((x & y).sum()) / float(x.sum() + y.sum()))
    return float(np.mean(scores)) if scores else 1.0


def _mean_dice(masks: dict, truths: dict) -> float:
    scores = [_dice(mask, np.asarray(_load(truths[name]))) for name, mask in masks.items() if truths[name].is_file()]
    return float(np.mean(scores)) if scores else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", action="store_true", help="print the header only")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--train-gpu-peak-gb", type=float, default=float("nan"))
    parser.add_argument("--train-seconds", type=float, default=float("nan"))
    parser.add_argument("--slices", type=int, default=800)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run of this script")
    args = parser.parse_args()
    print(header())
    if args.header:
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from infer_speed import make_ct

    print(_row("train --budget 5m (chest-pelvis)", train_row(args.run, args.train_gpu_peak_gb, args.train_seconds)),
          flush=True)
    tests = sorted((args.data / "imagesTs").glob("*.nii.gz"))
    for name, values in predict_rows(args.run, tests, args.work, args.data / "labelsTs", args.device):
        print(_row(f"predict test cases, {name}", values), flush=True)
    with tempfile.TemporaryDirectory(prefix="radseg-gpu-") as tmp:
        scan = make_ct(Path(tmp) / f"ct{args.slices}.nii.gz", args.slices)
        for name, values in predict_rows(args.run, [scan], args.work, None, args.device):
            print(_row(f"predict 512x512x{args.slices}, {name}", values), flush=True)


if __name__ == "__main__":
    main()
