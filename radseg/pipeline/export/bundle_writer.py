"""A trained run as a MONAI bundle: configs/, models/ and docs/ in the model zoo's layout.

``configs/inference.json`` uses only MONAI (and torch): the network is ``models/model.ts``
(TorchScript, so radseg's own networks run where radseg is not installed), the preprocessing and
sliding window are :mod:`.describe`'s, and the masks go back to each scan's grid through MONAI's
``Invertd``. ``python -m monai.bundle run --config_file configs/inference.json --bundle_root B
--dataset_dir SCANS --output_dir OUT`` writes ``OUT/<scan>_seg.nii.gz``. It runs without ignite:
the ``run`` step is a plain loop over the dataset, not a ``SupervisedEvaluator``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from radseg import __version__, keys
from radseg.pipeline.export.describe import inferer_item, preprocessing_items, window_settings

#: the metadata schema the model zoo's bundles name
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
#: the loop ``monai.bundle run`` executes: each scan preprocessed, windowed, inverted and saved
_RUN = ("$[@postprocessing(dict(item, pred=@inferer(item[@image_key][None].to(@device), @network)[0].cpu())) "
        "for item in @dataset]")


def write_bundle(model, saved: dict, folder: Path, network_ts: Path) -> None:
    """Write the bundle's files into ``folder`` (an empty staging folder).

    Args:
        model: the :class:`~radseg.pipeline.predict.model.PredictModel` of the run.
        saved: the checkpoint's dict (fingerprint, validation Dice, epoch).
        folder: where configs/, models/ and docs/ go.
        network_ts: the TorchScript file already written (moved to ``models/model.ts``).
    """
    for sub in ("configs", "models", "docs"):
        (folder / sub).mkdir()
    network_ts.replace(folder / "models" / "model.ts")
    torch.save(model.network.state_dict(), folder / "models" / "model.pt")
    _write_json(folder / "configs" / "inference.json", inference_config(model))
    _write_json(folder / "configs" / "metadata.json", metadata(model, saved))
    (folder / "docs" / "README.md").write_text(readme(model, saved))


def inference_config(model) -> dict[str, Any]:
    """``configs/inference.json``: the zoo's keys, MONAI components only."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "image_key": keys.IMAGE,
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$[{@image_key: f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device)",
        "network": "$@network_def.eval()",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_items(model.preprocess)},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": inferer_item(model),
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "separate_folder": False,
             "resample": False, "print_log": False},
        ]},
        "initialize": ["$torch.set_grad_enabled(False)"],
        "run": [_RUN],
    }


def metadata(model, saved: dict) -> dict[str, Any]:
    """``configs/metadata.json``: versions, label map, input/output format, the data's fingerprint."""
    labels = {str(k): v for k, v in sorted(model.label_names.items())}
    roi_size = window_settings(model)["roi_size"]
    dice = {str(k): float(v) for k, v in (saved.get("dice") or {}).items()}
    return {
        "schema": META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by radseg {__version__} from {model.source}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "required_packages_version": _optional_versions(),
        "name": f"radseg {model.cfg.network.name} ({', '.join(list(labels.values())[1:])})",
        "task": f"{model.modality} segmentation of {', '.join(list(labels.values())[1:])}",
        "description": f"A {model.cfg.network.name} trained with radseg {__version__}; see docs/README.md",
        "authors": "exported by radseg", "copyright": "the model's trainers",
        "data_source": f"radseg run {model.source}",
        "data_type": "nibabel", "intended_use": "research only, not for diagnostic use",
        "image_classes": f"{model.in_channels} channel(s) of {model.modality}, preprocessed as configs/inference.json says",
        "label_classes": ", ".join(f"{k} is {v}" for k, v in labels.items()),
        "pred_classes": f"{model.num_classes} channels of logits, " + ", ".join(f"channel {k} is {v}" for k, v in labels.items()),
        "eval_metrics": {"mean_dice": float(saved.get("mean_dice", float("nan"))), **{f"dice_{k}": v for k, v in dice.items()}},
        "references": [],
        "network_data_format": {
            "inputs": {keys.IMAGE: {"type": "image", "format": "hounsfield" if model.modality == "CT" else "magnitude",
                                    "modality": model.modality, "num_channels": model.in_channels,
                                    "spatial_shape": roi_size, "dtype": "float32", "value_range": [],
                                    "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": model.num_classes,
                                 "spatial_shape": roi_size, "dtype": "float32", "value_range": [],
                                 "is_patch_data": True, "channel_def": labels}},
        },
        "radseg": {"version": __version__, "network": model.cfg.network.name, "epoch": saved.get("epoch"),
                   "preprocess": model.preprocess.to_dict(), "fingerprint": saved.get("fingerprint"),
                   "window": window_settings(model)},
    }


def readme(model, saved: dict) -> str:
    """``docs/README.md``: what the model was trained on, its validation figures, how to run it."""
    fingerprint = saved.get("fingerprint") or {}
    cases = len(fingerprint.get("case_ids", []))
    dice = saved.get("dice") or {}
    figures = "\n".join(f"| {name} | {float(value):.3f} |" for name, value in dice.items()) or "| (none) | |"
    spacing = fingerprint.get("median_spacing")
    return f"""# {model.cfg.network.name}, exported by radseg {__version__}

Segments {', '.join(model.class_name(c) for c in range(1, model.num_classes))} in {model.modality} scans.
Research use only, not for diagnosis.

## Training data
{cases or 'an unknown number of'} training cases ({model.modality}), median spacing {spacing} mm,
preprocessed to {list(model.preprocess.target_spacing)} mm. The full fingerprint of the training data is in
`configs/metadata.json` under `radseg.fingerprint`; the run was `{model.source}`.

## Validation (epoch {saved.get('epoch')}, Dice on the validation fold, preprocessed grid)
| class | Dice |
|---|---|
{figures}
| mean | {float(saved.get('mean_dice', float('nan'))):.3f} |

## Run it
    python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
        --dataset_dir /path/to/scans --output_dir /path/to/masks

writes `<scan>_seg.nii.gz` for every NIfTI scan in the folder (MONAI, torch and nibabel only).
`models/model.ts` is the network (TorchScript); `models/model.pt` its state dict. With radseg:
`radseg predict --model THIS_FOLDER -i scans/ -o masks/`.
"""


def _optional_versions() -> dict[str, str]:
    import nibabel

    return {"nibabel": nibabel.__version__, "python": platform.python_version()}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n")
