"""radseg's demo against MONAI's spleen-tutorial recipe: same phantom, same held-out cases, one table.

The issue's target is a liver Dice of at least 0.90 on held-out phantom cases in under 10 minutes on
2 CPU cores, and it quotes MONAI's spleen-tutorial recipe at 0.73 (tumour 0.29) after 15 CPU-minutes.
This script measures both in one run:

* **ours**: ``fit(load_config("demo"), data, run)``, then ``evaluate_checkpoint(run/best.pt, test
  cases)``, exactly as ``radseg demo`` does (on fit's fold-0 split of the training cases);
* **monai-tutorial**: the spleen tutorial written with plain MONAI, not radseg's pipeline:
  ``LoadImaged`` (MONAI's default reader) → ``EnsureChannelFirstd`` → ``ScaleIntensityRanged(-57,
  164 → 0, 1, clip)`` → ``CropForegroundd(source_key="image")`` → ``Orientationd("RAS")`` →
  ``Spacingd(1.5, 1.5, 3.0 mm)`` → ``RandCropByPosNegLabeld(96×96×48, pos 1, neg 1, 4 samples)``,
  ``CacheDataset(cache_rate=1.0)``, batch 2, ``UNet`` 16-32-64-128-256 with 2 residual units and
  batch norm, ``DiceCELoss(to_onehot_y, softmax)``, Adam 1e-3. It trains on the same fold-0
  training cases (read from the ``splits.json`` that fit wrote) for ``--baseline-minutes`` of
  wall clock, counted from the first step (caching excluded), and keeps its last weights (the
  tutorial picks its best epoch on a validation split; here it has none, as ours validates on
  cases it never trains on).

Two changes to the tutorial, both in the baseline's favour: a ``SpatialPadd`` to the patch size
before the random crop (phantom volumes are thinner than 48 slices at 3 mm, and the tutorial's
crops would then differ in size and fail to batch), and the step runs on plain tensors rather than
MetaTensors (less autograd overhead).

Both systems are scored with :func:`radseg.pipeline.evaluate.metrics.dice_per_class` (argmax, Dice per
foreground class, NaN where a class is absent from prediction and label) and averaged over cases by
:class:`radseg.pipeline.evaluate.checkpoint_eval.Evaluation`, each on its own preprocessed (resampled) grid of the
held-out cases: radseg's resolved spacing for ours, 1.5×1.5×3 mm after the foreground crop for the
baseline (sliding window, roi 96×96×48, sw_batch_size 4, overlap 0.25).

Usage (about 25 minutes on 2 CPU cores: 15 for the baseline's training, the rest for ours and caching)::

    python benchmarks/demo_vs_monai.py
    python benchmarks/demo_vs_monai.py --baseline-minutes 0.3 \\
        --ours-set train.max_epochs=1 --ours-set train.iterations_per_epoch=2   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import monai
import torch
from tqdm import tqdm

from radseg import keys
from radseg.configs.loader import load_config
from radseg.errors import RadsegError
from radseg.pipeline.data.datalist import DatasetSpec, discover_dataset, to_datalist
from radseg.pipeline.train.demo import DEMO_TEST_CASES
from radseg.pipeline.evaluate.checkpoint_eval import Evaluation, evaluate_checkpoint
from radseg.pipeline.train.fit import BEST, LAST, fit
from radseg.pipeline.data.phantom import write_phantom_dataset
from radseg.pipeline.train.run_setup import SPLITS_FILE
from radseg.pipeline.data.splits import make_folds
from radseg.pipeline.evaluate.metrics import dice_per_class

logger = logging.getLogger("demo_vs_monai")

#: the issue's target
TARGET_LIVER_DICE = 0.90
TARGET_MINUTES = 10.0
#: the demo's training cases (radseg.pipeline.run_demo's default)
DEMO_CASES = 12
HU_WINDOW = (-57.0, 164.0)
SW_BATCH_SIZE = 4
OVERLAP = 0.25


@dataclass(frozen=True)
class Recipe:
    """A plain-MONAI training recipe: the settings in which the baselines differ."""

    name: str
    pixdim: tuple[float, float, float]
    roi_size: tuple[int, int, int]
    channels: tuple[int, ...]
    num_res_units: int
    norm: str  # a monai.networks.layers.Norm name: "batch" or "instance"
    learning_rate: float
    num_samples: int  # patches drawn per case
    batch_size: int  # cases per step (each gives num_samples patches)

    def describe(self) -> str:
        """One line: spacing, patch, patches per step, network and optimiser."""
        return (f"{'x'.join(f'{p:g}' for p in self.pixdim)} mm, {'x'.join(map(str, self.roi_size))} x "
                f"{self.batch_size * self.num_samples} per step, UNet {self.channels[0]}-{self.channels[-1]} "
                f"({self.num_res_units} residual units, {self.norm} norm), Adam {self.learning_rate:g}")


#: the spleen tutorial's recipe, at the issue's 1.5 x 1.5 x 3 mm and 96 x 96 x 48 patches
TUTORIAL = Recipe("monai-tutorial", (1.5, 1.5, 3.0), (96, 96, 48), (16, 32, 64, 128, 256), 2, "batch", 1e-3, 4, 2)
#: the recipe a person tuned by hand for 15 CPU minutes on abdominal CT (issue 22's second baseline):
#: coarser voxels and smaller patches buy many more patches per minute
HAND_TUNED = Recipe("monai-hand-tuned", (2.5, 2.5, 3.0), (80, 80, 48), (16, 32, 64, 128), 1, "instance", 3e-3, 4, 2)


@dataclass
class SystemResult:
    """One row of the table: wall times in seconds and the held-out evaluation."""

    name: str
    train_seconds: float
    total_seconds: float
    evaluation: Evaluation
    detail: str

    def liver_and_tumour(self) -> tuple[float, float]:
        means = list(self.evaluation.mean().values())
        return means[0], means[1] if len(means) > 1 else math.nan

    def target_met(self) -> bool:
        liver, _ = self.liver_and_tumour()
        return liver >= TARGET_LIVER_DICE and self.total_seconds <= TARGET_MINUTES * 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the phantom (data/) and our run (ours-run/) here (default: a temporary folder)")
    parser.add_argument("--baseline-minutes", type=float, default=15.0,
                        help="the baseline's training budget in wall-clock minutes, caching excluded (default 15)")
    parser.add_argument("--baseline-workers", type=int, default=1,
                        help="DataLoader workers of the baseline (default 1, as the demo's cache.num_workers)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure ours only")
    parser.add_argument("--skip-ours", action="store_true", help="measure the baseline only")
    parser.add_argument("--ours-set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides on the demo preset, e.g. train.max_epochs=1 (repeatable)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="device of both systems (default cpu, as the issue's target)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed and the baseline's seed (default 0)")
    args = parser.parse_args(argv)
    if args.skip_baseline and args.skip_ours:
        parser.error("--skip-baseline and --skip-ours together leave nothing to measure; drop one")
    if args.baseline_minutes < 0:
        parser.error(f"--baseline-minutes must be >= 0, not {args.baseline_minutes}")
    return args


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prepare_dataset(workdir: Path, seed: int) -> tuple[DatasetSpec, float]:
    """The demo's phantom (12 training + 4 held-out cases) and the seconds it took to write."""
    start = time.perf_counter()
    root = write_phantom_dataset(workdir / "data", num_cases=DEMO_CASES, seed=seed, num_test=DEMO_TEST_CASES,
                                 overwrite=True)
    return discover_dataset(root), time.perf_counter() - start


