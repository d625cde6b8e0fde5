"""The liver locator end to end: ``radseg predict`` with and without ``--locate-with``, one table.

Issue 13 asks that ``radseg predict --locate-with SLICE_RUN/best.pt`` run the 3D model only on the
z-range the slice model marks as liver (plus a margin), still write the full-size mask on the
input's grid, and on held-out chest-to-pelvis cases be at least 2x faster end to end with liver
Dice within 0.01 of the full run. This script measures exactly that, as a user runs it:

1. **data**: a ``chest-pelvis`` phantom (180-300 mm from the lungs to the pelvis, a spleen of the
   liver's HU, oblique cases; :mod:`radseg.pipeline.data.phantom_profiles`), ``--cases`` training
   cases. Held-out cases are the next ``--test`` indices, i.e. the cases
   ``radseg phantom --profile chest-pelvis --cases N --test T --seed S`` writes to ``imagesTs`` and
   ``labelsTs``, in two sets: **native** (the profile's own 180-300 mm field of view) and **long**
   (the same anatomy, same grid in plane and same slice spacing, rendered ``--fov-mm`` tall, 480 mm
   by default like a chest-abdomen-pelvis CT; the liver then covers about a quarter of it).
2. **models**: a small 3D model (``demo`` preset, ``--spacing``, ``--epochs``, fold ``all``) and a
   slice classifier (``slices`` preset) trained here on the training cases, or runs passed with
   ``--run3d`` / ``--run2d`` (they must not have trained on the held-out indices).
3. **measurement**: per set, ``python -m radseg predict --model RUN3D --input IMAGES --output OUT
   --device cpu`` (full) and the same with ``--locate-with RUN2D --locate-margin-mm M`` (located),
   each command timed whole by the wall clock (interpreter start, imports, model loading, every
   case read, predicted, taken back to its grid and written); then both again with
   ``--largest-component``. The order alternates (full first, then located first) so neither
   variant always runs on a cold file cache.
4. **scores**: each written mask is read with nibabel and checked to have its input's shape and
   affine, then scored on the input's own grid against the held-out label: liver Dice as
   ``prediction > 0`` against ``label > 0`` (liver including tumour; labels 1 liver, 2 tumour) and
   tumour Dice (``== 2``), with :func:`radseg.pipeline.evaluate.metrics.overlap_scores`.

The summary table has one row per (set, postprocessing): wall seconds of each command, their
ratio (the speed-up), the network stage predict logs (locator included) summed over cases, the mean
liver Dice of both with the mean and largest per-case difference, and the mean tumour Dice (over
cases where it is defined: a case without tumour in label and mask has none). A per-case table
follows with the slices of the 3D model's preprocessed grid the locator kept (parsed from predict's
log) and both liver Dice. Targets: speed-up >= 2x, |located - full| liver Dice <= 0.01.
``--repeats R`` runs every command R times and keeps the fastest, for a machine shared with others.

Usage (about 13 minutes on 2 CPU cores with the defaults, estimated from timed parts: phantom 0.5,
3D training 5.5, slice training 1, eight predict commands over 4 + 4 cases 6)::

    python benchmarks/slices_locator.py
    python benchmarks/slices_locator.py --run3d RUN3D/best.pt --run2d RUN2D/best.pt   # reuse trained runs
    python benchmarks/slices_locator.py --cases 4 --test 1 --epochs 1 --iterations 2 \\
        --slice-epochs 1 --fov-mm 360                                                  # smoke run, ~3 minutes

Runs passed in must not have trained on the held-out indices ``--cases`` .. ``--cases + --test - 1``
of ``--seed``: e.g. trained on ``radseg phantom --profile chest-pelvis --cases N --seed S``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from radseg.atomic import atomic_path
from radseg.configs import load_config
from radseg.pipeline.core.checkpoint import BEST, LAST
from radseg.pipeline.data.phantom import LABELS, write_phantom_dataset
from radseg.pipeline.data.phantom_anatomy import _rasterize, _to_nifti
from radseg.pipeline.data.phantom_profiles import (
    PROFILES, _chest_pelvis_anatomy, _long_grid, _oblique_rotation, _tilted, make_profile_case,
)
from radseg.pipeline.evaluate.metrics import overlap_scores
from radseg.pipeline.slices.fit import fit_slices
from radseg.pipeline.train.fit import fit

PROFILE = "chest-pelvis"
REPO = Path(__file__).resolve().parents[1]
TUMOUR = next(int(value) for value, name in LABELS.items() if name == "tumour")
#: largest disagreement (mm) allowed between a mask's affine and its input's
_AFFINE_TOLERANCE_MM = 1e-3
_LOCATED = re.compile(r"liver located in slices (\d+)-(\d+) of (\d+)")
_NOT_FOUND = re.compile(r"the slice model found no liver slice")
_CASE_DONE = re.compile(r"radseg\.pipeline\.predict\.predict: case (\S+): \S+ \((.*)\)")
_STAGE = re.compile(r"(\w+) ([\d.]+) s")


def long_fov_case(seed: int, index: int, fov_mm: float) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Chest-pelvis case ``index`` (the anatomy and tilt of ``make_profile_case``) rendered ``fov_mm`` tall.

    The in-plane grid and slice spacing are the case's own; along z the grid is centred on the
    anatomy (lung apices to the pelvic floor), shifted only as far as needed to hold the whole liver.
    """
    rng = np.random.default_rng([seed, index, PROFILES.index(PROFILE)])
    anatomy = _chest_pelvis_anatomy(rng)
    grid = _long_grid(rng, anatomy.liver)
    tilt = _oblique_rotation(rng)
    organs = [anatomy.liver, *(blob for blob, _ in anatomy.distractors)]
    low = min(o.center[2] - o.reach()[2] for o in organs)
    high = max(o.center[2] + o.reach()[2] for o in organs)
    half, liver_reach = fov_mm / 2, anatomy.liver.reach()[2]
    liver_low, liver_high = anatomy.liver.center[2] - liver_reach, anatomy.liver.center[2] + liver_reach
    centre = float(np.clip((low + high) / 2, liver_high - half, liver_low + half))
    if liver_high - half > liver_low + half:  # shorter than the liver: centre on it
        centre = float(anatomy.liver.center[2])
    step = grid.z[1] - grid.z[0]
    count = int(round(fov_mm / step))
    grid.z = grid.body_center[2] + centre + (np.arange(count) - (count - 1) / 2) * step
    image, label = _rasterize(anatomy, grid, rng)
    return _tilted(_to_nifti(image, grid, "image"), tilt), _tilted(_to_nifti(label, grid, "label"), tilt)


