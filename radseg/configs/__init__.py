"""Typed run configuration: schema, YAML presets and the validating loader."""

from radseg.configs.loader import (
    config_to_dict,
    list_presets,
    load_config,
    resolve_config_path,
    save_config,
    validate_config,
)
from radseg.configs.schema import (
    AugmentConfig,
    CacheConfig,
    DataConfig,
    InferenceConfig,
    NetworkConfig,
    PreprocessConfig,
    RadsegConfig,
    SlicesConfig,
    TrainConfig,
)

__all__ = [
    "AugmentConfig",
    "CacheConfig",
    "DataConfig",
    "InferenceConfig",
    "NetworkConfig",
    "PreprocessConfig",
    "RadsegConfig",
    "SlicesConfig",
    "TrainConfig",
    "config_to_dict",
    "list_presets",
    "load_config",
    "resolve_config_path",
    "save_config",
    "validate_config",
]
