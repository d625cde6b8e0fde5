"""radseg planned for a wall-clock budget against MONAI's spleen-tutorial recipe, both phantom profiles.

The issue's target: with a 15-minute budget on 2 CPU cores, radseg's own plan (``radseg train
--budget 15m``, no config) beats the MONAI spleen-tutorial recipe given the same wall clock by at
least 0.01 liver Dice and 0.05 tumour Dice on held-out cases. One run, one table:

* for each profile (``abdomen``: the fast 120-160 mm slab; ``chest-pelvis``: 180-300 mm from the
  lungs to the pelvis, liver-like spleen, 6-22 mm tumours, oblique cases) a phantom of ``--cases``
  training and ``--test`` held-out cases is written;
* **radseg plan**: :func:`radseg.pipeline.train.budget_run.train_with_budget` with ``--fold all``
  (planning, check-data, fingerprint, caching, training and validation all inside the budget),
  then its ``best.pt`` scored on the held-out cases;
* **monai-tutorial**: the spleen tutorial's recipe as in ``demo_vs_monai.py`` (1.5×1.5×3 mm, HU
  window −57..164, 96×96×48 pos/neg patches ×4, batch 2, UNet 16–256 with residual units, Dice+CE,
  Adam 1e-3) trained on the same (all) training cases until the same budget, caching included, is
  spent, then scored on the same held-out cases.

Dice: :func:`radseg.pipeline.evaluate.metrics.dice_per_class`, mean over held-out cases, each system
on its own resampled grid (radseg through ``evaluate_checkpoint``; ``radseg predict`` in the original
image space is not in this branch yet), so the comparison is grid-for-grid, not yet in original space.

Usage (about 2 x (budget + 3 min) per profile on 2 CPU cores; run it on an otherwise idle machine)::

    python benchmarks/plan_vs_monai.py                                        # 15 min, both profiles
    python benchmarks/plan_vs_monai.py --budget-minutes 3 --profiles abdomen --cases 8 --test 2   # smoke
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_vs_monai as tutorial  # noqa: E402  (the baseline recipe lives there)

from radseg.pipeline.data.datalist import DatasetSpec, discover_dataset, to_datalist  # noqa: E402
from radseg.pipeline.data.phantom import write_phantom_dataset  # noqa: E402
from radseg.pipeline.evaluate.checkpoint_eval import Evaluation, evaluate_checkpoint  # noqa: E402
from radseg.pipeline.train.budget_run import train_with_budget  # noqa: E402

logger = logging.getLogger("plan_vs_monai")
TARGET_LIVER_GAIN, TARGET_TUMOUR_GAIN = 0.01, 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="wall clock per system (default 15)")
    parser.add_argument("--profiles", nargs="+", default=["abdomen", "chest-pelvis"],
                        choices=["abdomen", "chest-pelvis"])
    parser.add_argument("--cases", type=int, default=24, help="training cases per phantom (default 24)")
    parser.add_argument("--test", type=int, default=8, help="held-out cases per phantom (default 8)")
    parser.add_argument("--seed", type=int, default=11, help="phantom seed (default 11, unlike the tests' seeds)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here")
    parser.add_argument("--skip-baseline", action="store_true", help="measure radseg only")
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be > 0, not {args.budget_minutes}")
    return args


def run_ours(spec: DatasetSpec, run_dir: Path, budget_minutes: float) -> tuple[float, Evaluation, str]:
    """Plan and train within the budget (fold all), then score best.pt on the held-out cases."""
    start = time.perf_counter()
    result = train_with_budget(spec.root, run_dir, f"{budget_minutes}m", device="cpu", fold="all", overwrite=True)
    wall = time.perf_counter() - start
    checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    evaluation = evaluate_checkpoint(checkpoint, to_datalist(spec.test), device="cpu")
    plan_line = next((line for line in (run_dir / "plan.yaml").read_text().splitlines()
                      if line.startswith("# predicted")), "")
    return wall, evaluation, f"radseg plan: {result}; {plan_line[2:]}"


def run_baseline(spec: DatasetSpec, budget_minutes: float) -> tuple[float, Evaluation, str]:
    """The tutorial recipe on every training case, caching and training inside the same wall clock."""
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    set_determinism(seed=0)
    start = time.perf_counter()
    datalist = to_datalist(spec.training)
    dataset = CacheDataset(datalist, tutorial.baseline_transforms(train=True), cache_rate=1.0, num_workers=1)
    loader = DataLoader(dataset, batch_size=tutorial.BATCH_SIZE, shuffle=True, num_workers=1, persistent_workers=True)
    cache_seconds = time.perf_counter() - start
    network = tutorial.baseline_network(spec.num_classes)
    steps = tutorial.train_baseline(network, loader, max(budget_minutes * 60 - cache_seconds, 0.0),
                                    torch.device("cpu"))
    wall = time.perf_counter() - start
    del loader
    evaluation = tutorial.evaluate_baseline(network, spec, torch.device("cpu"))
    return wall, evaluation, (f"monai-tutorial: {len(datalist)} cases cached in {cache_seconds:.0f} s, then {steps} "
                              f"steps of {tutorial.BATCH_SIZE} x {tutorial.NUM_SAMPLES} patches")


def _means(evaluation: Evaluation) -> tuple[float, float]:
    values = list(evaluation.mean().values())
    return values[0], values[1] if len(values) > 1 else math.nan


def format_table(rows: list[list[str]], notes: list[str]) -> str:
    """Plain-text table, then the notes."""
    header = ["profile", "system", "train cases", "train wall min", "liver Dice", "tumour Dice", "target met"]
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
    wall, ours, note = run_ours(spec, workdir / f"{profile}-run", args.budget_minutes)
    results = [("radseg plan (fold all)", wall, ours)]
    notes = [f"{profile}: {note}"]
    if not args.skip_baseline:
        wall, theirs, note = run_baseline(spec, args.budget_minutes)
        results.append(("monai-tutorial", wall, theirs))
        notes.append(f"{profile}: {note}")
    rows = []
    for name, wall, evaluation in results:
        liver, tumour = _means(evaluation)
        met = "-"
        if name.startswith("radseg") and len(results) > 1:
            base_liver, base_tumour = _means(results[1][2])
            met = "yes" if liver >= base_liver + TARGET_LIVER_GAIN and tumour >= base_tumour + TARGET_TUMOUR_GAIN else "no"
        rows.append([profile, name, str(len(spec.training)), f"{wall / 60:.1f}", f"{liver:.3f}", f"{tumour:.3f}", met])
    return rows, notes


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
              f"per profile, seed {args.seed}; Dice on each system's own resampled grid (not the original space yet); "
              f"target: radseg >= baseline + {TARGET_LIVER_GAIN} liver and + {TARGET_TUMOUR_GAIN} tumour Dice",
              f"torch threads {torch.get_num_threads()}, usable cores {tutorial.usable_cores()}"]
    print(format_table(rows, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
