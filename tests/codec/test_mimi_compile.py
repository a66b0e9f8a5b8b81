"""torch.compile of Mimi's per-frame streaming step (encode one frame, decode it): compiled once, equal to eager.

A counting backend (the captured graphs run as traced, eagerly) counts every compilation; after the first frame
nothing may compile again over 20 frames, which needs graph-safe streaming state (tensors updated in place, no
host-side value that changes per call, static shapes).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from codec_testutils import randomize_model

from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.nn.prepare import prepare_for_inference
from openmoshi.nn.streaming import StreamingModule, reset_streaming, streaming

try:  # the attention's static-shape mode: a step attends the whole ring with a mask, no host-side value
    from openmoshi.nn.attention import set_static_shapes
except ImportError:  # a tree without it (branch a2 alone): the full frame step xfails below, naming why
    set_static_shapes = None

CFG = MimiConfig.tiny()
FRAME = CFG.frame_size
FRAMES = 20


class _Counter:
    """A torch.compile backend that records each graph it is handed and runs it as traced."""

    def __init__(self) -> None:
        self.compiles = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.compiles += 1
        return gm.forward


@pytest.fixture
def mimi() -> Mimi:
    model = prepare_for_inference(randomize_model(Mimi(CFG), seed=0).eval())
    if set_static_shapes is not None:
        set_static_shapes(model, True)
    return model


def _frame_step(model: Mimi):
    def step(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = model.encode(frame, CFG.num_codebooks)
        return codes, model.decode(codes)
    return step


def _codec_step(model: Mimi):
    """The frame step without the bottleneck transformers: every stateful part the codec owns (convs, quantizer)."""
    def step(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = model.quantizer.encode(model.downsample(model.encoder(frame)), CFG.num_codebooks)
        return codes, model.decoder(model.upsample(model.quantizer.decode(codes)))
    return step


def _run(make_step, model: Mimi, wav: torch.Tensor, compiled: bool, reset_at: int | None = None):
    counter = _Counter()
    step = make_step(model)
    if compiled:
        torch._dynamo.reset()
        step = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    outs, compiles = [], []
    with torch.no_grad(), streaming(model, wav.shape[0]):
        for i in range(FRAMES):
            if i == reset_at:
                reset_streaming(model, torch.tensor([False, True]))
            outs.append(step(wav[..., i * FRAME:(i + 1) * FRAME]))
            compiles.append(counter.compiles)
    return outs, compiles


def _host_values_change(model: Mimi, wav: torch.Tensor) -> list[str]:
    """Non-tensor fields of streaming states that differ between two consecutive eager frame steps."""
    def snapshot() -> dict[str, object]:
        return {f"{name}.{f.name}": getattr(m.state, f.name) for name, m in model.named_modules()
                if isinstance(m, StreamingModule) and m.state is not None
                for f in dataclasses.fields(m.state) if not isinstance(getattr(m.state, f.name), torch.Tensor)}
    step = _frame_step(model)
    with torch.no_grad(), streaming(model, wav.shape[0]):
        step(wav[..., :FRAME])
        first = snapshot()
        step(wav[..., FRAME:2 * FRAME])
        second = snapshot()
    return sorted(k for k in first if first[k] != second[k])


def _wav(batch: int) -> torch.Tensor:
    return torch.randn(batch, 1, FRAMES * FRAME, generator=torch.Generator().manual_seed(1))


def _assert_equal(compiled, eager) -> None:
    for (c_codes, c_audio), (e_codes, e_audio) in zip(compiled, eager, strict=True):
        assert torch.equal(c_codes, e_codes)
        torch.testing.assert_close(c_audio, e_audio, atol=1e-6, rtol=1e-6)


def test_codec_parts_compile_once_and_equal_eager(mimi: Mimi) -> None:
    wav = _wav(2)
    eager, _ = _run(_codec_step, copy.deepcopy(mimi), wav, compiled=False, reset_at=7)
    compiled, compiles = _run(_codec_step, mimi, wav, compiled=True, reset_at=7)
    assert compiles[0] >= 1 and compiles[-1] == compiles[0], compiles  # one graph, never recompiled (reset too)
    _assert_equal(compiled, eager)


def test_frame_step_compiles_once_and_equals_eager(mimi: Mimi) -> None:
    wav = _wav(1)
    changing = _host_values_change(copy.deepcopy(mimi), wav)
    if any(".attn." in name for name in changing):
        # Owned by nn/attention.py (made graph-safe on another branch); the codec's own parts are checked above.
        pytest.xfail(f"attention streaming state changes host-side values per step: {changing}")
    assert not changing, changing
    eager, _ = _run(_frame_step, copy.deepcopy(mimi), wav, compiled=False)
    compiled, compiles = _run(_frame_step, mimi, wav, compiled=True)
    assert compiles[0] >= 1 and compiles[-1] == compiles[0], compiles
    _assert_equal(compiled, eager)
