import pytest

from radseg.errors import ConfigError
from radseg.pipeline.plan.budget import fit_schedule, format_seconds, parse_budget, sliding_windows


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("10", 600),
                                           (" 2.5m ", 150), (3, 180)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "-5m", "15 minutes", "m", "1x"])
def test_parse_budget_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="--budget must be a positive duration like 15m"):
        parse_budget(text)


def test_sliding_windows_known_answers():
    assert sliding_windows([64, 64, 32], [64, 64, 32], 0.5) == 1
    assert sliding_windows([100, 64, 32], [64, 64, 32], 0.5) == 3  # steps of 32: 0, 32, 36
    assert sliding_windows([10, 10, 10], [64, 64, 32], 0.25) == 1


@pytest.mark.parametrize("budget", [300.0, 900.0, 7200.0])
def test_schedule_ends_inside_the_budget_and_near_it(budget):
    s = fit_schedule(budget, fixed_s=40.0, step_s=1.3, val_pass_s=15.0, device="cpu")
    assert 0.99 * budget <= s.total_seconds <= budget  # few steps lost to rounding into equal epochs
    assert s.steps == s.max_epochs * s.iterations_per_epoch >= 50
    assert s.validations == s.max_epochs // s.val_interval + (1 if s.max_epochs % s.val_interval else 0)


def test_fold_all_schedule_validates_rarely_and_trains_the_time_saved():
    held_out = fit_schedule(900.0, fixed_s=40.0, step_s=0.8, val_pass_s=8.0, device="cpu")
    fold_all = fit_schedule(900.0, fixed_s=40.0, step_s=0.8, val_pass_s=8.0, device="cpu", fold_all=True)
    assert held_out.validations >= 7 and fold_all.validations == 2  # a pass midway and the last
    assert fold_all.steps - held_out.steps >= (held_out.validations - 2) * 8.0 / 0.8 - fold_all.max_epochs
    assert fold_all.max_epochs >= 30  # epochs stay short: pacing corrects the run an epoch at a time
    assert 0.99 * 900 <= fold_all.total_seconds <= 900


def test_schedule_refuses_a_budget_without_room_for_one_validation():
    with pytest.raises(ConfigError, match=r"one validation pass 2m 00s .* the minimum is about 3m 38s; pass a larger --budget \(e.g. --budget 5m\)"):
        fit_schedule(150.0, fixed_s=40.0, step_s=1.0, val_pass_s=120.0, device="cpu")
    assert format_seconds(3725) == "1h 02m"
