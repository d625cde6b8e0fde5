"""The command line's layout: help on every flag, --version, --debug anywhere, short flags, one way to
name the dataset, cheap start-up and the Ctrl-C hint of a training run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from radseg import __version__, cli, cli_parser
from radseg.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, name: str = "radseg"):
    """Every parser (the top level and each nested command) with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {command}")


def _shown(default) -> str:
    return " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


def test_every_flag_has_help_that_names_its_default():
    missing, silent = [], []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {a.dest}" for a in action._choices_actions if not a.help]
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(label)
            default = action.default
            if default is None or default is False or default is argparse.SUPPRESS or default == []:
                continue
            if _shown(default) not in cli_parser.help_with_default(action):
                silent.append(f"{label} (default {default!r})")
    assert not missing, f"flags without help: {missing}"
    assert not silent, f"flags whose help does not name their default: {silent}"


def test_top_level_help_describes_the_tool_and_the_workflow(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "parses arguments" not in text  # the module docstring is not a description of the tool
    assert "segmentation" in text and "typical workflow" in text
    for step in ("phantom", "check-data", "plan", "train", "predict", "evaluate"):
        assert f"radseg {step} " in text


def test_version_names_radseg_torch_and_monai(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"radseg {__version__} (torch ")
    assert "MONAI " in out


@pytest.mark.parametrize("where", ["before", "after", "nested"])
def test_debug_is_accepted_before_and_after_the_command(where):
    command = ["predict", "-m", "best.pt", "-i", "scan.nii.gz", "-o", "out"]
    if where == "nested":
        command = ["slices", "predict", "-m", "best.pt", "-i", "scan.nii.gz", "-o", "out"]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    assert build_parser().parse_args(argv).debug is True
    assert build_parser().parse_args(command).debug is False


def test_short_flags_mean_the_long_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("d").mkdir()  # --data must exist
    parser = build_parser()
    short = parser.parse_args(["predict", "-m", "best.pt", "-i", "a.nii.gz", "b.nii.gz", "-o", "out"])
    long = parser.parse_args(["predict", "--model", "best.pt", "--input", "a.nii.gz", "b.nii.gz", "--output", "out"])
    assert vars(short) == vars(long)
    assert short.input == ["a.nii.gz", "b.nii.gz"] and short.model == [Path("best.pt")]
    for command in (["train", "--data", "d"], ["plan", "--data", "d"], ["evaluate", "--pred", "p", "--truth", "t"],
                    ["slices", "train", "--data", "d"], ["demo"]):
        assert parser.parse_args([*command, "-o", "out"]).output == Path("out")


def test_an_impossible_overlap_is_refused_while_parsing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "-m", "missing.pt", "-i", "scan.nii.gz", "-o", "out", "--overlap", "1.5"])
    assert exit_info.value.code == 2
    assert "argument --overlap: must be at least 0 and below 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check-data", "cache"])
def test_the_dataset_is_given_with_data_or_the_old_positional(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ds").mkdir()  # the dataset must exist
    parser = build_parser()
    for argv in ([command, "--data", "ds"], [command, "ds"]):
        args = parser.parse_args(argv)
        cli_parser.merge_dataset(args)
        assert args.data == Path("ds")


@pytest.mark.parametrize("argv, message", [
    (["check-data", "a", "--data", "b"], "the dataset was given twice (a and --data b); pass only --data"),
    (["check-data"], "no dataset given; pass --data PATH"),
])
def test_the_dataset_given_twice_or_not_at_all_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a").mkdir()
    Path("b").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"radseg check-data: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["check-data", "--data", "/no/such/dataset"], ["check-data", "/no/such/dataset"],
                                  ["plan", "--data", "/no/such/dataset", "-o", "plan.yaml"],
                                  ["train", "--data", "/no/such/dataset", "-o", "run"]])
def test_a_missing_dataset_is_an_argument_error(argv, capsys):
    """Refused while parsing, in one line, not after seconds of imports (check-data took 5 s to say it)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "dataset path '/no/such/dataset' does not exist; pass a dataset folder or a CSV file" in err


def test_help_version_and_argument_errors_import_no_heavy_library():
    """`radseg --help` must not pay for torch, MONAI or SimpleITK (seconds of start-up)."""
    script = (
        "import sys\n"
        "from radseg.cli import main\n"
        "for argv in (['--help'], ['--version'], ['predict', '--help'], ['train'],\n"
        "             ['predict', '--model', 'x', '--input', 'y', '--output', 'z', '--overlap', '1.5'],\n"
        "             ['check-data', '--data', '/no/such/dataset'], ['plan', '--data', '/no/such', '-o', 'p.yaml']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("command", [["train"], ["slices", "train"]])
def test_ctrl_c_in_train_names_the_resume_command(command, tmp_path, monkeypatch, capsys):
    run = tmp_path / "my run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (tmp_path / "data").mkdir()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_checked_config", lambda source, overrides: None)
    if command == ["train"]:
        monkeypatch.setattr("radseg.pipeline.train.fit.fit", interrupted)
    else:
        monkeypatch.setattr("radseg.pipeline.slices.fit.fit_slices", interrupted)
    assert main([*command, "--data", str(tmp_path / "data"), "--output", str(run)]) == 130
    err = capsys.readouterr().err
    expected = f"radseg {' '.join(command)} --data {tmp_path / 'data'} --output '{run}' --resume"
    assert err == f"interrupted; continue with: {expected}\n"


def test_ctrl_c_before_the_run_folder_exists_says_to_start_again(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_checked_config", lambda source, overrides: None)
    monkeypatch.setattr("radseg.pipeline.train.fit.fit", interrupted)
    (tmp_path / "d").mkdir()
    assert main(["train", "--data", str(tmp_path / "d"), "--output", str(tmp_path / "run")]) == 130
    assert "--resume" not in capsys.readouterr().err
