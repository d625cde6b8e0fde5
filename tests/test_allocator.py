"""radseg's allocator setting: in force in CLI processes and their DataLoader workers, and off on request."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from radseg.allocator import SWITCH, TUNABLES, allocator_environment, is_glibc

ROOT = Path(__file__).resolve().parents[1]
glibc_only = pytest.mark.skipif(not is_glibc(), reason="the allocator setting applies to glibc only")


def _env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (SWITCH, TUNABLES)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(changes)
    return env


def _radseg_debug(env: dict[str, str], tmp_path: Path) -> str:
    """stderr of ``python -m radseg --debug check-data <empty folder>`` (fails fast, after logging; a missing
    folder would be refused while parsing, before the allocator's restart)."""
    done = subprocess.run([sys.executable, "-m", "radseg", "--debug", "check-data", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    return done.stderr


@glibc_only
def test_cli_process_runs_with_the_setting(tmp_path):
    stderr = _radseg_debug(_env(), tmp_path)
    assert "keeps large blocks in the heap" in stderr, stderr


@glibc_only
def test_off_switch_keeps_glibc_defaults(tmp_path):
    stderr = _radseg_debug(_env(**{SWITCH: "off"}), tmp_path)
    assert "glibc malloc defaults" in stderr and f"{SWITCH}=off" in stderr, stderr


@glibc_only
def test_dataloader_workers_inherit_the_setting(tmp_path):
    # a radseg entry point restarts itself, then workers started by fork and by spawn probe malloc
    script = textwrap.dedent("""
        from radseg.allocator import ensure_allocator, heap_serves_large_blocks
        ensure_allocator()
        import torch

        class Probe(torch.utils.data.Dataset):
            def __len__(self):
                return 1
            def __getitem__(self, index):
                return heap_serves_large_blocks()

        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                loader = torch.utils.data.DataLoader(Probe(), num_workers=1, multiprocessing_context=method)
                print(method, bool(next(iter(loader))))
            print("main", heap_serves_large_blocks())
    """)
    path = tmp_path / "probe.py"  # spawned workers re-import the script, so it must be a file
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork", "True", "spawn", "True", "main", "True"], done.stdout


def test_environment_is_left_alone_when_off_or_chosen_by_the_user():
    assert allocator_environment({SWITCH: "off"}) is None
    assert allocator_environment({SWITCH: "0"}) is None
    assert allocator_environment({TUNABLES: "glibc.malloc.mmap_threshold=1048576"}) is None
    assert allocator_environment({"MALLOC_TRIM_THRESHOLD_": "0"}) is None


@glibc_only
def test_environment_extends_other_tunables():
    env = allocator_environment({TUNABLES: "glibc.cpu.hwcaps=-AVX512F", "HOME": "/x"})
    assert env["HOME"] == "/x"
    parts = env[TUNABLES].split(":")
    assert parts[0] == "glibc.cpu.hwcaps=-AVX512F"
    assert "glibc.malloc.mmap_threshold=4294967295" in parts and "glibc.malloc.trim_threshold=4294967295" in parts
    assert allocator_environment(env) is None  # applied once, no restart loop


@glibc_only
def test_probe_sees_the_difference():
    # the probe must be able to fail, and it is only reliable at start-up (a long-lived process such as
    # this pytest run may serve the block from memory freed earlier), so it runs in fresh interpreters
    code = "from radseg.allocator import heap_serves_large_blocks; print(heap_serves_large_blocks())"

    def probe(env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip()

    tunables = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
    assert probe(_env()) == "False"
    assert probe(_env(**{TUNABLES: tunables})) == "True"


@glibc_only
def test_console_script_runs_with_the_setting(tmp_path):
    script = Path(sys.executable).parent / "radseg"
    if not script.is_file():
        pytest.skip("the radseg console script is not installed next to this interpreter")
    done = subprocess.run([str(script), "--debug", "check-data", str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert "keeps large blocks in the heap" in done.stderr, done.stderr


@glibc_only
@pytest.mark.slow
def test_torchrun_ranks_run_with_the_setting(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "radseg", "--debug", "check-data", str(tmp_path)]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert "keeps large blocks in the heap" in done.stdout + done.stderr, done.stderr[-2000:]
