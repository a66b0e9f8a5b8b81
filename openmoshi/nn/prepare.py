"""Inference-only layouts, applied by one generic step after a model is built and loaded, never in constructors.

A constructor builds the standard layout (what training, FSDP and checkpoints see). `prepare_for_inference(model)`
walks the module tree and calls `prepare_for_inference()` on every module that defines it; such a hook may
re-lay its weights in memory for faster inference (same shapes, same values, same names). Loaders call it
once the weights are in place:

    model = Mimi(cfg); load_safetensors(model, path); prepare_for_inference(model.eval())

The state dict stays saveable after the step: a module whose hook changed a layout returns contiguous copies
from `state_dict()` (`safetensors.torch.save_file` needs them). Loading into a prepared model must copy into the
parameters themselves (`load_state_dict`, or `state_dict(keep_vars=True)` targets), not into those copies.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

HOOK = "prepare_for_inference"


def prepare_for_inference(model: M) -> M:
    """Call `prepare_for_inference()` on every sub-module of `model` (itself included) that defines it.

    Idempotent when the hooks are (they must be: a loader and a caller may both call it). Returns `model`.
    """
    for module in model.modules():
        hook = getattr(module, HOOK, None)
        if callable(hook):
            hook()
    return model


def _contiguous_state(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    # Only plain (detached) entries: `state_dict(keep_vars=True)` hands out the parameters themselves, which
    # loaders copy into; those must stay the live, re-laid tensors.
    for name in list(state):
        value = state[name]
        if (name.startswith(prefix) and isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter)
                and not value.is_contiguous()):
            state[name] = value.contiguous()


def keep_state_dict_contiguous(module: nn.Module) -> None:
    """Make `module.state_dict()` return contiguous tensors whatever the memory layout of its own tensors."""
    if not getattr(module, "_contiguous_state_hook", False):
        module.register_state_dict_post_hook(_contiguous_state)
        module._contiguous_state_hook = True  # type: ignore[assignment]


@torch.no_grad()
def store_transposed(linear: nn.Linear) -> None:
    """Give a Linear weight [out, in] the memory layout of its transpose (same shape, same values, same object).

    For streaming on CPU, where a call multiplies 1-2 rows by each weight and reading the weight is the cost: BLAS
    reads an [in, out]-contiguous operand faster than a transposed one (Mimi's frame: ~5% measured, bench/codec.py).
    `.to()` and `copy_` keep the layout. Idempotent.
    """
    w = linear.weight
    if w.dim() == 2 and w.shape[0] > 1 and w.stride() != (1, w.shape[0]):
        w.data = w.detach().t().contiguous().t()
    keep_state_dict_contiguous(linear)
