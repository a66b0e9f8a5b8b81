"""A tiny model with Kyutai's 80 ms frames, for the server's tests, its clients' tests and bench/serve.py.

Our own LM (`LMModel.init_weights`) and Mimi (`randomize_model`) at tiny widths, but Mimi with Kyutai's SEANet
ratios (8, 6, 5, 4): one frame is 1920 samples at 24 kHz, as in the released model, so one Opus page of the wire
protocol is one model step. Written in Kyutai's repo layout (`write_kyutai_repo`): `openmoshi serve --model DIR`
and `resolve_model_files(DIR)` + `load_models` take it. moshi-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FAST_MIMI: dict[str, Any] = {"preset": "tiny", "seanet": {"ratios": [8, 6, 5, 4]}}  # 1920-sample frames


def build_server_repo(folder: str | Path, seed: int = 0, **lm_overrides: Any) -> Path:
    """Write the tiny model to `folder` (created); `lm_overrides`: LMConfig fields, e.g. context=8."""
    import torch

    from ..codec.mimi import Mimi
    from ..codec.presets import mimi_config_from_overrides
    from ..lm.model import LMModel
    from .kyutai import tiny_lm_config, write_kyutai_repo
    from .mimi_init import randomize_model

    cfg = tiny_lm_config(**lm_overrides)
    torch.manual_seed(seed)
    lm = LMModel(cfg)
    lm.init_weights()
    mimi = randomize_model(Mimi(mimi_config_from_overrides(FAST_MIMI)), seed)
    return write_kyutai_repo(Path(folder), cfg, lm.state_dict(), mimi.state_dict(), mimi_overrides=FAST_MIMI)
