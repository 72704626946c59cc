import os

import pytest
import torch

from hicom.params import Params


@pytest.fixture(scope="session")
def tiny_profile():
    return Params.load().profile("tiny")


@pytest.fixture(scope="session")
def paper_profile():
    return Params.load().profile("paper-7b")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# `make test` spreads whole test files over pytest-xdist workers (one a core, plus one; --dist loadfile: a module's
# fixtures, such as a trained model, a server or a cluster, are built once, on one worker). Files are handed out in
# collection order, so the longest start first, none of them last, alone: seconds a file at 4a4c9fc, 2 workers on
# 2 cores.
LONGEST_FIRST = (
    "tests/flows/test_flows_retrain.py",  # 273
    "tests/hicom/train/test_train.py",  # 213
    "tests/infra/test_stack.py",  # 202
    "tests/infra/test_slurm_nodes.py",  # 163
    "tests/hicom/pretrain/test_pretrain_towers.py",  # 67
    "tests/flows/test_flows_ablations.py",  # 65
    "tests/flows/test_flows_prefect_server.py",  # 59
    "tests/infra/test_stack_disk.py",  # 55
    "tests/infra/test_slurm.py",  # 37
)


def pytest_collection_modifyitems(config, items):
    """Tests of the longest files first, each file's tests together and in their own order (a stable sort)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread a worker: torch's default (every core) in each worker's own computations oversubscribes them.
    torch.set_num_threads(1)
