"""The attention window, exactly, on a tiny one-layer transformer with a short context: fast and exhaustive.

With one layer, output p depends on input j exactly when j is in p's window: p - context < j <= p. Each test
perturbs every input position in turn and checks which outputs moved, in batch mode and in streaming mode (one
step at a time, Mimi's two-step frames, chunks larger than the streaming chunk, mixed), far past the window. An
off-by-one in the window mask, the ring's size or its fast path changes the dependency pattern; the real-size
Mimi parity case (tests/codec/test_parity_reference.py, 12.8 s) checks the same at 250 steps, slowly.
"""

import pytest
import torch

from openmoshi.nn.streaming import streaming
from openmoshi.nn.transformer import Transformer, TransformerConfig

T = 14


def _model(context: int, stream_chunk: int, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, context=context,
                            layer_scale=None, stream_chunk=stream_chunk)
    return Transformer(cfg).eval()  # default init: attention far from one-hot, every in-window input counts


def _run(model: Transformer, x: torch.Tensor, sizes: list[int] | None) -> torch.Tensor:
    with torch.no_grad():
        if sizes is None:
            return model(x)
        outs, start = [], 0
        with streaming(model, x.shape[0]):
            for n in sizes:
                outs.append(model(x[:, start:start + n]))
                start += n
        return torch.cat(outs, dim=1)


def dependencies(model: Transformer, sizes: list[int] | None) -> torch.Tensor:
    """[T, T] bool: output p moved when input j was perturbed (batch of 2 rows: both must agree)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, 16, generator=gen)
    base = _run(model, x, sizes)
    deps = torch.zeros(T, T, dtype=torch.bool)
    for j in range(T):
        y = x.clone()
        y[:, j] += 3.0 * torch.randn(2, 16, generator=gen)
        moved = (_run(model, y, sizes) - base).abs().amax(dim=-1)  # [2, T]
        # in the window: moves of 0.1 or more (measured); outside: exactly 0 (measured), allowing float rounding
        assert ((moved > 1e-2) | (moved < 1e-4)).all(), f"an ambiguous move: {moved}"
        assert torch.equal(moved[0] > 1e-2, moved[1] > 1e-2)
        deps[:, j] = moved[0] > 1e-2
    return deps


def expected(context: int) -> torch.Tensor:
    p = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= p) & (j > p - context)


SCHEDULES = {
    "batch": (1, None),
    "one-step": (1, [1] * T),
    "chunks-past-stream-chunk": (1, [3, 5, 6]),
    "mimi-frames": (2, [2] * (T // 2)),
    "mimi-mixed": (2, [2, 1, 1, 2, 4, 2, 2]),
    "mimi-batch": (2, None),
}


@pytest.mark.parametrize("context", [3, 4])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_output_depends_on_exactly_the_window(context, schedule):
    stream_chunk, sizes = SCHEDULES[schedule]
    assert sizes is None or sum(sizes) == T
    deps = dependencies(_model(context, stream_chunk), sizes)
    want = expected(context)
    wrong = (deps != want).nonzero().tolist()
    assert not wrong, f"(output, input) pairs off the window {context}: {wrong[:8]}"
