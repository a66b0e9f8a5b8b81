"""Weight initialisation for models built on the meta device: `init_weights(module)` (re)initialises every
parameter in place, so `Model(cfg, device="meta").to_empty(device=d)` followed by `init_weights()` gives the same
distribution as building on `d` directly.

Every layer of ours with parameters defines `reset_parameters()` (its constructor calls it too); torch's layers
(nn.Linear, nn.Conv1d, ...) have their own.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """Call `reset_parameters()` on `module` and every sub-module that has one (each resets only its own)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
