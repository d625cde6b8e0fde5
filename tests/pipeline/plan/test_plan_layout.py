"""The plan's training layout: both timed on this CPU, the faster kept, the figures in the plan."""

from __future__ import annotations

import pytest
import torch

from radseg.pipeline.plan.layout import apply_layout, layout_decision, plan_layout_timer
from radseg.pipeline.plan.machine import measured_step_timer

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")


@needs_onednn
@pytest.mark.parametrize("last, plain, chosen", [(0.8, 1.0, True), (1.21, 1.0, False)])
def test_the_faster_layout_is_kept_with_both_figures(last: float, plain: float, chosen: bool) -> None:
    decision = layout_decision("cpu", lambda channels_last: last if channels_last else plain)
    assert decision.key == "train.channels_last" and decision.value is chosen
    assert f"{min(last, plain):.3f} s against {max(last, plain):.3f} s" in decision.why


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
    seen = []
    step_timer = measured_step_timer("cpu")

    def recorded(*args, **kwargs):
        seen.append(kwargs["channels_last"])
        return step_timer(*args, **kwargs)

    decision = layout_decision("cpu", plan_layout_timer(plan, 1, 3, recorded))
    assert seen == [True, False] and 0 < float(decision.why.split(" s against")[0].split()[-1]) < 30
    apply_layout(plan, decision)
    assert plan.config.train.channels_last is decision.value
    assert [d.why for d in plan.decisions] == [decision.why]  # the stale reason is replaced, not doubled