def run_ours(spec: DatasetSpec, run_dir: Path, overrides: list[str]) -> SystemResult:
    """``fit`` with the demo preset, then Dice of its best checkpoint on the held-out cases."""
    cfg = load_config("demo", overrides)
    start = time.perf_counter()
    result = fit(cfg, data=spec.root, output=run_dir, overwrite=True)
    train_seconds = time.perf_counter() - start
    checkpoint = run_dir / BEST
    if not checkpoint.is_file():  # no validation scored yet (a very short smoke run)
        logger.warning("%s has no %s; scoring %s instead", run_dir, BEST, LAST)
        checkpoint = run_dir / LAST
    evaluation = evaluate_checkpoint(checkpoint, to_datalist(spec.test), device=cfg.train.device)
    logger.info("ours on the held-out cases:\n%s", evaluation)
    detail = f"ours: {result}"
    return SystemResult("radseg demo", train_seconds, time.perf_counter() - start, evaluation, detail)


def fold_train_ids(spec: DatasetSpec, run_dir: Path, overrides: list[str]) -> list[str]:
    """The training ids of fit's fold: from the run's splits.json, or made as fit makes them."""
    cfg = load_config("demo", overrides)
    path = run_dir / SPLITS_FILE
    if path.is_file():
        folds = json.loads(path.read_text())
    else:
        folds = make_folds([case.case_id for case in spec.training], cfg.data.num_folds, cfg.data.split_seed)
    return list(folds[cfg.data.fold]["train"])


