import pytest
import torch

from hicom.config import load_profile


@pytest.fixture(scope="session")
def tiny_profile():
    return load_profile("tiny")


@pytest.fixture(scope="session")
def paper_profile():
    return load_profile("paper-7b")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
