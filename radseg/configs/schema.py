"""The typed config schema: every setting a run has, with its default.

YAML presets and ``--set`` overrides are read into these dataclasses by
:func:`radseg.configs.loader.load_config`; nothing else builds them from user input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Auto = Literal["auto"]


@dataclass
class DataConfig:
    """Where the dataset is and how it is split into folds (by case)."""

    root: Union[str, None] = None
    modality: Literal["auto", "CT", "MRI"] = "auto"
    num_folds: int = 5
    #: cross-validation fold, or "all": train on every case (nnU-Net's fold "all"; validation then
    #: scores fold 0's validation cases, which are in training, so it is only a monitor)
    fold: Union[int, Literal["all"]] = 0
    split_seed: int = 0


@dataclass
class PreprocessConfig:
    """The deterministic transform chain (cached): orient, resample, normalise, crop."""

    #: mm per voxel (x, y, z) in RAS, or "auto": the dataset fingerprint's median spacing
    target_spacing: Union[Auto, list[float]] = "auto"
    #: CT clip window in HU, or "auto": foreground 0.5 / 99.5 percentiles from the fingerprint
    ct_window: Union[Auto, list[float]] = "auto"
    #: CT scaling after clipping: "window" maps the window to [0, 1]; "zscore" uses the
    #: fingerprint's foreground mean/std (nnU-Net's CT scheme). MRI is always z-scored.
    ct_normalization: Literal["window", "zscore"] = "zscore"
    #: crop each scan to its body (foreground) bounding box before caching
    crop_foreground: bool = True
    #: HU above which a CT voxel counts as body for the foreground crop
    body_threshold_hu: float = -500.0
    #: margin in voxels around the body box
    crop_margin: int = 4


@dataclass
class AugmentConfig:
    """The random tail of the training chain: patch sampling and augmentation."""

    sampler: Literal["pos_neg", "label_classes"] = "pos_neg"
    #: RandCropByPosNegLabel: weights of foreground- and background-centred patches
    pos: float = 2.0
    neg: float = 1.0
    #: RandCropByLabelClasses: one weight per class (background first); None = equal weights
    class_ratios: Union[list[float], None] = None
    num_samples: int = 2
    flip_prob: float = 0.5
    #: spatial axes (0 = x, 1 = y, 2 = z of the RAS grid) each flipped with ``flip_prob``; test-time
    #: mirroring (``predict --tta``, ``inference.mirror``) mirrors these axes only
    flip_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    rotate90_prob: float = 0.0
    intensity_shift: float = 0.1
    intensity_scale: float = 0.1
    intensity_prob: float = 0.5
    affine_prob: float = 0.0
    elastic_prob: float = 0.0


@dataclass
class CacheConfig:
    """Where preprocessed cases are kept between epochs."""

    mode: Literal["ram", "disk", "none"] = "ram"
    #: RAM cache budget in GiB: as many cases as fit are cached, the rest load per epoch
    ram_budget_gb: float = 4.0
    #: disk cache folder; None means $RADSEG_CACHE_DIR, else ".radseg-cache" in the current directory
    cache_dir: Union[str, None] = None
    #: dtype of cached images after normalisation (labels are always uint8)
    image_dtype: Literal["float16", "float32"] = "float16"
    num_workers: int = 2


@dataclass
class NetworkConfig:
    """Which registered network to build, and its own typed parameters."""

    name: str = "unet3d"
    in_channels: Union[int, None] = None
    out_channels: Union[int, None] = None
    #: network-specific settings, validated against the registry entry's parameter class
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    roi_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    batch_size: int = 2
    max_epochs: int = 100
    iterations_per_epoch: int = 250
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    warmup_epochs: int = 1
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    grad_clip: Union[float, None] = 12.0
    loss: Literal["dice_ce", "dice", "focal", "dice_focal"] = "dice_ce"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    val_interval: int = 1
    seed: int = 0
    deterministic: bool = False
    #: "auto": CUDA when present (cuda:LOCAL_RANK under torchrun), else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class InsideRule:
    """Predicted components of class ``value`` farther than ``margin_mm`` from class ``within`` are
    removed (radseg plan sets one where every training label holds ``value`` only in or beside ``within``)."""

    value: int
    within: int
    margin_mm: float = 5.0


@dataclass
class InferenceConfig:
    """Sliding-window inference, shared by validation and prediction."""

    #: window size; None = train.roi_size
    roi_size: Union[list[int], None] = None
    sw_batch_size: int = 2
    overlap: float = 0.5
    blend_mode: Literal["gaussian", "constant"] = "gaussian"
    mirror: bool = False
    #: clean-ups ``radseg predict`` applies to a run's masks unless told otherwise (radseg plan
    #: decides them from the training labels). Class values kept as their largest connected component:
    largest_component: list[int] = field(default_factory=list)
    #: one value per class, background first: predicted components under this many mL are removed
    #: (their voxels take the label around them); empty: none removed
    min_component_ml: list[float] = field(default_factory=list)
    #: structure learned from the labels, applied after the two above (so an organ is cleaned first):
    #: e.g. ``[{value: 2, within: 1, margin_mm: 5.0}]`` removes tumour components farther than 5 mm
    #: from the liver (their voxels take the label around them); empty: none removed by position
    inside: list[InsideRule] = field(default_factory=list)


@dataclass
class SlicesConfig:
    """The 2D slice branch (``radseg slices``): slice labels, 2.5D context, sampling, threshold.

    Each axial slice is resized in-plane to ``train.roi_size`` (two sizes, e.g. [64, 64]).
    """

    #: what the classifier learns: "liver" (liver present) or "lesion" (lesion present)
    target: Literal["liver", "lesion"] = "liver"
    #: label values that count as liver; None = labels named liver plus the lesion labels
    liver_labels: Union[list[int], None] = None
    #: label values that count as lesion; None = labels named tumour/tumor/lesion/cancer/metastasis
    lesion_labels: Union[list[int], None] = None
    #: a slice is liver-positive when its liver area is at least this (mm^2 on the preprocessed grid)
    min_liver_area_mm2: float = 100.0
    #: a slice is lesion-positive when its lesion area is positive and at least this (mm^2)
    min_lesion_area_mm2: float = 0.0
    #: k neighbouring slices fed as channels (2.5D), odd; 1 = plain 2D
    context_slices: int = 1
    #: consecutive slices per training sequence of a sequence network (cnn_rnn2d)
    sequence_length: int = 16
    #: draw slices with equal weight per class (else uniformly)
    balanced_sampling: bool = True
    #: decision threshold on the positive probability; "auto" = Youden's J on validation
    threshold: Union[Auto, float] = "auto"
    #: bootstrap resamples of patients for the 95% confidence intervals
    bootstrap_samples: int = 1000
    #: regex on the case id whose first group (or whole match) is the patient id; None = from the
    #: dataset (a patient_id column, DICOM PatientID), else one patient per case
    patient_pattern: Union[str, None] = None
    #: a splits file to train with (nnU-Net splits_final.json format); None = made by patient
    splits_file: Union[str, None] = None


@dataclass
class RadsegConfig:
    """A whole run's configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    slices: SlicesConfig = field(default_factory=SlicesConfig)
