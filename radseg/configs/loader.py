"""YAML in, a validated :class:`RadsegConfig` out.

Unknown keys name their dotted path and the closest valid key; wrong types and impossible values
are refused with the fix. ``--set section.key=value`` overrides go through the same code.

This package stands below :mod:`radseg.networks`: the network section (name, ``network.params``, and
whether the network can take the patch) is checked by
:func:`radseg.networks.registry.check_network_config`, which the CLI and ``fit`` call after loading.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Union

import yaml

from radseg.atomic import write_text_atomic
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def list_presets() -> list[str]:
    """Names of the YAML presets shipped with radseg (``demo``, ``ct_liver``, ...)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (``demo``) or a path to a YAML file, as an existing path.

    Raises:
        ConfigError: neither a preset nor an existing file.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a preset; presets: {', '.join(list_presets())}"
    )


def load_config(
    source: str | Path | dict | None = None, overrides: Iterable[str] = ()
) -> RadsegConfig:
    """Load a config from a preset name, a YAML path or a dict, then apply ``key=value`` overrides.

    Args:
        source: preset name, YAML file, plain dict, or None for the defaults.
        overrides: strings like ``"train.max_epochs=5"``; values are parsed as YAML.

    Returns:
        The validated config.

    Raises:
        ConfigError: an unknown key, a wrong type or an impossible value, naming its dotted path.
    """
    raw = _read_source(source)
    for item in overrides:
        _apply_override(raw, item)
    cfg = _build(RadsegConfig, raw, "")
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: RadsegConfig) -> dict:
    """The config as plain dicts and lists (for YAML files and checkpoints)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: RadsegConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def validate_config(cfg: RadsegConfig) -> None:
    """Refuse impossible values, each with its fix (all problems at once)."""
    problems = []
    inf = cfg.inference
    if not 0 <= inf.overlap < 1:
        problems.append(f"inference.overlap must be in [0, 1), not {inf.overlap}; 0.5 is the usual choice")
    if any(v < 1 for v in inf.largest_component):
        problems.append(f"inference.largest_component lists foreground class values (>= 1), not {inf.largest_component}")
    if any(v < 0 for v in inf.min_component_ml):
        problems.append(f"inference.min_component_ml must be >= 0 mL per class, not {inf.min_component_ml}")
    problems += _inside_problems(inf.inside)
    for name in ("batch_size", "max_epochs", "iterations_per_epoch", "val_interval"):
        if getattr(cfg.train, name) < 1:
            problems.append(f"train.{name} must be >= 1, not {getattr(cfg.train, name)}")
    if cfg.train.learning_rate <= 0:
        problems.append(f"train.learning_rate must be > 0, not {cfg.train.learning_rate}")
    for key, sizes in (("train.roi_size", cfg.train.roi_size), ("inference.roi_size", inf.roi_size)):
        if sizes is not None and (len(sizes) not in (2, 3) or min(sizes) < 1):
            problems.append(f"{key} must be 2 or 3 positive sizes, not {sizes}")
    spacing = cfg.preprocess.target_spacing
    if spacing != "auto" and (len(spacing) != 3 or min(spacing) <= 0):
        problems.append(f"preprocess.target_spacing must be 'auto' or 3 positive mm values, not {spacing}")
    window = cfg.preprocess.ct_window
    if window != "auto" and (len(window) != 2 or window[0] >= window[1]):
        problems.append(f"preprocess.ct_window must be 'auto' or [low, high] with low < high, not {window}")
    if cfg.data.fold != "all" and not 0 <= cfg.data.fold < cfg.data.num_folds:
        problems.append(f"data.fold must be in 0..{cfg.data.num_folds - 1}, not {cfg.data.fold} (or 'all')")
    flip_axes = cfg.augment.flip_axes
    if any(axis not in (0, 1, 2) for axis in flip_axes) or len(set(flip_axes)) != len(flip_axes):
        problems.append(f"augment.flip_axes must list distinct spatial axes 0, 1, 2, not {flip_axes}")
    if cfg.cache.ram_budget_gb < 0:
        problems.append(f"cache.ram_budget_gb must be >= 0, not {cfg.cache.ram_budget_gb}")
    problems += _slices_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def _inside_problems(rules: list) -> list[str]:
    problems, seen = [], set()
    for index, rule in enumerate(rules):
        where = f"inference.inside[{index}]"
        if rule.value < 1 or rule.within < 1 or rule.value == rule.within:
            problems.append(f"{where} must name two different foreground classes (>= 1), not value {rule.value} "
                            f"within {rule.within}; e.g. {{value: 2, within: 1, margin_mm: 5.0}}")
        if rule.margin_mm < 0:
            problems.append(f"{where}.margin_mm must be >= 0 mm, not {rule.margin_mm}")
        if rule.value in seen:
            problems.append(f"{where}: class {rule.value} has two inside rules; keep one")
        seen.add(rule.value)
    return problems


def _slices_problems(cfg: RadsegConfig) -> list[str]:
    sl = cfg.slices
    problems = []
    if sl.context_slices < 1 or sl.context_slices % 2 == 0:
        problems.append(f"slices.context_slices must be an odd number >= 1, not {sl.context_slices}")
    if sl.sequence_length < 2:
        problems.append(f"slices.sequence_length must be >= 2, not {sl.sequence_length}")
    if sl.min_liver_area_mm2 < 0 or sl.min_lesion_area_mm2 < 0:
        problems.append("slices.min_liver_area_mm2 and slices.min_lesion_area_mm2 must be >= 0")
    if sl.threshold != "auto" and not 0 < sl.threshold < 1:
        problems.append(f"slices.threshold must be 'auto' or in (0, 1), not {sl.threshold}")
    if sl.bootstrap_samples < 0:
        problems.append(f"slices.bootstrap_samples must be >= 0, not {sl.bootstrap_samples}")
    return problems


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    """Validate a plain mapping against a dataclass, with the same rules as :func:`load_config`.

    Used for sections whose schema is only known at run time, e.g. ``network.params``, whose
    dataclass comes from the network registry.

    Args:
        cls: the dataclass whose typed fields (with defaults) define the valid keys.
        raw: the mapping read from YAML (None counts as empty).
        path: dotted path of ``raw`` in the config, used in messages (``"network.params"``).

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: an unknown key (naming its dotted path and the closest valid key) or a wrong type.
    """
    return _build(cls, {} if raw is None else raw, path)


def _read_source(source: str | Path | dict | None) -> dict:
    if source is None:
        return {}
    if isinstance(source, dict):
        return _deep_copy(source)
    path = resolve_config_path(source)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must hold a mapping of sections, not {type(raw).__name__}")
    return raw


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.max_epochs=5")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value {text!r} is not valid YAML") from err
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls: type, raw: Any, path: str) -> Any:
    where = path or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(raw).__name__} ({raw!r})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError("; ".join(_unknown_key_message(k, names, path) for k in unknown))
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in raw.items()}
    return cls(**kwargs)


def _unknown_key_message(key: str, valid: list[str], path: str) -> str:
    dotted = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"did you mean {(path + '.' if path else '') + close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown config key {dotted!r}: {hint}"


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is Union:
        return _coerce_union(value, typing.get_args(hint), path)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path} must be one of {list(choices)}, not {value!r}{hint_text}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, not {value!r}")
        (item_type,) = typing.get_args(hint)
        return [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, not {value!r}")
        return _deep_copy(value)
    return _coerce_scalar(value, hint, path)


def _coerce_union(value: Any, options: tuple, path: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, path)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(" or ".join(errors) if len(errors) > 1 else errors[0])


def _coerce_scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config schema type {hint!r} at {path} is not supported")
    raise ConfigError(f"{path} must be {hint.__name__}, not {value!r}")
