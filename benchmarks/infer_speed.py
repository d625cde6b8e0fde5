"""radseg predict against MONAI's tutorial inference pipeline: seconds per stage and peak RSS, one table.

Both systems run the same network (MONAI's spleen-tutorial UNet, channels 16-256, 2 residual units,
batch norm, 3 output classes, fixed random weights, background logit +0.3), window 96³, overlap 0.5, sw_batch_size 4,
1.5×1.5×2 mm, CT window -57..164 HU, on the same scans:

* **radseg**: :func:`radseg.pipeline.predict.predict.predict_case` (read and preprocess with the
  training chain, windows outside the body skipped, back to the grid slab by slab, NIfTI written);
* **monai-tutorial**: ``LoadImaged → EnsureChannelFirstd → Orientationd → Spacingd →
  ScaleIntensityRanged → CropForegroundd → sliding_window_inference → Invertd → AsDiscreted →
  SaveImaged`` (MONAI's default readers: nibabel for NIfTI, pydicom for DICOM folders).

Stages: read (scan into memory), preprocess, network (the sliding window), back to grid, write.
Each (system, scan) runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own. Scans:
synthetic CTs of 512×512×141 and 512×512×800 (a body cylinder with organs, int16 HU, .nii.gz,
made once in a temporary folder) and the TotalSegmentator DICOM series in ../shared/data/real.

With ``--bundle``, a second table: the model zoo's spleen bundle configuration
(``../shared/data/monai_bundles/spleen_ct_segmentation``, random weights with the same background
bias saved as ``models/model.pt`` in a temporary copy) run end to end by MONAI's own
``python -m monai.bundle run`` against the same bundle run by ``radseg predict --model BUNDLE``, on
the same synthetic scans: wall seconds of each command (imports included) and its peak RSS
(``ru_maxrss`` of the command's largest process, from ``/usr/bin/time``-like ``RUSAGE_CHILDREN``
of a fresh wrapper).

Usage (about 10 minutes on 2 CPU cores; the 800-slice MONAI run needs ~13 GB of RAM)::

    python benchmarks/infer_speed.py
    python benchmarks/infer_speed.py --slices 141 --skip-dicom    # smaller
    python benchmarks/infer_speed.py --slices 141 --skip-dicom --bundle --bundle-only   # the zoo bundle rows
    python benchmarks/infer_speed.py --runtime auto        # radseg's network run by predict --runtime auto
    python benchmarks/infer_speed.py --device cuda --amp   # both systems' windows on the GPU, bf16/fp16 autocast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DICOM = REPO.parent / "shared" / "data" / "real" / "totalseg_ct" / "example_ct_dicom"
STAGES = ("read", "preprocess", "network", "to_grid", "write")
SPACING = (1.5, 1.5, 2.0)
WINDOW_HU = (-57.0, 164.0)
ROI, OVERLAP, SW_BATCH = (96, 96, 96), 0.5, 4


def make_ct(path: Path, slices: int, seed: int = 0) -> Path:
    """A synthetic 512×512×N abdominal CT: air, a body ellipse, liver, spleen, spine (int16 HU)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:512].astype(np.float32)
    body = ((x - 256) / 200) ** 2 + ((y - 270) / 150) ** 2 < 1
    liver = ((x - 190) / 70) ** 2 + ((y - 250) / 60) ** 2 < 1
    spleen = ((x - 340) / 35) ** 2 + ((y - 260) / 40) ** 2 < 1
    spine = ((x - 256) / 20) ** 2 + ((y - 370) / 20) ** 2 < 1
    volume = np.empty((512, 512, slices), dtype=np.int16)
    noise = rng.normal(0, 15, size=(64, 512, 512)).astype(np.float32)
    for z in range(slices):
        plane = np.where(body, 30.0, -1000.0)
        in_organs = 0.2 * slices < z < 0.8 * slices
        if in_organs:
            plane[liver], plane[spleen] = 60.0, 50.0
        plane[spine] = 400.0
        volume[:, :, z] = (plane + noise[z % 64]).T.astype(np.int16)
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])  # LPS-stored like most CT exports
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


