"""radseg planned for a wall-clock budget against two plain-MONAI recipes, on every phantom family.

The target (issue 22): with a 15-minute budget on 2 CPU cores, radseg's own plan (``radseg train
--budget 15m``, no config) beats each MONAI recipe given the same wall clock by at least 0.01 liver
Dice and 0.05 tumour Dice on held-out cases, on the phantom family the planner's rules were read off
and on the one held out from tuning. One run, one table:

* for each profile (``abdomen``: the fast 120-160 mm slab; ``chest-pelvis``: 180-300 mm from the
  lungs to the pelvis, liver-like spleen, 6-22 mm tumours, oblique cases; ``irregular``: the
  independently written family no planner rule was read off) a phantom of ``--cases`` training and
  ``--test`` held-out cases is written;
* **radseg plan**: :func:`radseg.pipeline.train.budget_run.train_with_budget` with ``--fold all``
  (planning, check-data, fingerprint, caching, training and validation all inside the budget),
  then its ``best.pt`` (``last.pt`` if no validation was scored) applied to the held-out images by
  the real command line, ``python -m radseg predict --device cpu`` in a fresh interpreter (its wall
  clock, start-up included, is the predict column);
* **monai-tutorial**: the spleen tutorial's recipe as in ``demo_vs_monai.py`` (1.5×1.5×3 mm, HU
  window −57..164, 96×96×48 pos/neg patches ×4, batch 2, UNet 16–256 with residual units, Dice+CE,
  Adam 1e-3) trained on the same (all) training cases until the same budget, caching included, is
  spent, then the tutorial's inference on original images: sliding window, ``Invertd`` (inverse of
  the crop, orientation and spacing), ``AsDiscreted(argmax)``, one mask per held-out image
  (in-process, so its predict column has no interpreter start-up);
* **monai-hand-tuned**: the same pipeline with the recipe tuned by hand for a CPU budget
  (2.5×2.5×3 mm, 80×80×48 patches ×4 per case, batch 2, UNet 16–128 with one residual unit and
  instance norm, Adam 3e-3): coarser voxels and smaller patches, many more patches per minute.

Dice, in the original image space: every mask is checked to have its image's shape and affine, then
the folder is scored by :func:`radseg.pipeline.evaluate.evaluate_folder.evaluate_folder` (what
``radseg evaluate`` runs) against the held-out labels (``labelsTs/``); a column is the mean over the
held-out cases of that class's Dice (label value 1 liver, 2 tumour; cases where a class is absent
from both mask and label are left out). Both systems are scored by the same code on the same grids.

Usage (about 3 x (budget + 3 min) per profile on 2 CPU cores; run it on an otherwise idle machine)::

    python benchmarks/plan_vs_monai.py                                        # 15 min, every family
    python benchmarks/plan_vs_monai.py --budget-minutes 2 --profiles abdomen --cases 6 --test 2   # smoke
    python benchmarks/plan_vs_monai.py --profiles irregular --baselines hand-tuned   # the held-out family
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_vs_monai as tutorial  # noqa: E402  (the baseline recipe lives there)

import radseg  # noqa: E402
from radseg.pipeline.core.checkpoint import BEST, LAST  # noqa: E402
from radseg.pipeline.data.datalist import DatasetSpec, discover_dataset, to_datalist  # noqa: E402
from radseg.pipeline.data.phantom import write_phantom_dataset  # noqa: E402
from radseg.pipeline.data.phantom_profiles import PROFILES  # noqa: E402
from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder  # noqa: E402
from radseg.pipeline.predict.outputs import MASK_SUFFIX  # noqa: E402
from radseg.pipeline.train.budget_run import train_with_budget  # noqa: E402

logger = logging.getLogger("plan_vs_monai")
TARGET_LIVER_GAIN, TARGET_TUMOUR_GAIN = 0.01, 0.05
#: the baselines by their --baselines name: MONAI's spleen tutorial and the hand-tuned CPU recipe
BASELINES = {"tutorial": tutorial.TUTORIAL, "hand-tuned": tutorial.HAND_TUNED}
#: largest difference (mm) between a mask's affine and its image's, entry by entry
_AFFINE_TOLERANCE = 1e-3


@dataclass
class SystemResult:
    """One row: wall seconds, mean Dice per class in the original image space, and a note."""

    name: str
    train_seconds: float
    predict_seconds: float
    dice: dict[str, float]
    note: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="wall clock per system (default 15)")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES,
                        help="phantom families (default: all; 'irregular' is the family no rule was read off)")
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES,
                        help="plain-MONAI recipes to train beside radseg (default: both)")
    parser.add_argument("--cases", type=int, default=24, help="training cases per phantom (default 24)")
    parser.add_argument("--test", type=int, default=8, help="held-out cases per phantom (default 8)")
    parser.add_argument("--seed", type=int, default=11, help="phantom seed (default 11, unlike the tests' seeds)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here")
    parser.add_argument("--skip-baseline", action="store_true", help="measure radseg only")
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be > 0, not {args.budget_minutes}")
    if args.cases < 1 or args.test < 1:
        parser.error(f"--cases and --test must be >= 1 (the Dice is taken on the held-out cases), "
                     f"not {args.cases} and {args.test}")
    return args


def run_ours(spec: DatasetSpec, workdir: Path, budget_minutes: float) -> SystemResult:
    """Plan and train within the budget (fold all), then ``radseg predict`` best.pt on the held-out images."""
    run_dir = workdir / "run"
    start = time.perf_counter()
    result = train_with_budget(spec.root, run_dir, f"{budget_minutes}m", device="cpu", fold="all", overwrite=True)
    wall = time.perf_counter() - start
    checkpoint = run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST
    predictions = _fresh(workdir / "predictions")
    predict_seconds = predict_with_cli(checkpoint, [case.images[0] for case in spec.test], predictions)
    dice = score_original(spec, predictions, workdir / "evaluation")
    plan_line = next((line for line in (run_dir / "plan.yaml").read_text().splitlines()
                      if line.startswith("# predicted")), "")
    note = f"radseg plan: {result}; {plan_line[2:]}; predict scored {checkpoint.name}"
    return SystemResult("radseg plan (fold all)", wall, predict_seconds, dice, note)


def predict_with_cli(checkpoint: Path, images: list[Path], output: Path) -> float:
    """``radseg predict`` on CPU in a fresh interpreter, as a user runs it; returns its wall seconds.

    The seconds are the whole command's: interpreter start and imports included.

    Raises:
        RuntimeError: the command failed (its output is above in the log).
    """
    command = [sys.executable, "-m", "radseg", "predict", "--model", str(checkpoint), "--input",
               *map(str, images), "--output", str(output), "--device", "cpu", "--overwrite"]
    env = dict(os.environ)  # the same radseg as this process, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(radseg.__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    logger.info("running %s", " ".join(command))
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode:
        raise RuntimeError(f"radseg predict exited with status {completed.returncode}: {' '.join(command)}")
    return seconds


def run_baseline(spec: DatasetSpec, workdir: Path, budget_minutes: float,
                 recipe: tutorial.Recipe = tutorial.TUTORIAL) -> SystemResult:
    """A plain-MONAI recipe on every training case, caching and training inside the same wall clock, then
    its inference taken back to the held-out images' grids."""
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    set_determinism(seed=0)
    start = time.perf_counter()
    datalist = to_datalist(spec.training)
    dataset = CacheDataset(datalist, tutorial.baseline_transforms(train=True, recipe=recipe), cache_rate=1.0,
                           num_workers=1)
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, num_workers=1, persistent_workers=True)
    cache_seconds = time.perf_counter() - start
    network = tutorial.baseline_network(spec.num_classes, recipe)
    steps = tutorial.train_baseline(network, loader, max(budget_minutes * 60 - cache_seconds, 0.0),
                                    torch.device("cpu"), recipe.learning_rate)
    wall = time.perf_counter() - start
    del loader
    predictions = _fresh(workdir / "predictions")
    start = time.perf_counter()
    tutorial.predict_baseline_original(network, spec, predictions, torch.device("cpu"), recipe)
    predict_seconds = time.perf_counter() - start
    dice = score_original(spec, predictions, workdir / "evaluation")
    note = (f"{recipe.name} ({recipe.describe()}): {len(datalist)} cases cached in {cache_seconds:.0f} s, then "
            f"{steps} steps of {recipe.batch_size} x {recipe.num_samples} patches; predict in-process "
            f"(Invertd, argmax)")
    return SystemResult(recipe.name, wall, predict_seconds, dice, note)


