"""Test-wide settings: small thread count, and the reference's compile switch set before it is imported."""

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the commands set it: idle threads sleep, not spin

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: threading costs more than it gives, and CI has 2 cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Commands run in-process set their own thread count (`--threads`, default up to 4): back to 1 after."""
    yield
    torch.set_num_threads(1)
