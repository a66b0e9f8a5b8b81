"""Transformer/attention: chunked streaming equals batch at any chunking, past the context window too;
per-row reset and exec mask; per-step weights."""

import random

import pytest
import torch

from openmoshi.nn.attention import set_static_shapes
from openmoshi.nn.streaming import reset_streaming, set_exec_mask, streaming
from openmoshi.nn.transformer import Transformer, TransformerConfig


def _cfg(**kw) -> TransformerConfig:
    base = dict(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, context=12, layer_scale=0.1)
    base.update(kw)
    return TransformerConfig(**base)


def _feed(model, x, sizes):
    outs, start = [], 0
    with streaming(model, x.shape[0]):
        for n in sizes:
            outs.append(model(x[:, start:start + n]))
            start += n
    return torch.cat(outs, dim=1)


def _random_sizes(total, rng, max_chunk=7):
    sizes = []
    while total > 0:
        n = min(total, rng.randint(1, max_chunk))
        sizes.append(n)
        total -= n
    return sizes


@pytest.mark.parametrize("cfg", [
    _cfg(),
    _cfg(norm="rms_norm", norm_eps=1e-8, gating="silu", layer_scale=None),
    _cfg(rope_max_period=None, context=5),
    _cfg(context=3, num_layers=1),
    _cfg(stream_chunk=2),  # Mimi: one frame = 2 steps attended in place
    _cfg(stream_chunk=5, context=4, num_layers=1),
])
def test_streaming_equals_batch_past_the_window(cfg):
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    x = torch.randn(2, 40, cfg.d_model)  # > 3x the context window
    with torch.no_grad():
        ref = model(x)
        rng = random.Random(1)
        for sizes in ([1] * 40, [40], _random_sizes(40, rng), _random_sizes(40, rng, max_chunk=20)):
            torch.testing.assert_close(_feed(model, x, sizes), ref, rtol=1e-5, atol=1e-5)


def test_window_is_exactly_context():
    """Changing an input more than `context` steps back leaves the output unchanged; one step less changes it."""
    model = Transformer(_cfg(num_layers=1, context=6)).eval()
    x = torch.randn(1, 20, 32)
    y = x.clone()
    y[:, 13] += torch.randn(32)
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :13], b[:, :13])
    assert not torch.allclose(a[:, 18], b[:, 18])  # 18 - 13 = 5 < 6: still seen
    torch.testing.assert_close(a[:, 19], b[:, 19])  # 19 - 13 = 6: out of the window


@pytest.mark.parametrize("stream_chunk", [1, 2, 3])
def test_reset_row_and_exec_mask(stream_chunk):
    model = Transformer(_cfg(stream_chunk=stream_chunk)).eval()
    a, b = torch.randn(1, 9, 32), torch.randn(1, 9, 32)
    with torch.no_grad(), streaming(model, 2):
        model(torch.cat([a[:, :4], a[:, :4]]))
        reset_streaming(model, torch.tensor([False, True]))
        set_exec_mask(model, torch.tensor([True, False]))
        model(torch.cat([a[:, 4:6], torch.randn(1, 2, 32)]))  # row 1 skips this
        set_exec_mask(model, None)
        out = model(torch.cat([a[:, 6:9], b[:, :3]]))
    with torch.no_grad():
        ref_a, ref_b = model(a), model(b)
    torch.testing.assert_close(out[0], ref_a[0, 6:9], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], ref_b[0, :3], rtol=1e-5, atol=1e-5)


