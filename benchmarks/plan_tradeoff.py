"""What a 15-minute CPU budget should buy: resolution, patch size, patches per step and steps, measured.

The planner picks the finest spacing at which the smallest labelled objects span
``rules.MIN_OBJECT_VOXELS`` voxels, then the largest patch (the median foreground box with context)
and network that still get ``planner.STEPS_MIN`` steps, at ``rules.PATCHES_PER_STEP`` patches per
step. Each of those is a guess about data in general. This script trains one budget
run per variant of those rules on the same phantom, and scores each on the held-out cases exactly
as ``plan_vs_monai.py`` does (``radseg predict`` in a fresh interpreter, then ``radseg evaluate``'s
scoring on the images' own grids), so the rules can be chosen from measurements.

A variant changes only the CPU values of those rules for its run (the planner still measures this machine
and fits patch, network and schedule to the budget); the table lists what each plan then chose.
Read the rules off the families the planner is tuned on (``abdomen``, ``chest-pelvis``), never off
``irregular``, which is kept to check them.

Usage (about variants x (budget + 3 min) on 2 CPU cores; run it on an otherwise idle machine)::

    python benchmarks/plan_tradeoff.py --profile abdomen --seed 2027 --variants 6vox-2pps 3vox-8pps 3vox-2pps --workdir /tmp/tradeoff
    python benchmarks/plan_tradeoff.py --budget-minutes 2 --cases 4 --test 1 --variants planner  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan_vs_monai as bench  # noqa: E402  (the budget run and its scoring live there)

from radseg.pipeline.data.datalist import discover_dataset  # noqa: E402
from radseg.pipeline.data.phantom import write_phantom_dataset  # noqa: E402
from radseg.pipeline.data.phantom_profiles import PROFILES  # noqa: E402
from radseg.pipeline.plan import rules  # noqa: E402

logger = logging.getLogger("plan_tradeoff")

#: each variant's CPU values of the planner's rules (``rules.MIN_OBJECT_VOXELS``: voxels across the smallest
#: objects in plane; ``rules.PATCHES_PER_STEP``); "planner" keeps the planner as it is
VARIANTS = {
    "planner": {},
    "6vox-2pps": {"MIN_OBJECT_VOXELS": 6.0, "PATCHES_PER_STEP": 2},  # the rules before issue 22's measurement
    "3vox-8pps": {"MIN_OBJECT_VOXELS": 3.0, "PATCHES_PER_STEP": 8},
    "3vox-2pps": {"MIN_OBJECT_VOXELS": 3.0, "PATCHES_PER_STEP": 2},
    "6vox-8pps": {"MIN_OBJECT_VOXELS": 6.0, "PATCHES_PER_STEP": 8},
}


@contextlib.contextmanager
def planner_constants(changes: dict[str, float]):
    """Set the CPU entry of the planner's rule tables for one run, then put them back."""
    saved = {name: getattr(rules, name) for name in changes}
    try:
        for name, value in changes.items():
            setattr(rules, name, {**saved[name], "cpu": value})
        yield
    finally:
        for name, value in saved.items():
            setattr(rules, name, value)


def plan_facts(run_dir: Path) -> dict[str, str]:
    """Spacing, patch, patches per step, steps and patches seen of a finished budget run."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    train = cfg["train"]
    per_step = train["batch_size"] * cfg["augment"]["num_samples"]
    steps = train["max_epochs"] * train["iterations_per_epoch"]
    return {"spacing": "x".join(f"{v:g}" for v in cfg["preprocess"]["target_spacing"]),
            "patch": "x".join(map(str, train["roi_size"])), "per step": str(per_step), "steps": str(steps),
            "patches seen": str(steps * per_step),
            "widths": f"{cfg['network']['params']['channels'][0]}-{cfg['network']['params']['channels'][-1]}"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="abdomen", choices=PROFILES, help="phantom family (default abdomen)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="rule variants to train, in order (default: all)")
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="wall clock per run (default 15)")
    parser.add_argument("--cases", type=int, default=24, help="training cases (default 24)")
    parser.add_argument("--test", type=int, default=8, help="held-out cases (default 8)")
    parser.add_argument("--seed", type=int, default=2027, help="phantom seed (default 2027)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train every variant, print one table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radseg-plan-tradeoff-"))
    root = write_phantom_dataset(workdir / args.profile, num_cases=args.cases, num_test=args.test, seed=args.seed,
                                 overwrite=True, profile=args.profile)
    spec = discover_dataset(root)
    names = [spec.labels[1], spec.labels[2]]
    header = ["variant", "spacing", "patch", "widths", "per step", "steps", "patches seen", "train min",
              "liver Dice", "tumour Dice"]
    rows = []
    for name in args.variants:
        with planner_constants(VARIANTS[name]):
            result = bench.run_ours(spec, workdir / f"{args.profile}-{name}", args.budget_minutes)
        facts = plan_facts(workdir / f"{args.profile}-{name}" / "run")
        rows.append([name, *(facts[key] for key in header[1:7]), f"{result.train_seconds / 60:.1f}",
                     *(f"{result.dice[n]:.3f}" for n in names)])
        logger.info("%s: %s", name, rows[-1])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]))
    print(f"\n{args.profile} phantom, seed {args.seed}, {args.cases} training + {args.test} held-out cases, "
          f"budget {args.budget_minutes:g} min per run (fold all); variants: "
          + "; ".join(f"{n} = {VARIANTS[n] or 'the planner as it is'} on CPU" for n in args.variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
