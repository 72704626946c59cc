import os
import subprocess
import sys

import pytest

from hicom.tracking import PROJECT_ROOT

WHERE = "from hicom.train.extensions import build_folder; print(build_folder('deepspeed_shm_comm'))"


def folder_in(env: dict[str, str]) -> str:
    """build_folder's answer in a fresh interpreter of this environment, with exactly these variables."""
    done = subprocess.run([sys.executable, "-c", WHERE], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests run outside a virtual environment")
def test_the_op_is_built_in_the_virtual_environment_not_in_the_cache_every_environment_shares(tmp_path):
    """Two checkouts' venvs used one ~/.cache/torch_extensions folder, and each rebuilt the op the other had loaded."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    built_in = os.path.realpath(folder_in(env))
    assert built_in == os.path.realpath(os.path.join(sys.prefix, "torch_extensions", "deepspeed_shm_comm"))
    assert not (tmp_path / ".cache").exists()


def test_torch_extensions_dir_where_set_wins(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    assert folder_in(env) == str(tmp_path / "ext" / "deepspeed_shm_comm")
