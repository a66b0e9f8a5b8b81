"""LoRA (low-rank adapters, Hu et al. 2021) for our bias-free linears: nn.Linear and StepLinear.

A wrapped layer computes W x + scaling * B (A x): the base weight W stays (frozen) under its own name `weight`,
the adapters are two plain parameters of the same module, `lora_A` [r, in] and `lora_B` [out, r] (StepLinear:
one pair per step, [S, r, in] and [S, out, r]). A starts uniform in +-1/sqrt(in) (Kaiming-uniform with a=sqrt(5),
nn.Linear's own init) and B at zero, so a fresh adapter changes nothing. `scaling` multiplies the low-rank update
as is (not alpha / rank): the convention of Kyutai's loader and fine-tuning recipe (rank 128, scaling 2).

The wrappers subclass the layers they wrap (isinstance and the `step` argument of StepLinear keep working, so
training, activation checkpointing, FSDP2 and the streaming generator all run through them unchanged), hold no
global state, and leave the base weights' names as they were: a model's base checkpoint still loads into it.
Apply LoRA after loading the base weights and before any parallelize step (FSDP2, checkpoint wrappers, compile):

    n = apply_lora(model, rank=128, scaling=2.0)      # wraps every linear, freezes everything else
    ... train ...;  adapters = lora_state_dict(model)  # {"<layer>.lora_A": ..., "<layer>.lora_B": ...}
    merge_lora(model)                                  # W += scaling * B @ A, plain layers again

Layer names in `targets` are module names of the model (`transformer.layers.0.attn.in_proj`): a pattern is an
fnmatch glob on the full name, or (without a dot or wildcard) the last part of the name (`in_proj`, `heads`);
"all" (or no targets) means every linear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import nn

from .linear import StepLinear

ADAPTER_NAMES = ("lora_A", "lora_B")


def _check_rank_scaling(rank: int, scaling: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if isinstance(scaling, bool) or not isinstance(scaling, int | float) or not math.isfinite(scaling):
        raise ValueError(f"LoRA scaling must be a finite number, got {scaling!r}")


class LoRALinear(nn.Linear):
    """nn.Linear (no bias) plus a rank-r update: x [..., in] -> x W^T + scaling * (x A^T) B^T [..., out].

    Built from an existing layer, whose weight Parameter it takes over (no copy).
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dtype: torch.dtype | None = None) -> None:
        _check_rank_scaling(rank, scaling)
        if base.bias is not None:
            raise ValueError("LoRA wraps bias-free linears only")
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate and initialise a weight we replace
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", None)
        self.rank, self.scaling = rank, float(scaling)
        kw = {"device": base.weight.device, "dtype": dtype or base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)initialise the adapters only: the base weight is loaded from a checkpoint, never re-drawn."""
        _reset_adapters(self.lora_A, self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        low = F.linear(F.linear(x.to(self.lora_A.dtype), self.lora_A), self.lora_B)  # .to: no-op for one dtype
        return out + (self.scaling * low).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A [out, in], in float32 (what merging adds to the weight)."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling}"


class LoRAStepLinear(StepLinear):
    """StepLinear plus one rank-r update per step: position t of an input starting at `step` uses
    weight[step + t] + scaling * lora_B[step + t] @ lora_A[step + t]. x [B, T, in] -> [B, T, out]."""

    def __init__(self, base: StepLinear, rank: int, scaling: float, dtype: torch.dtype | None = None) -> None:
        _check_rank_scaling(rank, scaling)
        nn.Module.__init__(self)  # not StepLinear's: it would allocate and initialise a weight we replace
        self.in_features, self.out_features, self.num_steps = base.in_features, base.out_features, base.num_steps
        self.weight = base.weight
        self.rank, self.scaling = rank, float(scaling)
        kw = {"device": base.weight.device, "dtype": dtype or base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.num_steps, rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.empty(self.num_steps, self.out_features, rank, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)initialise the adapters only (each step's pair like a 2-D one)."""
        _reset_adapters(self.lora_A, self.lora_B)

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        base = super().forward(x, step)  # also checks the step range
        T = x.shape[1]
        x = x.to(self.lora_A.dtype)
        if T == 1:
            low = F.linear(F.linear(x, self.lora_A[step]), self.lora_B[step])
        else:
            # [T, B, in] x [T, in, r] -> [T, B, r] x [T, r, out] -> [T, B, out], one matmul per step.
            a = torch.bmm(x.transpose(0, 1), self.lora_A[step:step + T].transpose(1, 2))
            low = torch.bmm(a, self.lora_B[step:step + T].transpose(1, 2)).transpose(0, 1)
        return base + (self.scaling * low).to(base.dtype)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B[s] @ A[s] for every step [S, out, in], in float32."""
        return self.scaling * torch.bmm(self.lora_B.float(), self.lora_A.float())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, num_steps={self.num_steps}, "
                f"rank={self.rank}, scaling={self.scaling}")


LORA_TYPES = (LoRALinear, LoRAStepLinear)


@torch.no_grad()
def _reset_adapters(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.is_meta:
        return
    bound = 1 / math.sqrt(a.shape[-1])  # kaiming_uniform_(a=sqrt(5)) of an [r, in] matrix, per step
    nn.init.uniform_(a, -bound, bound)
    nn.init.zeros_(b)


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{module name: layer} of every plain linear LoRA can wrap (nn.Linear without bias, StepLinear)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LORA_TYPES):
            continue
        if (type(module) is nn.Linear and module.bias is None) or type(module) is StepLinear:
            out[name] = module
    return out


def lora_layers(model: nn.Module) -> dict[str, LoRALinear | LoRAStepLinear]:
    """{module name: layer} of every LoRA-wrapped layer."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LORA_TYPES)}


