"""bf16 autocast training against float32 on this CPU: step time and held-out Dice, over seeds.

Issue 24 lets ``train.amp: auto`` choose bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) only
where the demo's held-out Dice stays within 0.01 of float32 and the step is faster. For each seed:

* the demo phantom written with that seed (12 training cases, ``--test`` held-out cases);
* the demo preset trained twice on it, ``train.amp=none`` then ``train.amp=bf16`` (``train.seed`` =
  the seed, so both draw the same patches), each in a fresh process;
* each run's ``best.pt`` applied to the held-out cases by ``radseg predict``'s code in float32
  torch (so only the training precision differs), Dice per class on the original grid.

Columns: seconds of training steps (``epoch_time`` summed, validation excluded), the speed-up, the
held-out liver and tumour Dice. The last rows give the mean over seeds, the seed-to-seed spread of
float32 itself, and whether bf16 qualifies (mean Dice within 0.01 of float32 for every class and
faster). ``python benchmarks/cpu_speed.py --demo --bf16`` runs this too.

    python benchmarks/bf16_training.py                  # 3 seeds: about 30 minutes on 2 cores with native bf16
    python benchmarks/bf16_training.py --seeds 1 --test 2   # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the margin the issue allows between bf16 and float32 held-out Dice, per class
DICE_MARGIN = 0.01
TRAIN_CASES = 12


def _child(args) -> None:
    """One training at one precision, then the held-out scores, as one JSON line."""
    from radseg.configs import load_config
    from radseg.pipeline.core.checkpoint import BEST
    from radseg.pipeline.data.datalist import discover_dataset, to_datalist
    from radseg.pipeline.data.phantom import write_phantom_dataset
    from radseg.pipeline.predict.predict import PredictOptions
    from radseg.pipeline.train.demo import _predict_and_score
    from radseg.pipeline.train.fit import fit

    work = Path(args.workdir)
    data = work / "data"
    if not data.exists():
        write_phantom_dataset(data, num_cases=TRAIN_CASES, seed=args.seed, num_test=args.test)
    cfg = load_config("demo", [f"train.amp={args.amp}", f"train.seed={args.seed}", "train.device=cpu"])
    run = work / f"run-{args.amp}"
    fit(cfg, data=data, output=run, overwrite=True)
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # the demo's own held-out scoring, the network in float32 torch so that only training differs
    means = _predict_and_score(run / BEST, to_datalist(discover_dataset(data).test), work / f"pred-{args.amp}", "cpu",
                               PredictOptions(progress=False, runtime="torch", precision="fp32")).mean()
    steps = len(rows) * cfg.train.iterations_per_epoch
    print(json.dumps({"train_s": sum(float(r["epoch_time"]) for r in rows), "steps": steps, "dice": means}))


def _run(amp: str, seed: int, work: Path, test: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--amp", amp, "--seed", str(seed),
               "--workdir", str(work), "--test", str(test)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{amp} training (seed {seed}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bf16_rows(seeds: int = 3, test: int = 8) -> list[str]:
    """The table: one row per (seed, precision), then means, spread and the verdict."""
    import torch

    from radseg.pipeline.predict.runtime_cache import cpu_description

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    lines = [f"bf16 against float32 training of the demo preset on {cpu_description()}",
             f"({TRAIN_CASES} training + {test} held-out phantom cases per seed; predict in float32 torch)", ""]
    if not native:
        return lines + ["not run: this CPU has no native bf16 (AVX512-BF16 or AMX); bf16 would be emulated, "
                        "far slower, and train.amp auto keeps float32 here"]
    header = f"{'seed':>4} {'precision':<9} {'train s':>8} {'s/step':>7} {'speed-up':>8} {'liver':>7} {'tumour':>7}"
    lines.append(header)
    results = {"none": [], "bf16": []}
    for seed in range(seeds):
        with tempfile.TemporaryDirectory(prefix="radseg-bf16-") as tmp:
            for amp in ("none", "bf16"):
                out = _run(amp, seed, Path(tmp), test)
                results[amp].append(out)
                speed = results["none"][-1]["train_s"] / out["train_s"]
                liver, tumour = (out["dice"].get(name, float("nan")) for name in ("liver", "tumour"))
                lines.append(f"{seed:>4} {('fp32' if amp == 'none' else 'bf16'):<9} {out['train_s']:>8.1f} "
                             f"{out['train_s'] / out['steps']:>7.3f} {speed:>7.2f}x {liver:>7.3f} {tumour:>7.3f}")
    return lines + [""] + _summary(results)


def _summary(results: dict) -> list[str]:
    names = sorted(results["none"][0]["dice"])
    lines, ok = [], True
    seconds = {amp: statistics.mean(r["train_s"] for r in runs) for amp, runs in results.items()}
    speed = seconds["none"] / seconds["bf16"]
    for name in names:
        fp32 = [r["dice"][name] for r in results["none"]]
        bf16 = [r["dice"][name] for r in results["bf16"]]
        gap = statistics.mean(bf16) - statistics.mean(fp32)
        spread = max(fp32) - min(fp32)
        ok = ok and gap >= -DICE_MARGIN
        lines.append(f"{name}: mean held-out Dice fp32 {statistics.mean(fp32):.3f}, bf16 {statistics.mean(bf16):.3f} "
                     f"(bf16 - fp32 {gap:+.3f}; fp32 seed-to-seed range {spread:.3f})")
    verdict = "qualifies" if ok and speed > 1.0 else "does not qualify"
    lines.append(f"training steps {speed:.2f}x faster in bf16; bf16 {verdict} for train.amp auto on this CPU "
                 f"(asked: every class within {DICE_MARGIN} of float32, and faster)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="phantom and training seeds 0..N-1 (default 3)")
    parser.add_argument("--test", type=int, default=8, help="held-out cases per seed (default 8)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--amp", choices=["none", "bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from radseg.allocator import ensure_allocator

        ensure_allocator()
        _child(args)
    else:
        print("\n".join(bf16_rows(args.seeds, args.test)))


if __name__ == "__main__":
    main()
