"""MONAI dictionary-transform chains: load, orient, resample, normalise, crop, augment."""

from radseg.transforms.fingerprint import (
    Fingerprint,
    ResolvedPreprocess,
    compute_fingerprint,
    load_fingerprint,
    resolve_preprocess,
    save_fingerprint,
)
from radseg.transforms.io import (
    ImageHeader,
    SimpleITKReader,
    array_to_image,
    list_dicom_series,
    read_header,
    read_image,
)
from radseg.transforms.preprocess import (
    build_augment_transforms,
    build_inference_transforms,
    build_preprocess_transforms,
    build_train_transforms,
    build_val_transforms,
)

__all__ = [
    "Fingerprint",
    "ImageHeader",
    "ResolvedPreprocess",
    "SimpleITKReader",
    "array_to_image",
    "build_augment_transforms",
    "build_inference_transforms",
    "build_preprocess_transforms",
    "build_train_transforms",
    "build_val_transforms",
    "compute_fingerprint",
    "list_dicom_series",
    "load_fingerprint",
    "read_header",
    "read_image",
    "resolve_preprocess",
    "save_fingerprint",
]