#: added to the background logit: about two standard deviations of the random network's margin,
#: so most voxels are background as with a trained network (radseg's back-to-grid work grows
#: with the voxels on class boundaries; MONAI's does not depend on the content)
BACKGROUND_BIAS = 0.3


def _network():
    import torch
    from monai.networks.nets import UNet

    class _Biased(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.unet = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256),
                             strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
            self.register_buffer("bias", torch.tensor([BACKGROUND_BIAS, 0.0, 0.0]).view(1, 3, 1, 1, 1))

        def forward(self, x):
            return self.unet(x) + self.bias

    return _Biased().eval()


def run_radseg(scan: Path, out: Path, device: str = "cpu", amp: bool = False, runtime: str = "torch") -> dict:
    """radseg's predict_case, stage by stage (its own clock)."""
    import torch

    from radseg.configs.loader import load_config
    from radseg.pipeline.predict.inputs import find_cases
    from radseg.pipeline.predict.model import PredictModel
    from radseg.pipeline.predict.predict import PredictOptions, predict_case
    from radseg.pipeline.predict.runtime import used_runtimes
    from radseg.transforms.fingerprint import ResolvedPreprocess

    cfg = load_config("demo", [f"train.roi_size={list(ROI)}", f"inference.overlap={OVERLAP}",
                               f"inference.sw_batch_size={SW_BATCH}", "inference.blend_mode=gaussian"])
    # the body crop at the baseline's threshold (its CropForegroundd keeps HU above the window's low end)
    resolved = ResolvedPreprocess(modality="CT", target_spacing=SPACING, ct_window=WINDOW_HU,
                                  ct_normalization="window", crop_foreground=True, body_threshold_hu=WINDOW_HU[0])
    model = PredictModel(network=_network().to(device), cfg=cfg, preprocess=resolved,
                         label_names={0: "bg", 1: "a", 2: "b"}, in_channels=1, num_classes=3,
                         device=torch.device(device), amp=_amp(device, amp), source="benchmark")
    (case,) = find_cases([scan])
    options = PredictOptions(progress=False, overwrite=True, check_modality=False, runtime=runtime)
    if runtime != "torch":  # the measurement is made once per network and machine, then cached: not a case's time
        from radseg.pipeline.predict.prepare import prepare_case
        from radseg.pipeline.predict.runtime import choose_runtime

        start = time.perf_counter()
        choose_runtime(model, prepare_case(case, model, check_modality=False).image, runtime)
        untimed = time.perf_counter() - start
    result = predict_case(model, case, out, options)
    seconds = dict(result.seconds)
    seconds["untimed"] = untimed if runtime != "torch" else 0.0
    seconds["runtime"] = ", ".join(used_runtimes(model))
    seconds["to_grid"] += seconds.pop("postprocess")
    return seconds


def _amp(device: str, amp: bool):
    import torch

    from radseg.pipeline.predict.inference import resolve_amp

    return resolve_amp("auto" if amp else "none", device)


