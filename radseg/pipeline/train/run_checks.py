"""Checks a training run makes before it writes anything: the device, the network, the folds and the data.

:func:`device_overrides` turns ``--device`` into ``train.device``; :func:`check_segmentation_network`
refuses a patch the network cannot take and a network of another kind; :func:`check_data` makes the
folds without writing them, settles the modality and runs check-data on rank 0, so a dataset that
cannot be trained on fails before the run folder exists. :func:`dataset_record` is what a run
remembers of its data, so that :func:`check_same_dataset` refuses ``--resume`` on another dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

from radseg.configs.loader import validate_config
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError, DataError
from radseg.pipeline.core import distributed as ddp

logger = logging.getLogger(__name__)

#: the run folder's record of its dataset (root and a digest of the case list)
DATA_FILE = "data.json"


def set_keys(overrides: Sequence[str]) -> dict[str, str]:
    """``--set`` items as ``{dotted key: raw value}`` (load_config refuses malformed ones, with the fix)."""
    return {key.strip(): value.strip() for key, _, value in (item.partition("=") for item in overrides)}


def device_overrides(device: str, overrides: Sequence[str]) -> list[str]:
    """``--set`` items with ``--device`` added as ``train.device`` (``auto`` leaves the config's setting).

    Raises:
        ConfigError: ``--device cuda`` without a visible GPU, or a ``--set train.device`` that disagrees.
    """
    ddp.require_device(device, "--device")
    if device == "auto":
        return list(overrides)
    given = set_keys(overrides).get("train.device", device).strip("'\"")
    if given != device:
        raise ConfigError(f"--device {device} and --set train.device={given} disagree; pass only one of them")
    return [*overrides, f"train.device={device}"]


def dataset_record(data: str | Path) -> dict:
    """What a run remembers of its data: the root and a digest of the sorted case ids and image files.

    The digest covers each case's id and its image files' names and sizes (cheap: no file is read),
    so a moved copy of the same dataset matches and another dataset does not.
    """
    from radseg.pipeline.data.datalist import discover_dataset

    spec = discover_dataset(data)
    cases = sorted([case.case_id, [[p.name, _size(p)] for p in case.images]] for case in spec.training)
    digest = hashlib.sha256(json.dumps(cases).encode()).hexdigest()[:16]
    return {"root": str(spec.root), "cases": len(cases), "case_list_sha256": digest}


def _size(path: Path) -> int:
    if path.is_dir():  # a DICOM series: every file in it
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else -1


def check_same_dataset(run_dir: Path, record: dict) -> None:
    """Refuse resuming a run on a dataset other than the one it trained on (its ``data.json``).

    A run written before radseg kept the record resumes with a warning.

    Raises:
        ConfigError: the case list differs from the run's.
    """
    path = run_dir / DATA_FILE
    if not path.is_file():
        logger.warning("--resume: %s has no %s (written by an earlier radseg), so the dataset cannot be checked; "
                       "resuming on %s", run_dir, DATA_FILE, record["root"])
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--resume: {path} cannot be read ({err}); restore it, or delete it to resume "
                          "without the dataset check") from err
    if before.get("case_list_sha256") != record["case_list_sha256"]:
        raise ConfigError(
            f"--resume: the run in {run_dir} trained on {before.get('root')} ({before.get('cases')} cases, case list "
            f"{before.get('case_list_sha256')}), but --data {record['root']} is another dataset ({record['cases']} "
            f"cases, case list {record['case_list_sha256']}); resume with the run's own --data, or start a new run "
            "in another --output")
    if before.get("root") != record["root"]:
        logger.info("--resume: the run's dataset moved from %s to %s (same cases)", before.get("root"), record["root"])


def check_segmentation_network(cfg: RadsegConfig) -> None:
    """A config built in Python (not through load_config) gets the same checks, the patch included.

    ``fit`` trains volumetric segmentation: 2D and classification networks are refused here.
    """
    from radseg.networks import check_network_config

    validate_config(cfg)
    check_network_config(cfg)
    require_network_kind(cfg, "segmentation", 3, "radseg train trains 3D segmentation networks")


def require_network_kind(cfg: RadsegConfig, task: str, spatial_dims: int, what: str, hint: str = "") -> None:
    """Refuse a network of another task or dimensionality, naming the registered ones that fit.

    Args:
        cfg: the config whose ``network.name`` is checked.
        task, spatial_dims: what the command trains.
        what: the command and what it trains, for the message ("radseg train trains ...").
        hint: appended to the list of choices.

    Raises:
        ConfigError: the network is of another kind.
    """
    from radseg.networks import get_entry, list_networks

    entry = get_entry(cfg.network.name)
    if entry.task != task or entry.spatial_dims != spatial_dims:
        choices = ", ".join(list_networks(task=task, spatial_dims=spatial_dims))
        raise ConfigError(f"network {entry.name!r} is a {entry.spatial_dims}D {entry.task} network, but {what}; "
                          f"set network.name to one of {choices}{hint}")


def _check_folds(cfg: RadsegConfig, data: str | Path) -> None:
    """Make the folds once without writing them, so an impossible split fails before the folder exists.

    The modality is settled here too: the normalisation depends on it.
    """
    from radseg.pipeline.data.datalist import discover_dataset
    from radseg.pipeline.data.splits import make_folds

    spec = discover_dataset(data)
    if cfg.data.modality == "auto" and spec.modality not in ("CT", "MRI"):
        raise ConfigError(f"dataset {data} does not declare its modality ({spec.layout} layout); "
                          "set data.modality=CT or data.modality=MRI (e.g. --set data.modality=CT)")
    ids = [case.case_id for case in spec.training]
    if len(ids) < 2:
        raise DataError(f"{data} has {len(ids)} labelled training case(s); training needs at least 2 "
                        "(one to train on, one to validate); add cases")
    make_folds(ids, cfg.data.num_folds, cfg.data.split_seed)


def check_data(cfg: RadsegConfig, data: str | Path, info: ddp.DistInfo) -> None:
    """Folds and modality (cheap), then check-data (every voxel) on rank 0; every rank raises if it fails."""

    def _check() -> None:
        from radseg.pipeline.data.check_data import check_dataset

        _check_folds(cfg, data)
        report = check_dataset(data)
        if not report.ok:
            raise DataError(f"dataset {data} fails check-data ({report.summary()}):\n" + "\n".join(report.lines())
                            + "\nfix the dataset (see `radseg check-data`) and train again")
        check_class_sampling(cfg, report.background_only_cases(), data)

    ddp.run_on_main(_check, info)


def check_class_sampling(cfg: RadsegConfig, background_only: list[str], data: str | Path) -> None:
    """Class-balanced sampling of a background-only case: refused where MONAI's sampler would fail.

    With background weighted 0 in ``augment.class_ratios`` such a case has no class to draw from
    and the sampler raises "probabilities contain NaN" inside a data worker, mid-training; with a
    background weight it only ever gives background patches (a warning).
    """
    if cfg.augment.sampler != "label_classes" or not background_only:
        return
    shown = ", ".join(background_only[:10]) + (f" and {len(background_only) - 10} more" if len(background_only) > 10 else "")
    ratios = cfg.augment.class_ratios
    if ratios is not None and not ratios[0] > 0:
        raise DataError(f"augment.sampler=label_classes with background weight {ratios[0]} in augment.class_ratios "
                        f"centres patches on foreground classes only, but the label of case(s) {shown} in {data} "
                        "holds background only (the sampler would fail inside a data worker); expected some "
                        "foreground in every labelled case; fix: correct or remove those labels, give background "
                        "a weight > 0, or set augment.sampler=pos_neg")
    logger.warning("label of case(s) %s holds background only: class-balanced sampling draws only background "
                   "patches from them", shown)
