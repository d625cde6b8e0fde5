"""The plan's training layout: both timed on this CPU, the faster kept, the figures in the plan."""

from __future__ import annotations

import pytest
import torch

from radseg.pipeline.plan import layout
from radseg.pipeline.plan.layout import apply_layout, layout_decision, plan_layout_timer
from radseg.pipeline.plan.machine import measured_step_timer

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")


@needs_onednn
@pytest.mark.parametrize("last, plain, chosen", [(0.8, 1.0, True), (1.21, 1.0, False)])
def test_the_faster_layout_is_kept_with_both_figures(last: float, plain: float, chosen: bool) -> None:
    decision = layout_decision("cpu", lambda channels_last: last if channels_last else plain)
    assert decision.key == "train.channels_last" and decision.value is chosen
    assert f"{min(last, plain):.3f} s against {max(last, plain):.3f} s" in decision.why


@needs_onednn
@pytest.mark.parametrize("last, plain", [(1.02, 1.0), (1.0, 1.03), (0.0, 0.0)])
def test_a_difference_within_the_noise_keeps_the_default(last: float, plain: float) -> None:
    assert layout_decision("cpu", lambda channels_last: last if channels_last else plain) is None


def test_a_gpu_is_not_timed() -> None:
    def never(channels_last: bool) -> float:
        raise AssertionError("timed on CUDA")

    assert layout_decision("cuda", never) is None


@needs_onednn
def test_a_plan_times_its_own_step_in_each_layout_and_records_the_choice(tmp_path) -> None:
    """A real (tiny) step in each layout through the calibration's timer; the plan's YAML says why."""
    from types import SimpleNamespace

    from radseg.configs.schema import RadsegConfig
    from radseg.pipeline.plan.rules import Decision

    config = RadsegConfig()
    config.network.name, config.network.params = "monai_unet", {"channels": [4, 8]}
    config.train.roi_size, config.train.batch_size, config.augment.num_samples = [16, 16, 8], 1, 1
    plan = SimpleNamespace(config=config, decisions=[Decision("train.channels_last", True, "stale")])
    seen = {}
    step_timer = measured_step_timer("cpu")

    def recorded(*args, **kwargs):
        seen[kwargs["channels_last"]] = step_timer(*args, **kwargs)
        return seen[kwargs["channels_last"]]

    decision = layout_decision("cpu", plan_layout_timer(plan, 1, 3, recorded))
    assert list(seen) == [True, False] and all(0 < s < 30 for s in seen.values())
    if decision is None:  # within the noise: the default stands and the plan is not touched
        assert abs(seen[True] - seen[False]) < layout.CLEAR_MARGIN * max(seen.values())
        decision = Decision("train.channels_last", False, "contiguous training steps, timed on this CPU")
    else:
        assert decision.value is (seen[True] < seen[False])
    apply_layout(plan, decision)
    assert plan.config.train.channels_last is decision.value
    assert [d.why for d in plan.decisions] == [decision.why]  # the stale reason is replaced, not doubled