def run_monai(scan: Path, out: Path, device: str = "cpu", amp: bool = False, runtime: str = "torch") -> dict:
    """MONAI's tutorial pipeline, stage by stage."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (AsDiscreted, Compose, CropForegroundd, EnsureChannelFirstd, Invertd,
                                  LoadImaged, Orientationd, SaveImaged, ScaleIntensityRanged, Spacingd)

    pre = Compose([
        LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=SPACING, mode="bilinear"),
        ScaleIntensityRanged("image", a_min=WINDOW_HU[0], a_max=WINDOW_HU[1], b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd("image", source_key="image"),
    ])
    seconds, clock = {}, time.perf_counter()
    data = pre.transforms[0]({"image": str(scan)})
    seconds["read"], clock = time.perf_counter() - clock, time.perf_counter()
    for transform in pre.transforms[1:]:
        data = transform(data)
    seconds["preprocess"], clock = time.perf_counter() - clock, time.perf_counter()
    network = _network().to(device)
    dtype = _amp(device, amp)
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        pred = sliding_window_inference(data["image"][None], ROI, SW_BATCH, network, overlap=OVERLAP, mode="gaussian",
                                        sw_device=device, device="cpu")
    data["pred"] = pred[0]
    seconds["network"], clock = time.perf_counter() - clock, time.perf_counter()
    post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
                    AsDiscreted("pred", argmax=True)])
    with torch.inference_mode():
        data = post(data)
    seconds["to_grid"], clock = time.perf_counter() - clock, time.perf_counter()
    SaveImaged("pred", output_dir=str(out), output_postfix="seg", output_dtype=np.uint8, resample=False,
               separate_folder=False)(data)
    seconds["write"] = time.perf_counter() - clock
    return seconds


def _worker(system: str, scan: str, out: str, device: str, amp: str, runtime: str) -> None:
    import torch

    import monai.transforms  # noqa: F401 - imports are not part of a scan's time (a batch pays them once)

    import radseg.pipeline.predict.predict  # noqa: F401

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    start = time.perf_counter()
    seconds = (run_radseg if system == "radseg" else run_monai)(Path(scan), Path(out), device, amp == "1", runtime)
    seconds["total"] = time.perf_counter() - start - seconds.pop("untimed", 0.0)
    seconds["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print("RESULT " + json.dumps(seconds))


def _measure(system: str, scan: Path, out: Path, args: argparse.Namespace) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--worker", system, str(scan), str(out), args.device, str(int(args.amp)),
               args.runtime]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:120]}
    return json.loads(lines[-1][len("RESULT "):])


def _table(rows: list[tuple[str, str, dict]]) -> str:
    head = f"{'scan':<27}{'system':<30}" + "".join(f"{s:>11}" for s in (*STAGES, "total")) + \
        f"{'non-net %':>11}{'peak GB':>9}{'speed-up':>10}"
    lines = [head, "-" * len(head)]
    baseline = {scan: r for scan, system, r in rows if system == "monai-tutorial"}
    for scan, system, r in rows:
        if "error" in r:
            lines.append(f"{scan:<27}{system:<30}failed: {r['error']}")
            continue
        system = f"{system} {r['runtime']}" if "runtime" in r else system
        outside = 100 * (r["total"] - r["network"]) / r["total"]
        base = baseline.get(scan, {})
        speedup = f"{base['total'] / r['total']:.2f}x" if "total" in base and system.startswith("radseg") else ""
        lines.append(f"{scan:<27}{system:<30}" + "".join(f"{r[s]:>11.1f}" for s in (*STAGES, "total")) +
                     f"{outside:>11.1f}{r['peak_rss_gb']:>9.2f}{speedup:>10}")
    return "\n".join(lines)


ZOO_SPLEEN = REPO.parent / "shared" / "data" / "monai_bundles" / "spleen_ct_segmentation"
#: run a command and print the largest peak RSS among its processes (KiB), in a fresh wrapper
_RSS_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def make_spleen_bundle(folder: Path) -> Path:
    """A copy of the zoo's spleen bundle with seeded random weights (background logit +BACKGROUND_BIAS)."""
    import shutil

    import torch

    from monai.networks.nets import UNet

    shutil.copytree(ZOO_SPLEEN, folder)
    (folder / "models").mkdir()
    torch.manual_seed(0)
    state = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                 strides=(2, 2, 2, 2), num_res_units=2, norm="batch").state_dict()
    last_bias = [k for k, v in state.items() if k.endswith("bias") and v.shape == (2,)][-1]
    state[last_bias] = state[last_bias] + torch.tensor([BACKGROUND_BIAS, 0.0])
    torch.save(state, folder / "models" / "model.pt")
    return folder


def _timed(command: list[str]) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KB")]
    if done.returncode != 0 or not peak:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:120]}
    return {"total": seconds, "peak_rss_gb": int(peak[-1]) / 2 ** 20}


