"""Which runtime and precision run the network: ``radseg predict --runtime`` and ``--precision``.

Which way of running a network is fastest depends on the CPU (channels-last and bf16 autocast won
1.3-2x on a Xeon with AMX; on an AVX2 CPU bf16 is emulated and hundreds of times slower), so
``--runtime auto`` measures it here. Candidates (:func:`candidates`): torch eager float32,
contiguous and channels-last; torch bf16 autocast, contiguous and channels-last, where the CPU has
native bf16 (AVX512-BF16 or AMX) or on a GPU that supports bf16; and, on CPU, OpenVINO float32 (and
bf16 with native bf16) when installed (``pip install radseg[fast]``). onnxruntime runs only when asked
for (``--runtime onnxruntime``): it was never the fastest where measured (:data:`AUTO_RUNTIMES`).

``auto`` runs each candidate on one batch of windows cut from the first case's preprocessed
image, keeps those whose masks agree with torch float32 (per-class Dice of the argmax at least
:data:`MIN_DICE` ``fp32`` for float32 runtimes, ``bf16`` for bf16), times them (one warm-up, then the
best of :data:`REPEATS`), takes the fastest and stores the measurement
(:mod:`.runtime_cache`), so later runs with the same network, machine and libraries reuse it. The
log says which runtime ran and why. An explicit ``--runtime`` skips the measurement: ``torch`` with
``--precision auto`` runs as the checkpoint says (bf16/fp16 autocast on CUDA, float32 on CPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from radseg.errors import ConfigError
from radseg.pipeline.predict import runtime_cache as cache
from radseg.pipeline.predict.runtime_backends import Candidate, Forward, build_forward, export_onnx, installed

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
#: least per-class Dice of a candidate's argmax against torch float32's, by the candidate's precision
MIN_DICE = {"fp32": 0.999, "bf16": 0.995, "fp16": 0.995}
#: the runtimes ``auto`` tries, each kept because it was the fastest somewhere measured (benchmarks/runtime_speed.py,
#: spleen UNet 16-256, 96³ windows): torch (channels-last and bf16 on the issue's AMX Xeon, bf16 on a 2-core EPYC
#: with AVX512-BF16) and OpenVINO (fp32, batch 4, on that EPYC: 2.00x torch eager, 1.55x channels-last). onnxruntime
#: was never the fastest (0.70-0.74x torch on the AMX Xeon, 1.10-1.43x on the EPYC, behind OpenVINO and channels-last)
AUTO_RUNTIMES = ("torch", "openvino")
#: timed runs per candidate after the warm-up (the fastest counts)
REPEATS = 2
_FAST = "pip install 'radseg[fast]' (onnxruntime, openvino)"


@dataclass
class Selected:
    """The runtime chosen for a model: its name, its forward function and why it was chosen."""

    name: str
    forward: Forward
    reason: str


def check_runtime(runtime: str, precision: str, device: torch.device | str) -> None:
    """Refuse a runtime or precision this machine cannot run, before a model loads or a scan is read.

    Raises:
        ConfigError: an unknown value, a library that is not installed, an ONNX runtime on CUDA, or
            bf16 where the device has no native bf16 (emulated bf16 is far slower than float32).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}; fix: --runtime auto")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}; fix: --precision auto")
    device = _device(device)
    if runtime in ("onnxruntime", "openvino"):
        if not installed(runtime):
            raise ConfigError(f"--runtime {runtime}: {runtime} is not installed; fix: {_FAST}, or --runtime auto")
        if device.type != "cpu":
            raise ConfigError(f"--runtime {runtime} runs on CPU only, but the network runs on {device.type}; "
                              "fix: --runtime torch (or auto), or --device cpu")
        if runtime == "onnxruntime" and precision == "bf16":
            raise ConfigError("--runtime onnxruntime has no bf16 CPU kernels; fix: --precision fp32, or "
                              "--runtime torch/openvino with --precision bf16")
    if precision == "bf16" and not native_bf16(device):
        raise ConfigError(f"--precision bf16: this {device.type.upper()} has no native bf16 (AVX512-BF16 or AMX "
                          "on CPU), so bf16 would be emulated, far slower than float32 (conv3d about 300x "
                          "on an AVX2 CPU); fix: --precision fp32 or auto")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (a CPU with AVX512-BF16/AMX, or a bf16 GPU)."""
    from radseg.pipeline.predict.inference import cpu_has_native_bf16

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def candidates(device: torch.device | str, precision: str = "auto",
               runtimes: Sequence[str] = AUTO_RUNTIMES) -> list[Candidate]:
    """The ways ``auto`` may run a network on ``device`` (among ``runtimes``), torch float32 contiguous first."""
    device = _device(device)
    precisions = [p for p in ("fp32", "bf16") if precision in ("auto", p) and (p == "fp32" or native_bf16(device))]
    found = [Candidate("torch", p, last) for p in precisions for last in (False, True)]
    if device.type == "cpu":
        found += [Candidate("onnxruntime", "fp32")] if "fp32" in precisions and "onnxruntime" in runtimes \
            and installed("onnxruntime") else []
        found += [Candidate("openvino", p) for p in precisions if "openvino" in runtimes and installed("openvino")]
    return found


def choose_runtime(model, image: torch.Tensor, runtime: str = "auto", precision: str = "auto",
                   sw_batch_size: int | None = None, *, timer: Callable | None = None) -> Selected:
    """The forward function to run ``model``'s windows with (chosen once per model and setting).

    Args:
        model: a :class:`~radseg.pipeline.predict.model.PredictModel`.
        image: the first case's preprocessed ``(1, C, X, Y, Z)`` image; ``auto`` times and checks the
            candidates on windows cut from it.
        runtime: one of :data:`RUNTIMES`.
        precision: one of :data:`PRECISIONS`.
        sw_batch_size: windows per forward pass (default: the model's ``inference.sw_batch_size``).
        timer: ``timer(forward, windows) -> seconds`` (default: :func:`seconds_per_batch`).

    Returns:
        The :class:`Selected` runtime; ``auto`` logs the measurement and the choice.
    """
    roi = list(model.cfg.inference.roi_size or model.cfg.train.roi_size)
    batch = int(sw_batch_size or model.cfg.inference.sw_batch_size)
    memo = model.runtimes.get((runtime, precision, batch))
    if memo is not None:
        return memo
    if runtime == "auto":
        selected = _auto(model, sample_windows(image, roi, batch), precision, timer or seconds_per_batch)
    else:
        selected = _explicit(model, runtime, precision)
    model.runtimes[(runtime, precision, batch)] = selected
    return selected


def used_runtimes(model) -> list[str]:
    """The names of the runtimes a model (or its grid members) ran with, for the case record."""
    names = [s.name for s in model.runtimes.values()]
    for member in model.grid_members:
        names += [s.name for s in member.runtimes.values()]
    return sorted(set(names))


def sample_windows(image: torch.Tensor, roi: Sequence[int], count: int) -> torch.Tensor:
    """``count`` windows ``(count, C, *roi)`` cut along the image's diagonal (padded where it is smaller)."""
    image = image[:1].as_tensor() if hasattr(image, "as_tensor") else image[:1]
    pads = [max(0, r - s) for r, s in zip(roi, image.shape[2:])]
    if any(pads):
        spec = [p for pad in reversed(pads) for p in (pad // 2, pad - pad // 2)]
        image = torch.nn.functional.pad(image, spec, mode="replicate")
    windows = []
    for k in range(count):
        share = (k + 1) / (count + 1)
        starts = [round(share * (s - r)) for s, r in zip(image.shape[2:], roi)]
        windows.append(image[(0, slice(None), *[slice(a, a + r) for a, r in zip(starts, roi)])])
    return torch.stack(windows).float().contiguous()


def seconds_per_batch(forward: Forward, windows: torch.Tensor) -> float:
    """The fastest of :data:`REPEATS` timed runs of ``forward`` on ``windows`` (warmed up by the caller)."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        forward(windows)
        if windows.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def class_dice(reference: torch.Tensor, other: torch.Tensor) -> float:
    """The least per-class Dice of ``other``'s argmax against ``reference``'s (a class in neither: 1)."""
    expected, got = reference.argmax(1), other.argmax(1)
    worst = 1.0
    for c in range(reference.shape[1]):
        a, b = expected == c, got == c
        total = int(a.sum()) + int(b.sum())
        if total:
            worst = min(worst, 2.0 * int((a & b).sum()) / total)
    return worst


def _explicit(model, runtime: str, precision: str) -> Selected:
    if runtime == "torch" and precision == "auto":
        dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[model.amp]
        candidate = Candidate("torch", dtype)
    else:
        candidate = Candidate(runtime, "bf16" if precision == "bf16" else "fp32")
    forward = build_forward(candidate, model, lambda: _onnx_path(model))
    logger.info("runtime %s (asked for: --runtime %s --precision %s; not measured)", candidate.name, runtime, precision)
    return Selected(candidate.name, forward, "asked for")


def _auto(model, windows: torch.Tensor, precision: str, timer: Callable) -> Selected:
    device = _device(model.device)
    windows = windows.to(device)
    found = candidates(device, precision)
    names = [c.name for c in found]
    digest = cache.network_digest(model.network, _config(model))
    key = cache.cache_key(digest, cache.machine_facts(device), windows.shape, precision, names)
    stored = cache.read_choice(key)
    if stored is not None and stored.get("choice") in names:
        choice = next(c for c in found if c.name == stored["choice"])
        reason = f"measured earlier on this machine ({_summary(stored)}; {cache.runtime_folder() / key}.json)"
        logger.info("runtime %s: %s", choice.name, reason)
        return Selected(choice.name, build_forward(choice, model, lambda: _onnx_path(model, digest)), reason)
    start = time.perf_counter()
    record, forwards = _measure(model, found, windows, timer, digest)
    record["measured_s"] = round(time.perf_counter() - start, 2)
    if not record["seconds"]:  # nothing agreed, not even torch fp32's own second run: torch fp32
        record["seconds"][found[0].name] = float("nan")
    choice_name = min(record["seconds"], key=lambda n: record["seconds"][n])
    record["choice"] = choice_name
    path = cache.write_choice(key, record)
    reason = f"fastest of those agreeing with torch fp32, measured in {record['measured_s']:.1f} s ({_summary(record)})"
    logger.info("runtime %s: %s%s", choice_name, reason, f"; stored in {path}" if path else "")
    choice = next(c for c in found if c.name == choice_name)
    forward = forwards.get(choice_name) or build_forward(choice, model, lambda: _onnx_path(model, digest))
    return Selected(choice_name, forward, reason)


def _measure(model, found: list[Candidate], windows: torch.Tensor, timer: Callable, digest: str):
    """Run, check and time each candidate: the record (seconds, Dice, exclusions) and the forward functions."""
    record = {"seconds": {}, "dice": {}, "excluded": {}, "window": list(windows.shape)}
    forwards, reference = {}, None
    for candidate in found:
        try:
            forward = build_forward(candidate, model, lambda: _onnx_path(model, digest))
            with torch.inference_mode():
                logits = forward(windows)
        except Exception as err:  # a runtime that cannot take this network (an op it lacks, a failed export)
            record["excluded"][candidate.name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            logger.info("runtime %s excluded: it failed (%s)", candidate.name, record["excluded"][candidate.name])
            continue
        reference = logits if reference is None else reference
        dice = class_dice(reference, logits)
        record["dice"][candidate.name] = round(dice, 5)
        if dice < MIN_DICE[candidate.precision]:
            record["excluded"][candidate.name] = f"mask Dice {dice:.4f} against torch fp32 < {MIN_DICE[candidate.precision]}"
            logger.info("runtime %s excluded: %s", candidate.name, record["excluded"][candidate.name])
            continue
        with torch.inference_mode():
            record["seconds"][candidate.name] = float(timer(forward, windows))
        forwards[candidate.name] = forward
    best = min(record["seconds"], key=record["seconds"].get, default=None)
    return record, {best: forwards[best]} if best else {}


def _summary(record: dict) -> str:
    seconds = record.get("seconds", {})
    base = seconds.get("torch-fp32")
    parts = [f"{name} {s:.3f} s" + (f" ({base / s:.2f}x)" if base and s else "") for name, s in
             sorted(seconds.items(), key=lambda item: item[1])]
    excluded = [f"{name} excluded: {why}" for name, why in record.get("excluded", {}).items()]
    return "; ".join(["per batch of windows: " + ", ".join(parts)] + excluded)


def _onnx_path(model, digest: str | None = None):
    digest = digest or cache.network_digest(model.network, _config(model))
    return export_onnx(model, cache.runtime_folder() / f"{digest[:24]}.onnx")


def _config(model):
    from radseg.configs.loader import config_to_dict

    try:
        return config_to_dict(model.cfg)
    except Exception:  # a bundle's config is a plain object: its weights identify it
        return None


def _device(device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

