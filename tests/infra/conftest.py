"""Shared by the Slurm tests: a local cluster up for the length of a `with` block."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest

from infra.slurm.local_cluster import LocalCluster


@contextlib.contextmanager
def _running_cluster(prefix: str, **options):
    """A LocalCluster in a new folder under /tmp (not pytest's 0700 temporary folders: munged runs as user
    munge and must reach its socket), up for the block, then down and its folder removed."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    local = LocalCluster(root / "cluster", **options)
    try:
        local.up(out=lambda _: None)
        yield local
    finally:
        local.down(out=lambda _: None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def running_cluster():
    """`with running_cluster(prefix, **LocalCluster options) as cluster:`"""
    return _running_cluster
