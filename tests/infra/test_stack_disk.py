"""The stack's S3 on a large disk that is nearly full, as on a shared build host.

SeaweedFS sizes what it can store from the disk under the stack's folder; these tests put that folder on a
loop-mounted ext4 file system (a sparse image: a few MB really written) filled up to a chosen free space with
`fallocate`, so the disk looks exactly like a big, busy one. They need root and loop devices.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from infra.stack.stack import BUCKETS, PREFECT_BUCKET, StackConfig, free_port_base, s3_client
from tests.stack_cli import stack_cli

GIB = 1 << 30
pytestmark = pytest.mark.slow


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


@pytest.fixture
def big_disk(tmp_path):
    """`big_disk(size_gib, free_gib)`: a mounted ext4 file system of `size_gib` GiB with `free_gib` GiB left free;
    unmounted after."""
    mounts = []

    def make(size_gib: int, free_gib: float) -> Path:
        image, mountpoint = tmp_path / f"disk{len(mounts)}.img", tmp_path / f"disk{len(mounts)}"
        mountpoint.mkdir()
        with open(image, "wb") as f:
            f.truncate(size_gib * GIB)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image))
        if made.returncode != 0:
            pytest.skip(f"cannot make an ext4 image here: {made.stderr.strip()}")
        mounted = _run("mount", "-o", "loop", str(image), str(mountpoint))
        if mounted.returncode != 0:
            pytest.skip(f"cannot loop-mount a file system here (root and /dev/loop* needed): {mounted.stderr.strip()}")
        mounts.append((mountpoint, image))
        stat = os.statvfs(mountpoint)
        fill = stat.f_bavail * stat.f_frsize - int(free_gib * GIB)
        filled = _run("fallocate", "-l", str(fill), str(mountpoint / "filler"))
        assert filled.returncode == 0, filled.stderr
        return mountpoint

    yield make
    for mountpoint, image in mounts:
        _run("umount", "-l", str(mountpoint))
        image.unlink(missing_ok=True)


@pytest.fixture
def stack_on(request):
    """`stack_on(folder)`: `make stack-up` for a stack kept in `folder`; returns (config, the CLI's result). Every
    stack started is stopped after the test."""
    started = []

    def start(folder: Path) -> tuple[StackConfig, subprocess.CompletedProcess]:
        cfg = StackConfig(folder / "stack", free_port_base())
        started.append(cfg)
        return cfg, stack_cli(cfg, "up")

    yield start
    for cfg in started:
        stack_cli(cfg, "down")


def test_every_bucket_takes_writes_on_a_big_disk_with_a_few_gib_free(big_disk, stack_on):
    """2.5 GiB free of 200 GiB. `weed mini` on its own makes volumes of 1% of the disk (1 GiB) and allows as many
    as fit in the free space: 2, so the third bucket to write (the flow's results, first written by a flow) had
    none and refused every write, while `stack-up` said all was up."""
    cfg, done = stack_on(big_disk(200, 2.5))
    assert done.returncode == 0, done.stdout + done.stderr
    s3 = s3_client(cfg)
    for bucket in BUCKETS:
        key, body = f"results/{uuid.uuid4().hex}", os.urandom(300_000)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_up_on_a_disk_without_room_for_every_bucket_fails_naming_the_bucket_and_the_free_space(big_disk, stack_on):
    """0.3 GiB free of 20 GiB: room for two 128 MB volumes, so the third bucket refuses writes. `stack-up` stops
    there, before MLflow and Prefect, with an error that names the bucket, the disk's free space and what to do;
    `stack-status` says the same. (Before, `stack-up` said all was up and the flow lost its results later.)"""
    cfg, done = stack_on(big_disk(20, 0.3))
    assert done.returncode != 0
    assert f"bucket {PREFECT_BUCKET!r} refuses writes" in done.stderr, done.stdout + done.stderr
    assert f"the disk under {cfg.root / 's3'} has 0.3 GiB free of 20 GiB" in done.stderr, done.stderr
    assert "make stack-up" in done.stderr and "stack: started mlflow" not in done.stdout
    status = stack_cli(cfg, "status")
    assert status.returncode != 0
    assert f"REFUSED by {PREFECT_BUCKET!r} (0.3 GiB free of 20 GiB" in status.stdout, status.stdout