def matches(name: str, pattern: str) -> bool:
    """A target pattern: an fnmatch glob on the full module name, or (no dot, no wildcard) its last part."""
    if "." not in pattern and not any(c in pattern for c in "*?["):
        return name.rsplit(".", 1)[-1] == pattern
    return fnmatchcase(name, pattern)


def select_layers(model: nn.Module, targets: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The linears `targets` name (None or a list holding "all": every one). A pattern that matches no linear
    is a ValueError naming it."""
    layers = linear_layers(model)
    if targets is None:
        return layers
    if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"LoRA targets must be a list of non-empty name patterns, got {targets!r}")
    if "all" in targets:
        return layers
    unmatched = [t for t in targets if not any(matches(n, t) for n in layers)]
    if unmatched:
        names = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise ValueError(f"LoRA targets {unmatched} match no linear layer (layer names end in {names}; "
                         f"full names look like {next(iter(layers), '?')!r})")
    return {n: m for n, m in layers.items() if any(matches(n, t) for t in targets)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, rank: int, scaling: float, targets: Sequence[str] | None = None, *,
               dtype: torch.dtype | None = None) -> int:
    """Wrap the linears `targets` names (None: every linear, Kyutai's recipe) with rank-`rank` adapters and
    freeze every other parameter of `model` (only the adapters train). Returns the number of wrapped layers.

    Adapters take the device of the weight they adapt (on the meta device: call `init_lora` after `to_empty`)
    and its dtype, or `dtype` (e.g. float32 adapters over bfloat16 weights: inputs are cast for the low-rank
    path, its output back). A model that already has adapters is refused (merge or rebuild it first).
    """
    _check_rank_scaling(rank, scaling)
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_lora needs an nn.Module, got {type(model).__name__}")
    if lora_layers(model):
        raise ValueError("the model already has LoRA adapters (merge_lora them or start from the base model)")
    if type(model) in (nn.Linear, StepLinear):
        raise ValueError("apply_lora wraps the linears inside a model, not a bare layer")
    chosen = select_layers(model, targets)
    if not chosen:
        raise ValueError("the model has no linear layer to adapt")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in chosen.items():
        cls = LoRAStepLinear if isinstance(layer, StepLinear) else LoRALinear
        _set_submodule(model, name, cls(layer, rank, scaling, dtype))  # type: ignore[arg-type]
    return len(chosen)


def init_lora(model: nn.Module) -> None:
    """(Re)initialise every adapter (A random, B zero), e.g. after `to_empty` of a model built on meta."""
    for layer in lora_layers(model).values():
        layer.reset_parameters()


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone: {"<layer>.lora_A": ..., "<layer>.lora_B": ...} in our module names.

    Read through `model.state_dict()`, so wrappers that rename modules (activation checkpointing) are undone
    and, under FSDP2, the values are the sharded DTensors (`.full_tensor()` gathers one).
    """
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight (W += scaling * B @ A, computed in float32) and put the plain
    layer back; returns the number merged. The weight keeps its Parameter (same object, dtype and
    requires_grad), so the model's state dict is the base model's again."""
    merged = lora_layers(model)
    for name, layer in merged.items():
        w = layer.weight
        w.copy_((w.float() + layer.delta_weight()).to(w.dtype))
        if isinstance(layer, LoRAStepLinear):
            plain: nn.Module = StepLinear(layer.in_features, layer.out_features, layer.num_steps, device="meta")
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
        plain.weight = w
        _set_submodule(model, name, plain)
    return len(merged)