def score_original(spec: DatasetSpec, predictions: Path, output: Path) -> dict[str, float]:
    """Mean Dice per class of the masks in ``predictions`` against the held-out labels, on the images' grids.

    Each mask is first checked to have its image's shape and affine (nibabel), then the folder is
    scored by :func:`radseg.pipeline.evaluate.evaluate_folder.evaluate_folder` (``radseg evaluate``,
    which refuses masks off the label's grid) against the dataset's labelled test cases; its tables,
    summary and report are written to ``output``.

    Returns:
        ``{class name: mean Dice over the held-out cases}`` (NaN where no case defines it).

    Raises:
        RuntimeError: a mask is missing or not on its image's grid.
    """
    for case in spec.test:
        _check_on_image_grid(predictions / f"{case.case_id}{MASK_SUFFIX}", case.images[0])
    result = evaluate_folder(predictions, spec.root, output, overwrite=True, progress=False)
    if result.summary["missing_predictions"]:
        raise RuntimeError(f"no prediction for {', '.join(result.summary['missing_predictions'])} in {predictions}")
    dice = {name: metrics["dice"]["mean"] for name, metrics in result.summary["metrics"].items()}
    return {name: math.nan if value is None else value for name, value in dice.items()}


def _check_on_image_grid(mask_path: Path, image_path: Path) -> None:
    """The mask has the image's voxel shape and affine (to within ``_AFFINE_TOLERANCE``)."""
    if not mask_path.is_file():
        raise RuntimeError(f"no mask {mask_path} for the held-out image {image_path}")
    mask, image = nib.load(mask_path), nib.load(image_path)
    if mask.shape != image.shape[:3] or not np.allclose(mask.affine, image.affine, atol=_AFFINE_TOLERANCE):
        raise RuntimeError(f"mask {mask_path} (shape {mask.shape}, affine {mask.affine.tolist()}) is not on the "
                           f"grid of image {image_path} (shape {image.shape}, affine {image.affine.tolist()})")


