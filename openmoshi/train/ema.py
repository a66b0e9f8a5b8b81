"""An exponential moving average of a model's weights (Mimi's recipe: decay 0.99), the weights one exports.

`WeightEMA(model, decay)` keeps a float32 shadow of every floating-point parameter; `update(model)` after each
optimiser step moves it towards the current weights (shadow <- decay * shadow + (1 - decay) * weight). Buffers
(Mimi's EMA codebooks, already averages of their own) are copied as they are. `export_state(model)` is the model's
state dict with the averaged parameters, full tensors (sharded ones gathered), in the model's dtypes: what a
trainer saves to export/. With `warmup`, the decay ramps up as min(decay, (1 + t) / (10 + t)), so the average
does not remember the random initialisation for long.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def _full(t: Tensor) -> Tensor:
    """A plain tensor of a (possibly sharded DTensor) value."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float = 0.99, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.steps = 0
        with torch.no_grad():
            self.shadow: dict[str, Tensor] = {
                name: p.detach().float().clone() for name, p in model.named_parameters()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - decay)
        self.steps += 1

    @torch.no_grad()
    def export_state(self, model: nn.Module) -> dict[str, Tensor]:
        """model.state_dict() with the averaged parameters (full, contiguous tensors on the CPU)."""
        out = {}
        for name, t in model.state_dict().items():
            value = self.shadow[name].to(t.dtype) if name in self.shadow else t
            out[name] = _full(value).detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged parameters into `model` (e.g. a copy used for evaluation)."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name].to(p.dtype))

    def as_module(self) -> nn.Module:
        """A module whose buffers are the shadow tensors themselves (names with '.' -> '__'), so a trainer
        checkpoints and restores the average like any model (loading copies into the shadow in place)."""
        holder = nn.Module()
        for name, t in self.shadow.items():
            holder.register_buffer(name.replace(".", "__"), t)
        return holder

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "steps": self.steps, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        shadow = state["shadow"]
        assert isinstance(shadow, Mapping)
        if set(shadow) != set(self.shadow):
            missing, extra = set(self.shadow) - set(shadow), set(shadow) - set(self.shadow)
            raise ValueError(f"EMA state does not fit the model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(extra)[:5]}")
        bad = [n for n, t in shadow.items() if tuple(t.shape) != tuple(self.shadow[n].shape)]
        if bad:
            raise ValueError(f"EMA state does not fit the model: shapes differ for {bad[:5]}")
        with torch.no_grad():
            for name, t in shadow.items():
                self.shadow[name].copy_(t)
        self.steps = int(state["steps"])  # type: ignore[arg-type]