def baseline_transforms(train: bool, label: bool = True, recipe: Recipe = TUTORIAL) -> monai.transforms.Compose:
    """The spleen tutorial's chain: deterministic steps (cached), then the random crop for training.

    Args:
        train: add the padding and the random pos/neg crop.
        label: load and transform the label with the image; False for inference on images alone
            (``train`` needs the label).
        recipe: the spacing, patch and patches per case (the tutorial's by default).
    """
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd,
                                  RandCropByPosNegLabeld, ScaleIntensityRanged, SpatialPadd, Spacingd)

    if train and not label:
        raise ValueError("baseline_transforms(train=True) crops around the label; it needs label=True")
    both = [keys.IMAGE, keys.LABEL] if label else [keys.IMAGE]
    steps = [
        LoadImaged(keys=both),
        EnsureChannelFirstd(keys=both),
        ScaleIntensityRanged(keys=keys.IMAGE, a_min=HU_WINDOW[0], a_max=HU_WINDOW[1], b_min=0.0, b_max=1.0,
                             clip=True),
        CropForegroundd(keys=both, source_key=keys.IMAGE),
        Orientationd(keys=both, axcodes="RAS"),
        Spacingd(keys=both, pixdim=recipe.pixdim, mode=("bilinear", "nearest")[:len(both)]),
    ]
    if train:
        steps += [
            SpatialPadd(keys=both, spatial_size=recipe.roi_size),  # thin volumes: every crop must be the patch
            RandCropByPosNegLabeld(keys=both, label_key=keys.LABEL, spatial_size=recipe.roi_size, pos=1, neg=1,
                                   num_samples=recipe.num_samples, image_key=keys.IMAGE, image_threshold=0),
        ]
    return Compose(steps)


def baseline_network(num_classes: int, recipe: Recipe = TUTORIAL) -> torch.nn.Module:
    """The recipe's MONAI UNet (the tutorial's: 16-32-64-128-256, strides 2, 2 residual units, batch norm)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=num_classes, channels=recipe.channels,
                strides=(2,) * (len(recipe.channels) - 1), num_res_units=recipe.num_res_units, norm=recipe.norm)


def _plain(tensor) -> torch.Tensor:
    """A MetaTensor as a plain tensor (metadata tracking slows autograd)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _endless(loader):
    while True:
        yield from loader


