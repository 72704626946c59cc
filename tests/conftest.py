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
