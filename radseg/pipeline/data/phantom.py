"""A synthetic abdominal CT dataset (liver and tumours) in the Medical Segmentation Decathlon layout.

Each case comes from :func:`radseg.pipeline.data.phantom_anatomy.make_phantom_case` (deterministic in
``(seed, case index)``); the gzip streams carry no timestamp, so the same seed writes the same bytes.
The dataset is written to a temporary folder and renamed into place, and ``overwrite`` never deletes
what the user added.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib

from radseg.atomic import holds_files
from radseg.errors import DataError
from radseg.pipeline.data.phantom_anatomy import make_phantom_case  # noqa: F401 - public here too
from radseg.pipeline.data.phantom_profiles import check_profile, make_profile_case
from radseg.progress import progress_bar

logger = logging.getLogger(__name__)

DATASET_NAME = "radseg-phantom"
_SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
LABELS = {"0": "background", "1": "liver", "2": "tumour"}


def write_phantom_dataset(
    out: str | Path, num_cases: int = 6, seed: int = 0, num_test: int = 2, overwrite: bool = False,
    profile: str = "abdomen",
) -> Path:
    """Write a synthetic abdominal CT dataset (liver and tumour labels) in the MSD layout.

    The folder gets ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``labelsTs/``
    (test labels, for evaluation); files are ``phantom_000.nii.gz``, ... Images are int16 HU, labels
    uint8 (0 background, 1 liver, 2 tumour). It is written to a temporary folder beside ``out`` and
    renamed into place, so a crash leaves no half-written dataset.

    Args:
        out: the dataset folder to create.
        num_cases: number of training cases.
        seed: the same seed writes byte-identical files.
        num_test: number of test cases (indices after the training cases).
        overwrite: replace an existing phantom dataset at ``out``.
        profile: ``"abdomen"`` (a 120-160 mm slab, fast), ``"chest-pelvis"`` (180-300 mm from the
            lungs to the pelvis, distractors of liver-like HU, 6-22 mm tumours, oblique cases) or
            ``"irregular"`` (a second family held out from tuning: lobulated hypo- and hyperdense
            lesions, look-alike organs, correlated noise, 1-5 mm slices, cut livers, flipped and oblique
            scans); see :mod:`radseg.pipeline.data.phantom_profiles`.

    Returns:
        The dataset folder.

    Raises:
        DataError: ``out`` exists and is not empty (without ``overwrite``), or holds something other
            than a phantom dataset, or the case counts are impossible.
    """
    out = Path(out)
    if num_cases < 1 or num_test < 0:
        raise DataError(f"a phantom needs num_cases >= 1 and num_test >= 0, not {num_cases} and {num_test}")
    check_profile(profile)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
    try:
        _write_all(tmp, num_cases, seed, num_test, profile)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d+%d phantom cases to %s in %.1f s", num_cases, num_test, out, time.perf_counter() - start)
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if not holds_files(out, "phantom output", "the phantom"):
        return
    if not overwrite:
        raise DataError(f"phantom output {out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    try:
        name = json.loads((out / "dataset.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    if name != DATASET_NAME:
        raise DataError(
            f"refusing to overwrite {out}: it does not hold a radseg phantom (no dataset.json named {DATASET_NAME!r}); "
            "choose another folder"
        )
    foreign = _foreign_entries(out)
    if foreign:
        raise DataError(
            f"refusing to overwrite {out}: besides the phantom it holds {', '.join(foreign[:5])}"
            f"{' and more' if len(foreign) > 5 else ''}; move them out or choose another folder"
        )


def _foreign_entries(out: Path) -> list[str]:
    """What a phantom folder holds that the phantom writer did not write (never deleted)."""
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name == "dataset.json":
            continue
        if entry.name not in _SUBFOLDERS or not entry.is_dir():
            foreign.append(entry.name)
            continue
        foreign += [f"{entry.name}/{f.name}" for f in sorted(entry.iterdir())
                    if not (f.is_file() and f.name.startswith("phantom_") and f.name.endswith(".nii.gz"))]
    return foreign


def _replace(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)  # put the earlier phantom back before reporting the failure
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _write_all(root: Path, num_cases: int, seed: int, num_test: int, profile: str) -> None:
    for sub in _SUBFOLDERS:
        (root / sub).mkdir()
    training, test = [], []
    for index in progress_bar(range(num_cases + num_test), desc="phantom", unit="case", leave=False):
        name = f"phantom_{index:03d}.nii.gz"
        is_train = index < num_cases
        image_dir, label_dir = ("imagesTr", "labelsTr") if is_train else ("imagesTs", "labelsTs")
        image, label = make_profile_case(profile, seed, index)
        _save_deterministic(image, root / image_dir / name)
        _save_deterministic(label, root / label_dir / name)
        if is_train:
            training.append({"image": f"./{image_dir}/{name}", "label": f"./{label_dir}/{name}"})
        else:
            test.append(f"./{image_dir}/{name}")
    (root / "dataset.json").write_text(json.dumps(_dataset_json(seed, training, test, profile), indent=2) + "\n")


def _dataset_json(seed: int, training: list[dict], test: list[str], profile: str = "abdomen") -> dict:
    description = f"synthetic abdominal CT with liver and tumour labels (radseg phantom, seed {seed})"
    if profile != "abdomen":
        description = description[:-1] + f", profile {profile})"
    return {
        "name": DATASET_NAME, "description": description, "tensorImageSize": "3D",
        "reference": "generated by radseg.pipeline.data.phantom", "licence": "CC0", "release": "1.0",
        "modality": {"0": "CT"}, "labels": dict(LABELS), "numTraining": len(training), "numTest": len(test),
        "training": training, "test": test,
    }


def _save_deterministic(image: nib.Nifti1Image, path: Path) -> None:
    # nibabel's own gzip writer is not guaranteed to zero the header timestamp; do it ourselves.
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))
