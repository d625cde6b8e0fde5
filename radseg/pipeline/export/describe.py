"""radseg's preprocessing and sliding window written as MONAI bundle config items.

One description serves both exports: the ``preprocessing`` and ``inferer`` of a bundle's
``inference.json`` and the ``preprocessing.json`` beside a TorchScript or ONNX network. Every step
is a MONAI dictionary transform with the parameters radseg's own chain
(:func:`radseg.transforms.preprocess.build_inference_transforms`) gives it, in the same order:
load, channel first, orient to RAS, crop to the body (on the raw intensities), resample, normalise.
"""

from __future__ import annotations

from typing import Any

from radseg import keys
from radseg.transforms.preprocess_items import preprocessing_items

#: MONAI's ONNX opset used for export (onnxruntime 1.16+ runs it; TensorRT 8.6+ too)
ONNX_OPSET = 17


def window_settings(model) -> dict[str, Any]:
    """The sliding window radseg predicts with: roi_size, sw_batch_size, overlap and blend mode."""
    inference = model.cfg.inference
    roi_size = inference.roi_size or model.cfg.train.roi_size
    return {"roi_size": [int(s) for s in roi_size], "sw_batch_size": int(inference.sw_batch_size),
            "overlap": float(inference.overlap), "mode": inference.blend_mode}


def inferer_item(model) -> dict[str, Any]:
    """MONAI's ``SlidingWindowInferer`` with radseg's window settings."""
    return {"_target_": "SlidingWindowInferer", **window_settings(model)}


def preprocessing_document(model, network_file: str, network_format: str) -> dict[str, Any]:
    """``preprocessing.json``: every step and its parameters, the window, and the network's interface."""
    document = {
        "description": "Preprocess a scan with these MONAI dictionary transforms in order (keys: "
                       f"{keys.IMAGE!r}; '$' values are MONAI bundle expressions), run the network over "
                       "it with the sliding window, softmax over channels, argmax, and map the labels back "
                       "to the scan's grid (MONAI's Invertd of the same transforms does it).",
        "preprocessing": preprocessing_items(model.preprocess),
        "inferer": inferer_item(model),
        "postprocessing": ["softmax over the channel axis", "argmax over the channel axis",
                           "invert Spacingd, CropForegroundd and Orientationd onto the scan's grid"],
        "network": {"file": network_file, "format": network_format,
                    "input": {"name": "image", "layout": "(B, C, X, Y, Z), RAS axes", "dtype": "float32",
                              "in_channels": model.in_channels, "spatial_shape": window_settings(model)["roi_size"]},
                    "output": {"name": "logits", "layout": "(B, num_classes, X, Y, Z)", "dtype": "float32",
                               "num_classes": model.num_classes}},
        "labels": {str(k): v for k, v in sorted(model.label_names.items())},
        "modality": model.modality,
        "radseg_preprocess": model.preprocess.to_dict(),
    }
    if network_format == "onnx":
        document["network"]["onnx"] = {"opset": ONNX_OPSET, "dynamic_axes": {"image": {"0": "batch"},
                                                                             "logits": {"0": "batch"}},
                                       "note": "the batch axis is dynamic; spatial axes are fixed to the window"}
    return document
