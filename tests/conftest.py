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


# `make test` spreads whole test files over the cores (pytest-xdist, --dist loadfile: a module's fixtures, such as a
# trained model, a server or a cluster, are built once, on one worker). Files are handed out in collection order,
# so the longest start first, none of them last, alone: serial seconds a file at 073e512 on 2 cores.
LONGEST_FIRST = (
    "tests/infra/test_stack.py",  # 353
    "tests/hicom/train/test_train.py",  # 341
    "tests/flows/test_flows_retrain.py",  # 279
    "tests/infra/test_slurm_nodes.py",  # 210
    "tests/hicom/pretrain/test_pretrain_towers.py",  # 135
    "tests/flows/test_flows_prefect_server.py",  # 115
    "tests/flows/test_flows_ablations.py",  # 75
    "tests/infra/test_slurm.py",  # 63
)


def pytest_collection_modifyitems(config, items):
    """Tests of the longest files first, each file's tests together and in their own order (a stable sort)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker a core: torch's default (every core) in each worker's own computations oversubscribes them.
    torch.set_num_threads(1)
