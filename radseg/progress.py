"""Progress bars on a terminal, plain lines in a log: every radseg progress display goes through here.

tqdm redraws its bar in place with ``\\r`` and moves the cursor with escape codes for nested bars;
redirected to a file (a batch job's log, ``2> train.log``) that leaves one unreadable line of
control characters. Where stderr is not a terminal :func:`progress_bar` keeps the tqdm object (so
``update``, ``set_postfix`` and ``with`` work unchanged) but shows nothing for the first
:data:`LOG_INTERVAL_S` seconds and then writes one plain line at most every :data:`LOG_INTERVAL_S`
seconds: a short step stays silent, a long one leaves a readable trace.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, TextIO

from tqdm import tqdm

#: seconds between the plain progress lines written where stderr is not a terminal
LOG_INTERVAL_S = 30.0
#: ANSI control sequences (tqdm's cursor moves between nested bars)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def terminal_progress(progress: bool) -> bool:
    """``progress`` for a library's own bar (MONAI's caching, sliding windows): only on a terminal."""
    return progress and is_terminal()


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; plain, rare lines elsewhere (see the module doc).

    Args:
        iterable: what to iterate over (None for a bar driven by ``update``).
        **kwargs: tqdm's arguments (``desc``, ``total``, ``unit``, ``leave``, ``disable``, ...).

    Returns:
        The tqdm bar.
    """
    stream = kwargs.pop("file", None) or sys.stderr
    if not is_terminal(stream):
        kwargs.update(file=_PlainLines(stream), ascii=True, dynamic_ncols=False,
                      mininterval=max(kwargs.get("mininterval", 0.1), LOG_INTERVAL_S),
                      delay=max(kwargs.get("delay", 0.0), LOG_INTERVAL_S))
        return _LogBar(iterable, **kwargs)
    return tqdm(iterable, file=stream, **kwargs)


class _LogBar(tqdm):
    """tqdm for a log: a new postfix (each step's loss) waits for the next line instead of forcing
    one, so a log gets a line per :data:`LOG_INTERVAL_S`, not one per step."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc=None, refresh=True) -> None:
        super().set_description(desc, refresh=False)


class _PlainLines:
    """A file for tqdm that turns its in-place redraws into whole lines: no ``\\r``, no escape codes,
    no blank clearing lines, no repeat of the line just written."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", _ESCAPES.sub("", text)):
            line = part.strip()
            if line and line != self._last:
                self._stream.write(line + "\n")
                self._last = line
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