@dataclass
class HeldOut:
    """One held-out set on disk: ``images/`` and ``labels/`` with the same file names."""

    name: str
    images: Path
    labels: Path


def write_held_out(folder: Path, name: str, seed: int, indices: range, fov_mm: float | None) -> HeldOut:
    """Write held-out cases ``indices`` (native field of view when ``fov_mm`` is None)."""
    held = HeldOut(name, folder / "images", folder / "labels")
    for sub in (held.images, held.labels):
        sub.mkdir(parents=True)
    for index in indices:
        pair = make_profile_case(PROFILE, seed, index) if fov_mm is None else long_fov_case(seed, index, fov_mm)
        for sub, image in zip((held.images, held.labels), pair):
            with atomic_path(sub / f"phantom_{index:03d}.nii.gz", keep_suffix=True) as tmp:
                nib.save(image, tmp)
    return held


def train_runs(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The 3D and slice checkpoints: those passed in, the others trained on a chest-pelvis phantom."""
    if args.run3d and args.run2d:
        return args.run3d, args.run2d
    data = write_phantom_dataset(root / "data", num_cases=args.cases, seed=args.seed, num_test=0, profile=PROFILE)
    run3d, run2d = args.run3d, args.run2d
    if run3d is None:
        spacing = ",".join(str(s) for s in args.spacing)
        # fold "all": every training case trains (fold 0's only monitor); one validation, at the end
        cfg = load_config("demo", [f"train.max_epochs={args.epochs}", f"train.iterations_per_epoch={args.iterations}",
                                   "train.device=cpu", f"train.val_interval={args.epochs}", "data.fold=all",
                                   "data.num_folds=4", f"preprocess.target_spacing=[{spacing}]", "cache.num_workers=0"])
        start = time.perf_counter()
        result = fit(cfg, data, root / "run3d", progress=False)
        print(f"3D model: {result} ({time.perf_counter() - start:.0f} s)", flush=True)
        run3d = root / "run3d" / (BEST if (root / "run3d" / BEST).is_file() else LAST)
    if run2d is None:
        cfg = load_config("slices", [f"train.max_epochs={args.slice_epochs}", "train.iterations_per_epoch=20",
                                     "train.device=cpu", "cache.num_workers=0", "data.num_folds=4"])
        result = fit_slices(cfg, data, root / "run2d", progress=False)
        print(f"slice model: {result}".replace("\n", "; "), flush=True)
        run2d = root / "run2d" / BEST
    return run3d, run2d


@dataclass
class PredictRun:
    """One ``radseg predict`` command: its wall time and, per case, what its log said."""

    wall_s: float
    kept: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    slices: dict[str, int] = field(default_factory=dict)
    stage_s: dict[str, dict[str, float]] = field(default_factory=dict)


def run_predict(run3d: Path, images: Path, output: Path, run2d: Path | None, margin_mm: float,
                largest: bool) -> PredictRun:
    """Run ``python -m radseg predict`` as a user would, timed whole; raise with its log if it fails."""
    command = [sys.executable, "-m", "radseg", "predict", "--model", str(run3d), "--input", str(images),
               "--output", str(output), "--device", "cpu"]
    if run2d is not None:
        command += ["--locate-with", str(run2d), "--locate-margin-mm", str(margin_mm)]
    if largest:
        command.append("--largest-component")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return _parse_log(done.stderr, PredictRun(wall))


def _parse_log(log: str, run: PredictRun) -> PredictRun:
    """Per case: the locator's kept slices (None: no liver found, full volume) and the stage seconds."""
    pending: tuple[int, int, int] | None = None
    for line in re.split(r"[\r\n]+", log):
        if found := _LOCATED.search(line):
            pending = tuple(int(v) for v in found.groups())
        elif _NOT_FOUND.search(line):
            pending = None
        elif done := _CASE_DONE.search(line):
            case = done.group(1)
            run.stage_s[case] = {stage: float(s) for stage, s in _STAGE.findall(done.group(2))}
            if pending is not None:
                run.kept[case], run.slices[case] = (pending[0], pending[1] + 1), pending[2]
            pending = None
    return run


def score_outputs(output: Path, held: HeldOut) -> dict[str, dict]:
    """Per case: the mask on its input's grid (shape, affine), liver and tumour Dice against the label."""
    scores = {}
    for image_path in sorted(held.images.glob("*.nii.gz")):
        case = image_path.name[:-len(".nii.gz")]
        image, label, mask = (nib.load(p) for p in (image_path, held.labels / image_path.name,
                                                    output / image_path.name))
        on_grid = mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=_AFFINE_TOLERANCE_MM)
        if not on_grid:
            raise RuntimeError(f"mask {output / image_path.name} has shape {mask.shape} and affine\n{mask.affine}\n"
                               f"but its input has shape {image.shape} and affine\n{image.affine}; "
                               "predict must write the mask on the input's grid")
        predicted, truth = np.asarray(mask.dataobj), np.asarray(label.dataobj)
        scores[case] = {"liver": overlap_scores(predicted > 0, truth > 0)[0],
                        "tumour": overlap_scores(predicted == TUMOUR, truth == TUMOUR)[0]}
    return scores