def _fresh(folder: Path) -> Path:
    """An empty folder (this benchmark's own earlier predictions removed: no stale masks)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def format_table(rows: list[list[str]], notes: list[str]) -> str:
    """Plain-text table, then the notes."""
    header = ["profile", "system", "train cases", "train wall min", "predict wall s", "liver Dice", "tumour Dice",
              "target met"]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + [""] + notes)


def measure_profile(profile: str, args: argparse.Namespace, workdir: Path) -> tuple[list[list[str]], list[str]]:
    """Both systems on one profile: table rows and notes."""
    root = write_phantom_dataset(workdir / profile, num_cases=args.cases, num_test=args.test, seed=args.seed,
                                 overwrite=True, profile=profile)
    spec = discover_dataset(root)
    names = [spec.labels[1], spec.labels[2]]  # the phantom's liver and tumour
    results = [run_ours(spec, workdir / f"{profile}-radseg", args.budget_minutes)]
    if not args.skip_baseline:
        results += [run_baseline(spec, workdir / f"{profile}-{name}", args.budget_minutes, BASELINES[name])
                    for name in args.baselines]
    rows = []
    for result in results:
        liver, tumour = (result.dice[name] for name in names)
        met = "-"
        if result is results[0] and len(results) > 1:  # ahead of every baseline by the margins
            ahead = all(liver >= base.dice[names[0]] + TARGET_LIVER_GAIN
                        and tumour >= base.dice[names[1]] + TARGET_TUMOUR_GAIN for base in results[1:])
            met = "yes" if ahead else "no"
        rows.append([profile, result.name, str(len(spec.training)), f"{result.train_seconds / 60:.1f}",
                     f"{result.predict_seconds:.1f}", f"{liver:.3f}", f"{tumour:.3f}", met])
    return rows, [f"{profile}: {result.note}" for result in results]


def main(argv: list[str] | None = None) -> int:
    """Run every profile and print one table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radseg-plan-vs-monai-"))
    rows, notes = [], []
    try:
        for profile in args.profiles:
            profile_rows, profile_notes = measure_profile(profile, args, workdir)
            rows += profile_rows
            notes += profile_notes
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    notes += [f"budget {args.budget_minutes:g} min per system, {args.cases} training + {args.test} held-out cases "
              f"per profile, seed {args.seed}; Dice on the held-out images' own grids (radseg evaluate's scoring); "
              f"target: radseg >= baseline + {TARGET_LIVER_GAIN} liver and + {TARGET_TUMOUR_GAIN} tumour Dice",
              "predict wall: radseg's is the whole `radseg predict` command (interpreter start-up and imports "
              "included), the baseline's its in-process inference, Invertd and writing",
              f"torch threads {torch.get_num_threads()}, usable cores {tutorial.usable_cores()}"]
    print(format_table(rows, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
