"""One model against a 5-fold ensemble at the same total budget, both scored on held-out cases.

Issue 26's benchmark. On one phantom (``chest-pelvis`` by default: 24 training and 8 held-out
cases), on this machine, in one run:

* **single model**: ``radseg train --budget B --fold all`` (planning and training inside ``B``), then
  ``radseg predict`` with its ``best.pt``;
* **5-fold ensemble**: ``radseg train --budget B --folds all-cv`` (planned once, ``B`` split across the
  five folds), its out-of-fold scoring (timed apart: the single model has none), then
  ``radseg predict --model RUN`` (the five folds' mean probabilities, window by window).

Both predictions are scored by ``radseg evaluate``'s code against ``labelsTs``: Dice per class, mean
over the held-out cases with the 95% bootstrap CI. ``radseg predict`` runs in a fresh interpreter
under ``/usr/bin/time``, so its wall clock and peak RSS are the whole command's. On 2 CPU cores a
budget split five ways may lose; the table says by how much.

Usage (about 2 x budget + 10 min; run it on an otherwise idle machine)::

    python benchmarks/cv_ensemble.py                              # 15 min each
    python benchmarks/cv_ensemble.py --budget-minutes 4 --cases 10 --test 4 --profile abdomen   # smoke
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import radseg
from radseg.pipeline.data.datalist import discover_dataset
from radseg.pipeline.data.phantom import write_phantom_dataset
from radseg.pipeline.evaluate.evaluate_folder import evaluate_folder
from radseg.pipeline.predict.runtime_cache import cpu_description
from radseg.pipeline.train.budget_run import train_with_budget
from radseg.pipeline.train.folds_run import train_folds

logger = logging.getLogger("cv_ensemble")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="chest-pelvis", choices=("abdomen", "chest-pelvis", "irregular"))
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="training budget of each system")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    return parser.parse_args(argv)


def predict_timed(models: list[Path], images: Path, output: Path) -> tuple[float, float]:
    """``radseg predict`` in a fresh interpreter: (wall seconds, peak RSS in GiB)."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "radseg", "predict", "--model", *map(str, models),
               "--input", str(images), "--output", str(output), "--device", "cpu", "--overwrite"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(radseg.__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode:
        raise RuntimeError(f"radseg predict failed ({completed.returncode}): {completed.stderr[-2000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", completed.stderr).group(1))
    return seconds, peak_kib / 2 ** 20


def score(data: Path, predictions: Path, output: Path) -> dict[str, dict]:
    """Dice mean and 95% CI per foreground class over the held-out cases."""
    result = evaluate_folder(predictions, data, output, overwrite=True, progress=False)
    return {name: metrics["dice"] for name, metrics in result.summary["metrics"].items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="radseg-cv-ensemble-"))
    budget = f"{args.budget_minutes}m"
    try:
        data = write_phantom_dataset(workdir / "data", num_cases=args.cases, num_test=args.test, seed=args.seed,
                                     profile=args.profile, overwrite=True)
        images = data / "imagesTs"
        rows = []
        start = time.perf_counter()
        train_with_budget(data, workdir / "single", budget, device="cpu", fold="all", overwrite=True)
        single_train = time.perf_counter() - start
        seconds, peak = predict_timed([workdir / "single"], images, workdir / "pred_single")
        rows.append(("single model (fold all)", single_train, None, seconds, peak,
                     score(data, workdir / "pred_single", workdir / "eval_single")))
        start = time.perf_counter()
        result = train_folds(data, workdir / "cv", list(range(args.folds)), budget=budget, device="cpu",
                             overwrite=True, overrides=[f"data.num_folds={args.folds}"], score=False)
        cv_train = time.perf_counter() - start
        start = time.perf_counter()
        from radseg.pipeline.evaluate.out_of_fold import score_out_of_fold

        oof = score_out_of_fold(workdir / "cv", data, device="cpu", progress=False)
        oof_seconds = time.perf_counter() - start
        seconds, peak = predict_timed([workdir / "cv"], images, workdir / "pred_cv")
        rows.append((f"{args.folds}-fold ensemble", cv_train, oof_seconds, seconds, peak,
                     score(data, workdir / "pred_cv", workdir / "eval_cv")))
        print(_table(rows, args, discover_dataset(data, check_files=False)))
        print(f"\nfolds: {result}\nout-of-fold: {oof}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0



def _table(rows, args, spec) -> str:
    names = [spec.labels[i] for i in sorted(spec.labels) if i]
    head = ["system", "train min", "OOF scoring s", "predict s", "peak RSS GiB",
            *[f"{n} Dice [95% CI]" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, train_s, oof_s, pred_s, peak, dice in rows:
        cells = [name, f"{train_s / 60:.1f}", "-" if oof_s is None else f"{oof_s:.0f}", f"{pred_s:.1f}",
                 f"{peak:.2f}"]
        cells += [f"{dice[n]['mean']:.3f} [{dice[n]['ci_low']:.3f}-{dice[n]['ci_high']:.3f}]" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{args.profile} phantom, {args.cases} training + {args.test} held-out cases, seed {args.seed}; "
                 f"budget {args.budget_minutes:g} min per system; CPU {cpu_description()}, "
                 f"torch threads {torch.get_num_threads()}; predict: the whole command (start-up included)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
