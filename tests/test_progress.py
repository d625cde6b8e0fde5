"""Progress bars: tqdm on a terminal, plain lines (no carriage returns, no escape codes) in a log."""

from __future__ import annotations

import io

from radseg.cli import main
from radseg import progress
from radseg.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _nested_bars(stream) -> None:
    with progress_bar(desc="epochs", total=2, file=stream) as outer:
        for epoch in range(2):
            for _ in progress_bar(range(3), desc=f"epoch {epoch + 1}", leave=False, file=stream):
                pass
            outer.update(1)


def test_nested_bars_in_a_log_are_plain_lines(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # every drawing becomes a line
    log = io.StringIO()
    _nested_bars(log)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("epochs:   0%") and lines[-1].startswith("epochs: 100%|##########| 2/2")
    assert all(line.strip() for line in lines) and len(lines) == len(set(lines))


def test_a_short_bar_in_a_log_stays_silent():
    log = io.StringIO()
    _nested_bars(log)
    assert log.getvalue() == ""  # under LOG_INTERVAL_S: nothing worth a line


def test_a_terminal_keeps_the_redrawn_bar():
    terminal = _Terminal()
    _nested_bars(terminal)
    assert "\r" in terminal.getvalue()


def test_radseg_phantom_writes_no_control_characters_to_a_redirected_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    assert main(["phantom", str(tmp_path / "data"), "--cases", "1", "--test", "1"]) == 0
    err = capsys.readouterr().err
    assert "phantom:   0%" in err
    assert "\r" not in err and "\x1b" not in err


def test_a_postfix_per_step_in_a_log_does_not_force_a_line_per_step(monkeypatch):
    """The training loop sets the loss as a postfix every step; in a log that must not be a line each."""
    log = io.StringIO()
    with progress_bar(range(200), desc="epoch 1/1", file=log) as bar:
        for step in bar:
            bar.set_postfix(loss=f"{1.0 / (step + 1):.4f}")
    assert log.getvalue() == ""  # 200 quick steps, under LOG_INTERVAL_S: nothing worth a line
