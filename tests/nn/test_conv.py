"""Streaming convolutions: chunked output equals whole-sequence output; exec mask and per-row reset."""

import random

import pytest
import torch

from openmoshi.nn.conv import StreamingConv1d, StreamingConvTranspose1d
from openmoshi.nn.streaming import reset_streaming, set_exec_mask, streaming


def _chunks(total: int, rng: random.Random, multiple: int = 1, max_chunk: int = 9) -> list[int]:
    sizes = []
    while total > 0:
        n = min(total, multiple * rng.randint(0, max_chunk))
        sizes.append(n)
        total -= n
    return sizes


def _feed(module, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, start = [], 0
    with streaming(module, x.shape[0]):
        for n in sizes:
            outs.append(module(x[:, :, start:start + n]))
            start += n
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("kernel,stride,dilation,groups,pad_mode", [
    (7, 1, 1, 1, "constant"), (3, 1, 2, 1, "constant"), (8, 4, 1, 1, "constant"), (4, 2, 1, 1, "replicate"),
    (5, 3, 2, 2, "constant"), (2, 2, 1, 4, "replicate"), (16, 8, 1, 1, "constant"),
])
def test_conv_chunked_equals_batch(kernel, stride, dilation, groups, pad_mode):
    rng = random.Random(kernel * 100 + stride)
    conv = StreamingConv1d(4, 8, kernel, stride=stride, dilation=dilation, groups=groups, pad_mode=pad_mode)
    x = torch.randn(2, 4, stride * 37)
    ref = conv(x)
    assert ref.shape == (2, 8, 37)
    for _ in range(3):
        out = _feed(conv, x, _chunks(x.shape[-1], rng))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,groups", [(4, 2, 1), (16, 8, 1), (4, 2, 4), (3, 1, 1), (5, 5, 1)])
def test_conv_transpose_chunked_equals_batch(kernel, stride, groups):
    rng = random.Random(kernel)
    convtr = StreamingConvTranspose1d(4, 8, kernel, stride=stride, groups=groups)
    x = torch.randn(3, 4, 29)
    ref = convtr(x)
    assert ref.shape == (3, 8, 29 * stride)
    for _ in range(3):
        out = _feed(convtr, x, _chunks(29, rng))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_conv_replicate_pads_with_first_sample():
    conv = StreamingConv1d(1, 1, 4, stride=2, pad_mode="replicate", bias=False)
    x = torch.randn(1, 1, 10)
    manual = torch.nn.functional.conv1d(torch.cat([x[:, :, :1].expand(1, 1, 2), x], -1), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), manual)


def test_reset_one_row_restarts_that_stream_only():
    conv = StreamingConv1d(2, 3, 4, stride=2, pad_mode="replicate")
    convtr = StreamingConvTranspose1d(3, 2, 4, stride=2)
    model = torch.nn.Sequential(conv, convtr)
    a, b = torch.randn(1, 2, 16), torch.randn(1, 2, 16)
    with streaming(model, 2):
        model(torch.cat([a, a], 0)[:, :, :8])
        reset_streaming(model, torch.tensor([False, True]))
        out = torch.cat([model(torch.cat([a[:, :, 8:12], b[:, :, :4]], 0)),
                         model(torch.cat([a[:, :, 12:], b[:, :, 4:8]], 0))], -1)
    torch.testing.assert_close(out[:1], model(a)[:, :, 8:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1:], model(b)[:, :, :8], rtol=1e-5, atol=1e-5)


def test_exec_mask_leaves_skipped_rows_untouched():
    model = torch.nn.Sequential(StreamingConv1d(2, 3, 4, stride=2), StreamingConvTranspose1d(3, 2, 6, stride=2))
    x = torch.randn(2, 2, 24)
    with streaming(model, 2):
        first = model(x[:, :, :8])
        set_exec_mask(model, torch.tensor([True, False]))
        model(torch.randn(2, 2, 8))  # row 1 skips this garbage
        set_exec_mask(model, torch.tensor([False, True]))
        second_row1 = model(x[:, :, 8:16])[1]
        set_exec_mask(model, None)
    ref = model(x[1:, :, :16])[0]
    torch.testing.assert_close(torch.cat([first[1], second_row1], -1), ref, rtol=1e-5, atol=1e-5)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expected input \[B, 4, T\]"):
        StreamingConv1d(4, 4, 3)(torch.randn(1, 3, 10))


def _state_tensors(module) -> list[torch.Tensor]:
    return [t for m in module.modules() if getattr(m, "state", None) is not None
            for t in vars(m.state).values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_state_is_allocated_once_and_updated_in_place(pad_mode):
    # The graph-safe contract: the same state tensors (same storage) from entry to exit, rows in dim 0.
    model = torch.nn.Sequential(StreamingConv1d(2, 3, 8, stride=4, pad_mode=pad_mode),
                                StreamingConvTranspose1d(3, 2, 8, stride=4))
    x = torch.randn(2, 2, 4 * 12)
    with streaming(model, 2):
        tensors = _state_tensors(model)
        ptrs = [t.data_ptr() for t in tensors]
        assert all(t.shape[0] == 2 for t in tensors)
        outs = []
        for i in range(12):  # one stride per call (a "frame"): the shapes never change
            outs.append(model(x[:, :, 4 * i:4 * (i + 1)]))
            assert [t.data_ptr() for t in _state_tensors(model)] == ptrs
        reset_streaming(model, torch.tensor([True, False]))
        assert [t.data_ptr() for t in _state_tensors(model)] == ptrs
    torch.testing.assert_close(torch.cat(outs, -1), model(x), rtol=1e-5, atol=1e-5)


def test_init_weights_after_meta_build():
    with torch.device("meta"):
        conv, convtr = StreamingConv1d(8, 16, 5, stride=2), StreamingConvTranspose1d(16, 8, 4, stride=2)
    for m in (conv, convtr):
        m.to_empty(device="cpu")
        m.init_weights()
        fan_in = m.weight.shape[1] * m.kernel_size
        assert abs(float(m.weight.detach().std()) * fan_in ** 0.5 - 1) < 0.25  # N(0, 1/fan_in)
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
