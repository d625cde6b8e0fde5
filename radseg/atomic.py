"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed over it.

A crash or SIGKILL at any moment leaves either the old file or the new one, never a torn file.
Every file radseg writes for the user (checkpoints, configs, splits, fingerprints, cache entries,
logs, pictures) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path to write to; renamed over ``path`` when the block ends without error.

    Args:
        path: the destination. Its folder must exist.
        keep_suffix: end the temporary name with the destination's name (``.nii.gz``), for
            writers that pick the format from the file name.

    Yields:
        A hidden temporary path in the same folder (same file system, so the rename is atomic);
        it is deleted if the block raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    if keep_suffix:
        tmp = path.with_name(f".tmp.{os.getpid()}.{threading.get_ident()}.{path.name}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)  # the rename itself is durable only once the folder entry is flushed (POSIX)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (so renames into it survive a power cut); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def holds_files(path: str | Path, label: str, purpose: str) -> bool:
    """Whether ``path`` is a folder with something in it (False: missing or empty, free to write).

    The first step of every "may this output folder be written?" check (export, review, phantom);
    what counts as an earlier output of the caller's own is the caller's to decide.

    Args:
        path: the output folder.
        label: how the error names it ("--output", "phantom output").
        purpose: what the folder is for ("the export"), for the error.

    Raises:
        DataError: ``path`` is a file.
    """
    from radseg.errors import DataError

    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        raise DataError(f"{label} {path} is a file; expected a folder for {purpose}; choose another path")
    return any(path.iterdir())


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path``, renamed onto it when the block ends without error.

    Args:
        path: the destination folder. Its parent is created if needed.
        overwrite: replace an existing ``path`` (it is moved aside first and deleted only once the
            new folder is in place); without it an existing ``path`` raises ``FileExistsError``.

    Yields:
        A hidden empty folder beside ``path``; it is deleted if the block raises, so nothing
        half-written is ever left under ``path``'s name.
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: str | Path, path: str | Path) -> None:
    """Rename the folder ``new`` onto ``path``.

    An existing ``path`` is moved aside first and deleted only once ``new`` is in place; if that
    rename fails, the old folder is moved back, so ``path`` holds the old folder or the new one,
    never neither.
    """
    import shutil

    new, path = Path(new), Path(path)
    if not path.exists():
        os.replace(new, path)
    else:
        old = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(path.parent)