def measure_set(held: HeldOut, run3d: Path, run2d: Path, margin_mm: float, repeats: int) -> list[dict]:
    """Both postprocessings, full and located, on one held-out set: one summary row each."""
    rows = []
    for largest in (False, True):
        order = ("full", "located") if not largest else ("located", "full")
        runs, scores = {}, {}
        for variant in order:
            tag = f"{variant}-{'largest' if largest else 'raw'}"
            runs[variant], output = _fastest(repeats, run3d, held, tag, run2d if variant == "located" else None,
                                             margin_mm, largest)
            scores[variant] = score_outputs(output, held)
            print(f"  {held.name}, {'largest component' if largest else 'no postprocessing'}, {variant}: "
                  f"{runs[variant].wall_s:.1f} s", flush=True)
        rows.append({"set": held.name, "post": "largest comp." if largest else "none", "runs": runs,
                     "scores": scores})
    return rows


def _fastest(repeats: int, run3d: Path, held: HeldOut, tag: str, run2d: Path | None, margin_mm: float,
             largest: bool) -> tuple[PredictRun, Path]:
    """The fastest of ``repeats`` identical commands (each into a fresh folder: predict skips finished cases)."""
    best = None
    for repeat in range(repeats):
        output = held.images.parent / f"predicted-{tag}-{repeat}"
        run = run_predict(run3d, held.images, output, run2d, margin_mm, largest)
        if best is None or run.wall_s < best[0].wall_s:
            best = run, output
    return best


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summary_table(rows: list[dict]) -> str:
    """One line per (set, postprocessing): wall seconds, speed-up, Dice of full and located."""
    head = (f"{'set':<10}{'post':<15}{'cases':>6}{'full s':>8}{'loc s':>8}{'speed-up':>9}{'net full':>9}"
            f"{'net loc':>8}{'liver full':>11}{'liver loc':>10}{'dLiver':>8}{'max|d|':>8}{'tum full':>9}{'tum loc':>8}")
    lines = [head]
    for row in rows:
        full, located = row["runs"]["full"], row["runs"]["located"]
        cases = sorted(row["scores"]["full"])
        liver = {v: [row["scores"][v][c]["liver"] for c in cases] for v in ("full", "located")}
        tumour = {v: _mean([row["scores"][v][c]["tumour"] for c in cases]) for v in ("full", "located")}
        net = {v: sum(s.get("network", 0.0) for s in row["runs"][v].stage_s.values()) for v in ("full", "located")}
        diffs = [b - a for a, b in zip(liver["full"], liver["located"])]
        lines.append(
            f"{row['set']:<10}{row['post']:<15}{len(cases):>6}{full.wall_s:>8.1f}{located.wall_s:>8.1f}"
            f"{full.wall_s / located.wall_s:>8.2f}x{net['full']:>9.1f}{net['located']:>8.1f}"
            f"{_mean(liver['full']):>11.4f}{_mean(liver['located']):>10.4f}{_mean(diffs):>+8.4f}"
            f"{max(abs(d) for d in diffs):>8.4f}{tumour['full']:>9.4f}{tumour['located']:>8.4f}")
    return "\n".join(lines)


