"""Helpers for the runtime tests: a tiny Moshi in the layout of Kyutai's model repos.

The moshi-free parts live in openmoshi.testing (shared with bench/); the reference models come from `moshi`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from openmoshi.testing.kyutai import (  # noqa: F401  (re-exported for the runtime tests)
    MIMI_OVERRIDES,
    TINY_RATIOS,
    kyutai_tiny_mimi_config,
    tiny_lm_config,
    write_kyutai_repo,
)
from openmoshi.testing.mimi_init import random_like, random_tensor  # noqa: F401
from openmoshi.testing.spm import train_tiny_spm  # noqa: F401

_kyutai_tiny_mimi_config = kyutai_tiny_mimi_config  # the old private name


def tiny_mimi_state(seed: int = 0) -> dict:
    """Random weights for the tiny Mimi, named as in Kyutai's published files (reference model's own names)."""
    from moshi.models.loaders import get_mimi

    return random_like(get_mimi(None, mimi_config=kyutai_tiny_mimi_config()).state_dict(), seed)


def build_tiny_repo(folder: Path, seed: int = 0, lm_cfg=None, names: dict | None = None) -> Path:
    """A folder in Kyutai's repo layout: model.safetensors (published naming), the Mimi file, the SentencePiece
    model and a config.json describing the tiny sizes (plus our "mimi" override). Returns the folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
    from lm_testutils import make_reference, published_state_dict

    cfg = lm_cfg or tiny_lm_config()
    lm_state = published_state_dict(make_reference(cfg, seed=seed))
    return write_kyutai_repo(folder, cfg, lm_state, tiny_mimi_state(seed), names)


@pytest.fixture
def single_thread():
    """Tiny models gain nothing from threads, and on a shared machine 2 threads can be 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