def bundle_rows(label: str, scan: Path, tmp: Path) -> list[tuple[str, str, dict]]:
    """The zoo spleen bundle run by MONAI and by radseg on one scan, end to end."""
    bundle = make_spleen_bundle(tmp / f"bundle-{scan.stem}")
    data = tmp / f"data-{scan.stem}" / "imagesTs"  # the zoo config reads dataset_dir/imagesTs/*.nii.gz
    data.mkdir(parents=True)
    os.symlink(scan, data / scan.name)
    monai_run = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
                 "--bundle_root", str(bundle), "--dataset_dir", str(data.parent), "--output_dir", str(tmp / "zoo-monai")]
    radseg_run = [sys.executable, "-m", "radseg", "predict", "--model", str(bundle), "-i", str(data), "-o",
                  str(tmp / "zoo-radseg"), "--overwrite", "--no-modality-check"]
    return [(label, "zoo bundle, MONAI", _timed(monai_run)), (label, "zoo bundle, radseg", _timed(radseg_run))]


def _bundle_table(rows: list[tuple[str, str, dict]]) -> str:
    lines = [f"{'scan':<27}{'system':<22}{'end to end s':>14}{'peak GB':>9}{'speed-up':>10}"]
    base = {scan: r for scan, system, r in rows if system.endswith("MONAI")}
    for scan, system, r in rows:
        if "error" in r:
            lines.append(f"{scan:<27}{system:<22}failed: {r['error']}")
            continue
        speedup = f"{base[scan]['total'] / r['total']:.2f}x" if system.endswith("radseg") and "total" in base[scan] else ""
        lines.append(f"{scan:<27}{system:<22}{r['total']:>14.1f}{r['peak_rss_gb']:>9.2f}{speedup:>10}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[141, 800])
    parser.add_argument("--skip-dicom", action="store_true")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--bundle", action="store_true", help="also the zoo spleen bundle: MONAI's run against radseg's")
    parser.add_argument("--bundle-only", action="store_true", help="with --bundle: only the bundle rows")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both systems run the windows")
    parser.add_argument("--amp", action="store_true", help="bf16 (fp16 where unsupported) autocast on CUDA, both systems")
    parser.add_argument("--runtime", default="torch", choices=("torch", "auto", "onnxruntime", "openvino"),
                        help="radseg's predict --runtime (auto: measured once before the case, not timed)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    rows, bundle = [], []
    with tempfile.TemporaryDirectory(prefix="radseg-infer-") as tmp:
        scans = [(f"synthetic 512x512x{n}", make_ct(Path(tmp) / f"ct{n}.nii.gz", n)) for n in args.slices]
        if not args.skip_dicom and DICOM.is_dir():
            scans.append(("totalseg DICOM 512x512x20", DICOM))
        for label, scan in scans:
            if args.bundle and scan.is_file():
                bundle += bundle_rows(label, scan, Path(tmp))
                print(f"{label}: {bundle[-2:]}", file=sys.stderr)
            for system in ("radseg", "monai-tutorial")[: 0 if args.bundle_only else 1 if args.skip_monai else 2]:
                rows.append((label, system, _measure("radseg" if system == "radseg" else "monai", scan,
                                                     Path(tmp) / system / scan.name, args)))
                print(f"{label} {system}: {rows[-1][2]}", file=sys.stderr)
    print(f"device {args.device}{' (autocast)' if args.amp else ''}, radseg runtime {args.runtime}; "
          f"torch threads: {os.cpu_count()} cores; window {ROI}, overlap {OVERLAP}, sw_batch_size {SW_BATCH}, "
          f"spacing {SPACING} mm; UNet 16-256, 3 classes; seconds per stage")
    print(_table(rows))
    if bundle:
        print("\nthe model zoo's spleen bundle, end to end (imports, model build, every scan in the folder):")
        print(_bundle_table(bundle))


if __name__ == "__main__":
    main()