def train_baseline(network, loader, budget_seconds: float, device: torch.device,
                   learning_rate: float = TUTORIAL.learning_rate) -> int:
    """Train until the wall-clock budget is spent (a step begun in time finishes); returns the steps."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), learning_rate)
    network.train()
    start, steps = time.perf_counter(), 0
    with tqdm(desc=f"baseline training ({budget_seconds / 60:.1f} min)", unit="step") as bar:
        for batch in _endless(loader):
            if time.perf_counter() - start >= budget_seconds:
                break
            image = _plain(batch[keys.IMAGE]).to(device)
            label = _plain(batch[keys.LABEL]).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(image), label)
            loss.backward()
            optimizer.step()
            steps += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
    return steps


def evaluate_baseline(network, spec: DatasetSpec, device: torch.device) -> Evaluation:
    """Dice per case and class on the held-out cases, on the tutorial's preprocessed grid."""
    from monai.data import Dataset

    network.eval()
    per_case = {}
    dataset = Dataset(to_datalist(spec.test), baseline_transforms(train=False))
    with torch.no_grad():
        for case in tqdm(dataset, desc="baseline test cases", unit="case"):
            pred = _baseline_logits(network, case[keys.IMAGE], device).argmax(dim=0)
            label = _plain(case[keys.LABEL])[0].round().long()
            per_case[case[keys.CASE_ID]] = dice_per_class(pred, label, spec.num_classes).tolist()
    names = [spec.labels[index] for index in range(1, spec.num_classes)]
    return Evaluation(names, per_case)


def _baseline_logits(network, image, device: torch.device, roi_size=TUTORIAL.roi_size) -> torch.Tensor:
    """The tutorial's sliding window over one preprocessed ``(1, X, Y, Z)`` image: ``(C, X, Y, Z)`` logits on CPU."""
    from monai.inferers import sliding_window_inference

    logits = sliding_window_inference(_plain(image)[None].to(device), roi_size, SW_BATCH_SIZE, network,
                                      overlap=OVERLAP)
    return _plain(logits)[0].cpu()


def predict_baseline_original(network, spec: DatasetSpec, output: Path, device: torch.device,
                              recipe: Recipe = TUTORIAL) -> list[Path]:
    """The tutorial's inference on the held-out images, taken back to each image's own grid and written.

    As the tutorial's "inference on original images": the preprocessing of :func:`baseline_transforms`
    (no label), sliding window, ``Invertd`` (the inverse of ``Spacingd``, ``Orientationd`` and
    ``CropForegroundd`` applied to the logits, interpolated as the image was, ``nearest_interp=False``),
    then ``AsDiscreted(argmax=True)``. Each mask is written as uint8 ``<case id>.nii.gz`` with the affine
    the inversion restored (atomically), the layout ``radseg evaluate`` reads.

    Args:
        network: the trained tutorial UNet.
        spec: the dataset; its ``test`` cases are predicted.
        output: the folder for the masks (created).
        device: where the network runs.
        recipe: the recipe the network was trained with (its spacing and patch).

    Returns:
        The mask files, one per held-out case, in ``spec.test`` order.
    """
    import nibabel as nib
    import numpy as np
    from monai.data import Dataset, MetaTensor
    from monai.transforms import AsDiscreted, Compose, Invertd

    from radseg.atomic import atomic_path

    preprocess = baseline_transforms(train=False, label=False, recipe=recipe)
    postprocess = Compose([
        Invertd(keys=keys.PRED, transform=preprocess, orig_keys=keys.IMAGE, nearest_interp=False, to_tensor=True),
        AsDiscreted(keys=keys.PRED, argmax=True),
    ])
    datalist = [{keys.IMAGE: case[keys.IMAGE], keys.CASE_ID: case[keys.CASE_ID]} for case in to_datalist(spec.test)]
    output.mkdir(parents=True, exist_ok=True)
    network.eval()
    written = []
    with torch.no_grad():
        for case in tqdm(Dataset(datalist, preprocess), desc="baseline predict (original grid)", unit="case"):
            # a MetaTensor, so that Invertd takes the image's applied operations and metadata
            case[keys.PRED] = MetaTensor(_baseline_logits(network, case[keys.IMAGE], device, recipe.roi_size))
            mask = postprocess(case)[keys.PRED]
            path = output / f"{case[keys.CASE_ID]}.nii.gz"
            with atomic_path(path, keep_suffix=True) as tmp:
                nib.save(nib.Nifti1Image(_plain(mask)[0].numpy().astype(np.uint8), mask.affine.numpy()), tmp)
            written.append(path)
    return written


