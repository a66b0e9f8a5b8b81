"""Test-wide settings: small thread count, and the reference's compile switch set before it is imported."""

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: threading costs more than it gives, and CI has 2 cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
