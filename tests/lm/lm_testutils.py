"""Test helpers: the reference `moshi` LMModel built from one of our LMConfigs, with random weights.

The moshi-free parts (Kyutai's kwargs, the random init, the published naming) live in openmoshi.testing.kyutai,
shared with bench/; this module binds them to the reference class.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("NO_TORCH_COMPILE", "1")

from moshi.models.lm import LMModel as RefLMModel  # noqa: E402

from openmoshi.lm.checkpoint import load_state_dict  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402
from openmoshi.testing import kyutai  # noqa: E402
from openmoshi.testing.kyutai import kyutai_kwargs, published_state_dict  # noqa: E402,F401  (re-exported)


def make_reference(cfg: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> RefLMModel:
    """The reference model with every weight random (norm scales around 1), in eval mode."""
    return kyutai.make_reference(cfg, RefLMModel, seed, dtype)


def make_pair(cfg: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[RefLMModel, LMModel]:
    """(reference, ours) with the same random weights, ours loaded through the Kyutai-naming adapter."""
    ref = make_reference(cfg, seed, dtype)
    ours = LMModel(cfg, dtype=dtype)
    load_state_dict(ours, ref.state_dict())
    return ref, ours.eval()


def one_thread():
    """Generator-fixture body: tiny models run fastest on one thread (and avoid spinning on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
