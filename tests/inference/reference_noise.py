"""Our sampler fed the reference's random numbers, so sampled runs can be compared with Kyutai's draw for draw.

Ours draws a categorical sample by Gumbel-max over counter-based noise, argmax(x - log(-log u)) with u from
`uniform_noise` (per row, batch-independent); Kyutai's `sample_token` takes argmax(p / e) with e ~ Exp(1) from
torch's global generator. With u = exp(-e) the two are the same draw (log(p / e) = log p - log(-log u)), so
replacing `uniform_noise` by exp(-Exp(1) noise drawn in the reference's order and shapes, from a CPU generator
seeded as the reference's global one) makes our generator draw exactly the reference's tokens: what remains
tested is that every setting reaches the draw it belongs to. The noise itself is tested in
tests/inference/test_sampling.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

import openmoshi.inference.sampling as sampling


@contextlib.contextmanager
def reference_noise(seed: int) -> Iterator[None]:
    """Inside: our samplers take their noise from a generator seeded as the reference's `torch.manual_seed(seed)`
    (its own, so model building between the seed and the draws does not shift it)."""
    gen = torch.Generator().manual_seed(seed)

    def torch_noise(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        e = torch.empty((keys.shape[0], index.shape[-1]), dtype=torch.float32).exponential_(1.0, generator=gen)
        return torch.exp(-e).to(keys.device)

    mp = pytest.MonkeyPatch()
    mp.setattr(sampling, "uniform_noise", torch_noise)
    try:
        yield
    finally:
        mp.undo()