def test_per_step_weights_stream_one_step_at_a_time():
    cfg = _cfg(num_steps=4, context=None, rope_max_period=None, gating="silu", norm="rms_norm", layer_scale=None)
    model = Transformer(cfg).eval()
    assert model.layers[0].attn.in_proj.weight.shape == (4, 96, 32)
    assert model.layers[0].ff.linear_in.weight.shape == (4, 128, 32)
    x = torch.randn(3, 4, 32)
    with torch.no_grad():
        ref = model(x)
        kv = model.new_kv(3, 4)
        for _frame in range(2):  # the depth transformer restarts every frame, reusing its buffer
            out = torch.cat([model(x[:, t:t + 1], t, kv) for t in range(4)], dim=1)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # two steps per call (causal within the call) give the same
        out = torch.cat([model(x[:, t:t + 2], t, kv) for t in (0, 2)], dim=1)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # step t really uses weights t: changing weights of step 2 changes only position 2 onward
    with torch.no_grad():
        model.layers[0].ff.linear_out.weight[2] += 1.0
        changed = model(x)
    torch.testing.assert_close(changed[:, :2], ref[:, :2])
    assert not torch.allclose(changed[:, 2], ref[:, 2])
    with pytest.raises(ValueError, match="exceed"):
        model(torch.randn(1, 5, 32))
    with pytest.raises(ValueError, match="exceed"):
        model(torch.randn(1, 2, 32), 3, model.new_kv(1, 4))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="divisible"):
        _cfg(d_model=30)
    with pytest.raises(ValueError, match="gating"):
        _cfg(gating="relu")


@pytest.mark.parametrize("stream_chunk,chunk", [(1, 1), (2, 2), (2, 3), (4, 2)])
def test_skipped_rows_far_past_the_window(stream_chunk, chunk):
    """A row paused on random calls, with garbage fed meanwhile, equals its own unpaused stream."""
    model = Transformer(_cfg(stream_chunk=stream_chunk, context=5)).eval()
    rng = random.Random(stream_chunk * 10 + chunk)
    x = torch.randn(1, 60, 32)
    got, start = [], 0
    with torch.no_grad(), streaming(model, 2):
        while start < 60:
            run = rng.random() < 0.6
            set_exec_mask(model, torch.tensor([True, run]))
            mine = x[:, start:start + chunk] if run else torch.randn(1, chunk, 32)
            inp = torch.cat([torch.randn(1, chunk, 32), mine])
            out = model(inp)
            if run:
                got.append(out[1:])
                start += chunk
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(torch.cat(got, dim=1), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stream_chunk,sizes", [(1, [1] * 30), (2, [2] * 15), (2, [1, 2, 5, 2, 2, 7, 1, 2, 8])])
def test_static_shapes_mode_equals_batch_and_keeps_state_in_place(stream_chunk, sizes):
    """Static-shape streaming attends the whole ring under a mask: same outputs; the state tensors are the ones
    allocated on entry (updated in place), and the per-row offsets are device tensors."""
    model = Transformer(_cfg(stream_chunk=stream_chunk, context=6)).eval()
    set_static_shapes(model, True)
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        ref = model(x)
        with streaming(model, 2):
            states = [layer.attn.state for layer in model.layers]
            ptrs = [(s.keys.data_ptr(), s.values.data_ptr(), s.positions.data_ptr(), s.offset.data_ptr())
                    for s in states]
            outs, start = [], 0
            for n in sizes:
                outs.append(model(x[:, start:start + n]))
                start += n
            assert [layer.attn.state for layer in model.layers] == states
            assert ptrs == [(s.keys.data_ptr(), s.values.data_ptr(), s.positions.data_ptr(), s.offset.data_ptr())
                            for s in states]
            assert states[0].offset.tolist() == [30, 30]
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, rtol=1e-5, atol=1e-5)


def test_eager_prefix_follows_offsets_written_from_outside():
    """The eager mode reads only the ring prefix that can hold keys; a row's state written from outside (as a
    restored snapshot does, in place) is picked up, not hidden by the stale host-side bound."""
    model = Transformer(_cfg(context=8, num_layers=1)).eval()
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        ref = model(x)
        with streaming(model, 1):
            for t in range(10):
                model(x[:, t:t + 1])
            snap = {k: v.clone() for k, v in vars(model.layers[0].attn.state).items() if torch.is_tensor(v)}
        with streaming(model, 1):
            model(x[:, :1])  # the fresh context's bound is now 1
            state = model.layers[0].attn.state
            for k, v in snap.items():
                if k != "exec_mask":
                    getattr(state, k).copy_(v)
            out = torch.cat([model(x[:, t:t + 1]) for t in (10, 11)], dim=1)
    torch.testing.assert_close(out, ref[:, 10:12], rtol=1e-5, atol=1e-5)
