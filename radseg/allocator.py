"""The memory allocator setting every radseg process runs with (glibc only).

A training step allocates and frees the same few hundred megabytes of tensors every iteration.
With glibc's defaults, blocks over 32 MiB are served by fresh ``mmap`` calls and returned at once,
so the kernel hands out (and zeroes) tens of thousands of new pages per step: on 2 cores that is a
third of the step in system time. Raising glibc's ``mmap_threshold`` and ``trim_threshold`` keeps
freed blocks in the heap for the next step. glibc reads these tunables only at process start, so
:func:`ensure_allocator` re-executes the interpreter once, early in ``radseg``/``python -m radseg``
(and in every ``torchrun -m radseg`` rank), with ``GLIBC_TUNABLES`` set; child processes
(DataLoader workers, however started) inherit the environment. ``RADSEG_ALLOCATOR=off`` turns it
off; on a C library other than glibc (macOS, Windows, musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

logger = logging.getLogger(__name__)

#: environment switch: ``off`` (or ``0``, ``false``, ``no``) keeps the C library's defaults
SWITCH = "RADSEG_ALLOCATOR"
#: glibc's start-up tunables (``man 7 tunables``); values in bytes
TUNABLES = "GLIBC_TUNABLES"
_SETTINGS = ("glibc.malloc.mmap_threshold=4294967295", "glibc.malloc.trim_threshold=4294967295")
_OFF = {"off", "0", "false", "no", "none"}
_PROBE_BYTES = 64 * 1024 * 1024  # above glibc's largest dynamic mmap threshold (32 MiB)


def is_glibc() -> bool:
    """Whether this process runs on glibc (the only C library whose malloc radseg tunes)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def allocator_environment(environ: dict[str, str] | os._Environ) -> dict[str, str] | None:
    """The environment a process needs for radseg's allocator setting, or None if it has it.

    None as well where the setting does not apply: ``RADSEG_ALLOCATOR=off``, a C library other
    than glibc, or malloc tunables the user already chose (``GLIBC_TUNABLES`` naming
    ``glibc.malloc.mmap_threshold``/``trim_threshold``, or ``MALLOC_MMAP_THRESHOLD_``/
    ``MALLOC_TRIM_THRESHOLD_``), which are kept as they are.

    Args:
        environ: the current environment (``os.environ``).

    Returns:
        A copy of ``environ`` with ``GLIBC_TUNABLES`` extended, or None.
    """
    if environ.get(SWITCH, "").strip().lower() in _OFF or not is_glibc():
        return None
    current = environ.get(TUNABLES, "")
    user_chose = any(name in current for name in ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"))
    if user_chose or "MALLOC_MMAP_THRESHOLD_" in environ or "MALLOC_TRIM_THRESHOLD_" in environ:
        return None
    updated = dict(environ)
    updated[TUNABLES] = ":".join([part for part in current.split(":") if part] + list(_SETTINGS))
    return updated


def ensure_allocator() -> None:
    """Re-execute this interpreter with radseg's allocator setting, once, if it lacks it.

    Call it first thing in a radseg entry point (before torch is imported, so the re-exec is
    cheap). The new process has the same process id, arguments, open files and environment plus
    ``GLIBC_TUNABLES``; where the setting is already in force, off, or not applicable, it
    returns at once. If the re-exec itself fails, the process goes on with the defaults.
    """
    environ = allocator_environment(os.environ)
    if environ is None:
        return
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, environ)
    except OSError as err:  # e.g. an embedded interpreter without a runnable sys.executable
        logger.debug("could not restart with %s set (%s); keeping the C library's malloc defaults", TUNABLES, err)


def describe_allocator() -> str:
    """One line saying which allocator setting is in force in this process, checked, not assumed.

    On glibc, a 64 MiB block is allocated and freed and ``mallinfo2`` tells whether it came from
    ``mmap`` (the default behaviour) or from the heap (radseg's setting in force).
    """
    if not is_glibc():
        return f"allocator: the C library's default malloc ({platform.system()}, not glibc; nothing to tune)"
    switch = os.environ.get(SWITCH, "")
    tunables = os.environ.get(TUNABLES, "")
    if heap_serves_large_blocks():
        return f"allocator: glibc malloc keeps large blocks in the heap ({TUNABLES}={tunables}); {SWITCH}=off turns it off"
    reason = f"{SWITCH}={switch}" if switch.strip().lower() in _OFF else "setting not applied"
    return f"allocator: glibc malloc defaults, large blocks mmapped per allocation ({reason})"


def heap_serves_large_blocks() -> bool:
    """Whether glibc serves a 64 MiB ``malloc`` from the heap instead of a fresh ``mmap``.

    Returns:
        True where radseg's setting (or an equivalent one) is in force; False with glibc's
        defaults or off glibc.
    """
    if not is_glibc():
        return False
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = _mmapped_blocks(libc)
    block = libc.malloc(_PROBE_BYTES)
    try:
        return _mmapped_blocks(libc) == before
    finally:
        libc.free(block)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_blocks(libc: ctypes.CDLL) -> int:
    """glibc's count of blocks currently served by ``mmap`` (``mallinfo2().hblks``, glibc >= 2.33)."""
    mallinfo = getattr(libc, "mallinfo2", None)
    if mallinfo is None:  # older glibc: mallinfo has the same fields as ints
        mallinfo = libc.mallinfo
        mallinfo.restype = type("_MallInfo", (ctypes.Structure,),
                                {"_fields_": [(n, ctypes.c_int) for n, _ in _MallInfo2._fields_]})
    else:
        mallinfo.restype = _MallInfo2
    return int(mallinfo().hblks)
