"""The FACTS.md random init of Mimi (varied codes; the reference's default init leaves codebooks at zero).

Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.01^2), layer scales 0.1, norms ~ 1 + N(0, 0.1^2), embedding_sum ~
N(0, 0.3^2), cluster_usage ~ U(0.5, 1.5), _initialized = 1. States are built in Kyutai's in-memory naming from
`mimi_state_dict.txt` (a copy of the project's reference listing, shipped beside this module so that a clone is
self-contained), so the same tensors load into the reference and, through our adapter, into ours.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

STATE_DICT_TXT = Path(__file__).with_name("mimi_state_dict.txt")


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """name -> shape, in Kyutai's in-memory naming (318 tensors)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in STATE_DICT_TXT.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape, _dtype = line.split("\t")
        shapes[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """One tensor of the FACTS.md init, chosen by the tensor's role (read from its name)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "embedding_sum":
        return torch.randn(shape, generator=gen) * 0.3
    if leaf == "cluster_usage":
        return torch.rand(shape, generator=gen) + 0.5
    if leaf == "_initialized":
        return torch.ones(shape)
    if leaf == "scale":
        return torch.full(shape, 0.1)
    if ".norm" in name:
        base = 1.0 if leaf == "weight" else 0.0
        return base + torch.randn(shape, generator=gen) * (0.1 if leaf == "weight" else 0.01)
    if leaf == "bias":
        return torch.randn(shape, generator=gen) * 0.01
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


def random_state(seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """A random state in Kyutai's in-memory naming, restricted to names starting with `prefix`."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: random_tensor(name, shape, gen)
        for name, shape in reference_shapes().items()
        if name.startswith(prefix)
    }


def to_published_naming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kyutai's file naming: `self_attn.in_proj_weight` / `self_attn.out_proj.weight`."""
    out = {}
    for name, value in state.items():
        name = name.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
        name = name.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
        out[name] = value
    return out


def random_like(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The FACTS.md init for every tensor of `state` (e.g. a reference model's), in the published naming."""
    gen = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, tuple(value.shape), gen).to(value.dtype).contiguous()
            for name, value in to_published_naming(state).items()}


def randomize_model(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill a model built from our own config (any size) with the FACTS.md init, using our tensor names."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            # Our names carry the same roles as Kyutai's: `.norm`, `.scale`, `bias`, the codebook buffers.
            tensor.copy_(random_tensor(name, tuple(tensor.shape), gen))
    return model