def run_baseline(spec: DatasetSpec, train_ids: list[str], args: argparse.Namespace,
                 device: torch.device) -> SystemResult:
    """Cache, train for the budget and evaluate the MONAI spleen-tutorial recipe."""
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)
    chosen = set(train_ids)
    datalist = to_datalist([case for case in spec.training if case.case_id in chosen])
    start = time.perf_counter()
    dataset = CacheDataset(datalist, baseline_transforms(train=True), cache_rate=1.0,
                           num_workers=max(args.baseline_workers, 1))
    loader = DataLoader(dataset, batch_size=TUTORIAL.batch_size, shuffle=True, num_workers=args.baseline_workers,
                        persistent_workers=args.baseline_workers > 0)
    cache_seconds = time.perf_counter() - start
    network = baseline_network(spec.num_classes).to(device)
    steps = train_baseline(network, loader, args.baseline_minutes * 60, device)
    train_seconds = time.perf_counter() - start
    del loader  # ends its workers before inference needs the cores
    evaluation = evaluate_baseline(network, spec, device)
    logger.info("baseline on the held-out cases:\n%s", evaluation)
    detail = (f"monai-tutorial: {len(datalist)} training cases cached in {cache_seconds:.0f} s, then {steps} "
              f"steps of {TUTORIAL.batch_size} cases x {TUTORIAL.num_samples} patches in a {args.baseline_minutes:g}-min budget")
    return SystemResult("monai-tutorial", train_seconds, time.perf_counter() - start, evaluation, detail)


def _row(result: SystemResult) -> list[str]:
    liver, tumour = result.liver_and_tumour()
    return [result.name, f"{result.train_seconds / 60:.1f}", f"{result.total_seconds / 60:.1f}", f"{liver:.3f}",
            f"{tumour:.3f}", "yes" if result.target_met() else "no"]


def format_table(results: list[SystemResult], spec: DatasetSpec, phantom_seconds: float,
                 args: argparse.Namespace) -> str:
    """The plain-text report: one row per system, then how the numbers were taken."""
    header = ["system", "train wall min", "total wall min", "liver Dice", "tumour Dice",
              f"liver>={TARGET_LIVER_DICE:.2f} in {TARGET_MINUTES:g} min"]
    rows = [header] + [_row(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    test_ids = ", ".join(case.case_id for case in spec.test)
    lines += [
        "",
        f"phantom: {len(spec.training)} training + {len(spec.test)} held-out cases ({test_ids}), seed {args.seed}, "
        f"written in {phantom_seconds:.0f} s (in neither row); Dice: mean over held-out cases, each system on its own",
        "preprocessed grid; train wall = caching + training (+ validation for ours); total = train + test inference",
        *(result.detail for result in results),
        f"ours overrides: {' '.join(args.overrides) or 'none'}; device {args.device}",
        f"torch threads {torch.get_num_threads()}, usable cores {usable_cores()}; torch {torch.__version__}, "
        f"monai {monai.__version__}, python {platform.python_version()}, {platform.machine()}",
    ]
    return "\n".join(lines)


def measure(args: argparse.Namespace, workdir: Path) -> str:
    """Write the phantom, run the requested systems and return the table."""
    torch.set_num_threads(usable_cores())
    overrides = list(args.overrides) + ([] if args.device == "auto" else [f"train.device={args.device}"])
    load_config("demo", overrides)  # a bad --ours-set fails before minutes of work
    spec, phantom_seconds = prepare_dataset(workdir, args.seed)
    run_dir = workdir / "ours-run"
    results = [] if args.skip_ours else [run_ours(spec, run_dir, overrides)]
    if not args.skip_baseline:
        from radseg.pipeline.core.distributed import pick_device

        train_ids = fold_train_ids(spec, run_dir, overrides)
        results.append(run_baseline(spec, train_ids, args, pick_device(args.device)))
    return format_table(results, spec, phantom_seconds, args)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radseg-demo-vs-monai-"))
    try:
        table = measure(args, workdir)
    except RadsegError as err:  # a bad --ours-set or an unusable device: one line, as the CLI does
        raise SystemExit(f"error: {err}") from err
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
