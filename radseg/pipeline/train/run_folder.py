"""What a run folder may hold, and how radseg clears it: only the exact names radseg writes.

A run folder holds config.yaml, splits.json, fingerprint.json, data.json, the checkpoints, metrics.csv,
curves.png, train.log and tensorboard/ (event files), plus the hidden temporary files of an
interrupted atomic write. Anything else is the user's: radseg refuses to train in such a folder and
never deletes it. The config.yaml radseg writes starts with :data:`CONFIG_MARKER`, so a
hand-written config.yaml kept in the folder is never taken for radseg's and replaced.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from radseg.atomic import write_text_atomic
from radseg.configs.loader import config_to_dict
from radseg.configs.schema import RadsegConfig
from radseg.errors import ConfigError
from radseg.pipeline.core.checkpoint import BEST, LAST

CONFIG_FILE = "config.yaml"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS = (LAST, BEST)
#: what a run writes besides its checkpoints
RUN_FILES = (CONFIG_FILE, "splits.json", "fingerprint.json", "metrics.csv", "curves.png", "train.log", "plan.yaml",
             "data.json")
#: first line of the config.yaml radseg writes into a run folder (a YAML comment)
CONFIG_MARKER = "# radseg run config: written by `radseg train`, the resolved settings of this run\n"
#: radseg.atomic's temporary names: ".NAME.PID.THREAD.tmp"
_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+\.\d+\.tmp$")
#: TensorBoard's event files (SummaryWriter names them so)
_EVENTS = re.compile(r"^events\.out\.tfevents\.")


def save_run_config(cfg: RadsegConfig, run_dir: Path) -> Path:
    """Write the resolved config into the run folder, atomically, marked as radseg's own."""
    text = CONFIG_MARKER + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    return write_text_atomic(run_dir / CONFIG_FILE, text)


def refuse_foreign_files(run_dir: Path) -> None:
    """A run folder may hold only what radseg writes there: never replace or clear anything else.

    Raises:
        ConfigError: ``run_dir`` is a file, or holds a name radseg does not write (listed).
    """
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ConfigError(f"--output {run_dir} is a file; pass a folder for the run")
        return
    foreign = sorted(_foreign(run_dir))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--output {run_dir} holds files radseg did not write ({shown}); "
                          "choose an empty or new folder for the run")


def remove_run_files(run_dir: Path) -> None:
    """Delete what an earlier run wrote in ``run_dir``, file by file (call refuse_foreign_files first)."""
    for path in run_dir.iterdir():
        if path.name == TENSORBOARD_DIR and path.is_dir() and not path.is_symlink():
            for event in path.iterdir():
                if _EVENTS.match(event.name) and event.is_file():
                    event.unlink()
            path.rmdir()  # empty now: refuse_foreign_files found nothing else in it
        elif _is_run_entry(path, run_dir) and (path.is_file() or path.is_symlink()):
            path.unlink()


def _foreign(run_dir: Path) -> list[str]:
    names = []
    for path in run_dir.iterdir():
        if path.name == TENSORBOARD_DIR and path.is_dir() and not path.is_symlink():
            names += [f"{TENSORBOARD_DIR}/{p.name}" for p in path.iterdir() if not (_EVENTS.match(p.name)
                                                                                    and p.is_file())]
        elif not _is_run_entry(path, run_dir) or (path.is_dir() and not path.is_symlink()):
            names.append(path.name)
    return names


def _is_run_entry(path: Path, run_dir: Path) -> bool:
    """Whether a file in a run folder is one radseg writes there (exact names, and its temp files)."""
    name = path.name
    temp = _TEMP.match(name)
    if temp is not None:
        return temp.group("name") in RUN_FILES + CHECKPOINTS
    if name == CONFIG_FILE:
        return _radseg_config(path) or any((run_dir / c).is_file() for c in CHECKPOINTS)
    return name in RUN_FILES or name in CHECKPOINTS


def _radseg_config(path: Path) -> bool:
    try:
        with path.open() as handle:
            return handle.readline() == CONFIG_MARKER
    except (OSError, UnicodeDecodeError):
        return False
