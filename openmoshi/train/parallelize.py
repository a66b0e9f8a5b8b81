"""Make a model ready for training at scale, from the outside: the model code knows nothing of this.

`parallelize(model, blocks, ...)` applies, in this order, to the `blocks` the caller names (the transformer
layers; e.g. `lm_blocks(model)`):
1. activation checkpointing: each block's forward runs under `torch.utils.checkpoint` (non-reentrant), its
   activations recomputed in the backward pass. Done by replacing the instance's `forward`, not by wrapping
   the module, so parameter names (hence checkpoints and exports) are unchanged;
2. `torch.compile` of each block in place (`Module.compile`, names unchanged);
3. FSDP2 `fully_shard` of each block then of the root (when `mesh` is given, i.e. under torchrun): parameters
   become DTensors sharded over the ranks along dim 0, gathered per block for its forward and backward;
   gradients are reduce-scattered (averaged over ranks). Mixed precision stays with autocast in the step, so
   the sharded master weights are fp32.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(block: nn.Module) -> None:
    """Recompute `block`'s activations in the backward pass (its forward replaced on the instance)."""
    if getattr(block, "_openmoshi_checkpointed", False):
        return
    inner = block.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward  # type: ignore[method-assign]
    block._openmoshi_checkpointed = True  # type: ignore[attr-defined]


def parallelize(
    model: nn.Module,
    blocks: Iterable[nn.Module],
    *,
    activation_checkpointing: bool = False,
    compile: bool = False,
    mesh=None,
    extra_forward_methods: Iterable[str] = (),
) -> nn.Module:
    """Apply activation checkpointing, compile and FSDP2 to `model` (in place; returned for chaining).

    `mesh`: a 1-D DeviceMesh (`data_parallel_mesh()`); None = no sharding (one process).
    `extra_forward_methods`: root methods other than `forward` that run the model (FSDP2 must gather around them).
    """
    blocks = list(blocks)
    for block in blocks:
        if activation_checkpointing:
            apply_activation_checkpointing(block)
        if compile:
            block.compile()
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for name in extra_forward_methods:
            register_fsdp_forward_method(model, name)
    return model


def data_parallel_mesh(device: torch.device, world_size: int):
    """A 1-D mesh over every rank (for `parallelize(mesh=...)`); the process group must exist."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (world_size,))


def lm_blocks(model: nn.Module) -> list[nn.Module]:
    """The LM's units of checkpointing and sharding: every temporal and depth transformer layer."""
    return [*model.transformer.layers, *model.depformer.transformer.layers]  # type: ignore[union-attr]
