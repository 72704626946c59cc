"""The CLI keeps freed memory for reuse (glibc mallopt): a step that frees and allocates the same blocks again
does not fault its pages in again; glibc's own environment settings win."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from hicom.core.allocator import MMAP_THRESHOLD, keep_freed_memory

# Frees three blocks and allocates them again, as a training step does with its activations; prints the page faults
# of the last ten rounds. bytearray zero-fills, so each fresh page is touched.
PROBE = textwrap.dedent("""
    import resource, sys
    from hicom.cli import main
    if sys.argv[1] == "cli":
        assert main(["--params", sys.argv[3], "synth", "--out", "unused"]) == 2  # fails on the params file
    size = int(sys.argv[2])
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        blocks = [bytearray(size) for _ in range(3)]; del blocks
    before = faults()
    for _ in range(10):
        blocks = [bytearray(size) for _ in range(3)]; del blocks
    print(faults() - before)
""")

GLIBC = platform.libc_ver()[0] == "glibc"


def _pages(size: int) -> int:
    """The pages the probe's ten rounds of three blocks touch."""
    return 10 * 3 * size // os.sysconf("SC_PAGE_SIZE")


def _faults(mode: str, size: int, tmp_path, **env) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(size), str(tmp_path / "missing.yaml")],
                         env={**clean, **env}, capture_output=True, text=True, check=True, cwd=tmp_path)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("mb", [2, 8, 24])
def test_the_cli_keeps_freed_blocks_so_reallocating_them_faults_no_pages(tmp_path, mb):
    size = mb << 20
    assert _faults("default", size, tmp_path) > _pages(size) // 2  # glibc's defaults hand the blocks back each round
    assert _faults("cli", size, tmp_path) < _pages(size) // 100


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_blocks_above_the_mmap_threshold_are_still_returned(tmp_path):
    size = MMAP_THRESHOLD + (8 << 20)
    assert _faults("cli", size, tmp_path) > _pages(size) // 2


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_glibc_settings_in_the_environment_win(tmp_path, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert keep_freed_memory() is False
    assert _faults("cli", 8 << 20, tmp_path, **env) > _pages(8 << 20) // 2