def case_table(rows: list[dict]) -> str:
    """One line per (set, case), no postprocessing: slices kept by the locator, liver Dice of both."""
    lines = [f"{'set':<10}{'case':<14}{'slices':>7}{'kept':>10}{'share':>7}{'liver full':>11}{'liver loc':>10}"
             f"{'dLiver':>8}"]
    for row in (r for r in rows if r["post"] == "none"):
        located = row["runs"]["located"]
        for case in sorted(row["scores"]["full"]):
            kept, slices = located.kept.get(case), located.slices.get(case)
            span = "all" if kept is None else f"{kept[0]}-{kept[1] - 1}"
            share = "1.00" if kept is None else f"{(kept[1] - kept[0]) / slices:.2f}"
            full, loc = row["scores"]["full"][case]["liver"], row["scores"]["located"][case]["liver"]
            lines.append(f"{row['set']:<10}{case:<14}{slices or '?':>7}{span:>10}{share:>7}{full:>11.4f}{loc:>10.4f}"
                         f"{loc - full:>+8.4f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="chest-pelvis training cases of both models")
    parser.add_argument("--test", type=int, default=4, help="held-out cases per set (indices after the training ones)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--fov-mm", type=float, default=480.0, help="z field of view of the long held-out set")
    parser.add_argument("--margin-mm", type=float, default=20.0, help="predict's --locate-margin-mm")
    parser.add_argument("--epochs", type=int, default=6, help="3D training epochs")
    parser.add_argument("--iterations", type=int, default=25, help="3D training iterations per epoch")
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 3.0], help="3D target spacing (mm)")
    parser.add_argument("--slice-epochs", type=int, default=4, help="slice classifier epochs (20 iterations each)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each predict command this many times and keep the fastest (a shared machine)")
    parser.add_argument("--run3d", type=Path, default=None, help="a trained 3D run's best.pt (skips 3D training)")
    parser.add_argument("--run2d", type=Path, default=None, help="a trained slice run's best.pt (skips its training)")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.cases < 4 or args.test < 1 or args.repeats < 1:
        sys.exit(f"--cases must be at least 4 (four folds), --test and --repeats at least 1, not {args.cases}, "
                 f"{args.test} and {args.repeats}")
    for flag, path in (("--run3d", args.run3d), ("--run2d", args.run2d)):
        if path is not None and not path.is_file():
            sys.exit(f"{flag} {path} is not a file; expected a run's best.pt")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radseg-locator-") as tmp:
        root = Path(tmp)
        run3d, run2d = train_runs(root, args)
        indices = range(args.cases, args.cases + args.test)
        sets = [write_held_out(root / "native", "native", args.seed, indices, None),
                write_held_out(root / "long", f"{args.fov_mm:.0f} mm", args.seed, indices, args.fov_mm)]
        rows = [row for held in sets for row in measure_set(held, run3d, run2d, args.margin_mm, args.repeats)]
    print(f"\nlocator through `radseg predict` on {args.test} held-out {PROFILE} cases per set (seed {args.seed}), "
          f"margin {args.margin_mm:.0f} mm; 3D {run3d if args.run3d else 'trained here'}, slices "
          f"{run2d if args.run2d else 'trained here'}; total {time.perf_counter() - start:.0f} s")
    print("wall s: the whole command; net s: predict's logged network stage summed over cases (locator included)")
    print(summary_table(rows))
    print("\nper case, no postprocessing (kept: slices of the 3D model's preprocessed grid)")
    print(case_table(rows))


if __name__ == "__main__":
    main()
