"""The liver locator: the 3D model on the liver's slab only against the whole volume, one table.

Held-out phantom cases are rendered with a chest-to-pelvis field of view (``--fov-mm`` along z,
480 mm by default, instead of the dataset's 120-160 mm; the phantom's body continues above and
below, its liver does not). Both systems share one preprocessing (the 3D run's chain, timed once);
then, per case:

* **full**: the 3D run's sliding-window predictor over the whole volume;
* **located**: :func:`radseg.pipeline.slices.locate.locate_z_range` (the slice classifier over every
  axial slice, ``--margin-mm`` added) then :func:`predict_in_z_range` (the same predictor on the
  slab, background elsewhere), locator time included.

Liver Dice (argmax, on the preprocessed grid) of both against the phantom's label. Writing the mask
back onto the input grid is the predict stage's and costs both the same; it is not timed here.
The 3D and slice models are trained first on an ordinary phantom (``--epochs`` short CPU runs), so
the Dice values are those of small models; what the table compares is full against located.

Usage (about 8 minutes on 2 CPU cores)::

    python benchmarks/slices_locator.py
    python benchmarks/slices_locator.py --epochs 1 --cases 4 --test 1   # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from radseg import keys
from radseg.configs import load_config
from radseg.networks import build_network
from radseg.pipeline.core.checkpoint import BEST, load_checkpoint
from radseg.pipeline.data import phantom_anatomy as anatomy_module
from radseg.pipeline.data.phantom import write_phantom_dataset
from radseg.pipeline.evaluate.metrics import dice_per_class
from radseg.pipeline.predict.inference import sliding_window_predict
from radseg.pipeline.slices.fit import fit_slices
from radseg.pipeline.slices.infer import load_slice_model
from radseg.pipeline.slices.locate import locate_z_range, predict_in_z_range
from radseg.pipeline.train.fit import fit
from radseg.transforms.fingerprint import ResolvedPreprocess
from radseg.transforms.preprocess import build_val_transforms


def long_fov_case(seed: int, index: int, fov_mm: float, folder: Path) -> dict:
    """A phantom case as :func:`make_phantom_case` draws it, rendered on a grid ``fov_mm`` tall."""
    rng = np.random.default_rng([seed, index])
    anatomy = anatomy_module._sample_anatomy(rng)
    grid = anatomy_module._sample_grid(rng)
    step = grid.z[1] - grid.z[0]
    count = int(round(fov_mm / step))
    grid.z = grid.z.mean() + (np.arange(count) - (count - 1) / 2) * step
    image, label = anatomy_module._rasterize(anatomy, grid, rng)
    paths = {}
    for name, array in ((keys.IMAGE, image), (keys.LABEL, label)):
        paths[name] = str(folder / f"long_{index:03d}_{name}.nii.gz")
        nib.save(anatomy_module._to_nifti(array, grid, name), paths[name])
    return {**paths, keys.CASE_ID: f"long_{index:03d}"}


def _train(data: Path, root: Path, epochs: int) -> tuple[Path, Path]:
    cfg3d = load_config("demo", [f"train.max_epochs={epochs}", "train.iterations_per_epoch=15", "train.device=cpu",
                                 "train.val_interval=100", "preprocess.target_spacing=[3,3,3]", "data.num_folds=2",
                                 "train.roi_size=[64,64,32]", "cache.num_workers=0"])
    fit(cfg3d, data, root / "run3d", progress=False)
    cfg2d = load_config("slices", [f"train.max_epochs={epochs}", "train.iterations_per_epoch=20", "train.device=cpu",
                                   "train.batch_size=16", "preprocess.target_spacing=[3,3,3]", "cache.num_workers=0",
                                   "data.num_folds=2"])
    fit_slices(cfg2d, data, root / "run2d", progress=False)
    return root / "run3d" / BEST if (root / "run3d" / BEST).is_file() else root / "run3d" / "last.pt", root / "run2d" / BEST


def _network(checkpoint: Path):
    saved = load_checkpoint(checkpoint)
    cfg = load_config(saved["config"])
    network = build_network(cfg.network, in_channels=saved["in_channels"], out_channels=saved["out_channels"])
    network.load_state_dict(saved["model"])
    return network.eval(), cfg, saved["preprocess"]


def _timed(work):
    start = time.perf_counter()
    with torch.no_grad():
        value = work()
    return value, time.perf_counter() - start


def measure(case: dict, network, cfg, preprocess: dict, slice_model, margin_mm: float) -> dict:
    """One case: preprocessing, full and located inference, Dice of each."""
    item, prep_s = _timed(lambda: build_val_transforms(ResolvedPreprocess.from_dict(preprocess))(case))
    image, label = item[keys.IMAGE], item[keys.LABEL][0]

    def predict(volume):
        return sliding_window_predict(network, volume, cfg.inference, cfg.train.roi_size, device="cpu")

    full, full_s = _timed(lambda: predict(image[None]))
    z_range, locate_s = _timed(lambda: locate_z_range(slice_model, image, margin_mm, image_preprocess=preprocess))
    located, slab_s = _timed(lambda: predict_in_z_range(predict, image[None], z_range, outside=[1e4, 0.0, 0.0]))
    liver = np.flatnonzero((label > 0).any(0).any(0).numpy())
    covered = z_range is None or (z_range[0] <= liver.min() and liver.max() < z_range[1])
    truth = (label > 0).long()
    dice = [float(dice_per_class((out.argmax(1)[0] > 0).long(), truth, 2)[0]) for out in (full, located)]
    kept = image.shape[-1] if z_range is None else z_range[1] - z_range[0]
    return {"case": case[keys.CASE_ID], "slices": image.shape[-1], "kept": kept, "covered": covered,
            "prep_s": prep_s, "full_s": full_s, "locate_s": locate_s, "slab_s": slab_s,
            "dice_full": dice[0], "dice_located": dice[1]}


def _table(rows: list[dict]) -> str:
    head = (f"{'case':<10}{'slices':>7}{'kept':>6}{'liver in':>9}{'prep s':>8}{'full s':>8}{'locate s':>9}"
            f"{'slab s':>8}{'speed-up':>9}{'e2e x':>7}{'Dice full':>10}{'Dice loc':>9}{'dDice':>8}")
    lines = [head]
    for r in rows:
        speed = r["full_s"] / (r["locate_s"] + r["slab_s"])
        e2e = (r["prep_s"] + r["full_s"]) / (r["prep_s"] + r["locate_s"] + r["slab_s"])
        lines.append(f"{r['case']:<10}{r['slices']:>7}{r['kept']:>6}{str(r['covered']):>9}{r['prep_s']:>8.1f}"
                     f"{r['full_s']:>8.1f}{r['locate_s']:>9.1f}{r['slab_s']:>8.1f}{speed:>8.2f}x{e2e:>6.2f}x"
                     f"{r['dice_full']:>10.4f}{r['dice_located']:>9.4f}{r['dice_located'] - r['dice_full']:>+8.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="phantom training cases of both models")
    parser.add_argument("--test", type=int, default=3, help="held-out long-FOV cases")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fov-mm", type=float, default=480.0)
    parser.add_argument("--margin-mm", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_phantom_dataset(root / "data", num_cases=args.cases, seed=args.seed, num_test=0)
        run3d, run2d = _train(data, root, args.epochs)
        network, cfg, preprocess = _network(run3d)
        slice_model = load_slice_model(run2d, "cpu")
        cases = [long_fov_case(args.seed, 1000 + i, args.fov_mm, root) for i in range(args.test)]
        rows = [measure(case, network, cfg, preprocess, slice_model, args.margin_mm) for case in cases]
    print(f"locator: {args.fov_mm:.0f} mm field of view, {args.margin_mm:.0f} mm margin; speed-up = full s / "
          "(locate s + slab s); e2e x adds the shared preprocessing to both")
    print(_table(rows))


if __name__ == "__main__":
    main()
