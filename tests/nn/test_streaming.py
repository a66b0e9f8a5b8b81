"""The streaming mechanism: state lifetime, nesting, mask validation, per-row snapshots and patches."""

import pytest
import torch

from openmoshi.nn.conv import StreamingConv1d
from openmoshi.nn.streaming import (
    StatePatch,
    fill_state,
    get_state,
    reset_streaming,
    set_exec_mask,
    set_state,
    streaming,
)
from openmoshi.nn.transformer import Transformer, TransformerConfig


def test_state_lives_only_inside_the_context():
    conv = StreamingConv1d(1, 1, 3)
    assert conv.state is None
    with streaming(conv, 3):
        assert conv.state is not None and conv.state.batch_size == 3
    assert conv.state is None


def test_state_is_dropped_on_error():
    conv = StreamingConv1d(1, 1, 3)
    with pytest.raises(ValueError), conv.streaming(1):
        conv(torch.randn(1, 2, 4))
    assert conv.state is None


def test_nested_streaming_is_refused():
    conv = StreamingConv1d(1, 1, 3)
    with streaming(conv, 1), pytest.raises(RuntimeError, match="already streaming"), streaming(conv, 1):
        pass


def test_masks_are_validated_and_need_streaming():
    conv = StreamingConv1d(1, 1, 3)
    with pytest.raises(RuntimeError, match="not streaming"):
        reset_streaming(conv)
    with streaming(conv, 2):
        with pytest.raises(ValueError, match=r"shape \[2\]"):
            reset_streaming(conv, torch.tensor([True]))
        with pytest.raises(ValueError, match="exec mask"):
            set_exec_mask(conv, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="batch_size"), streaming(conv, 0):
        pass


def _transformer():
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=2, dim_feedforward=32, context=5)
    return Transformer(cfg).eval()


@torch.no_grad()
def test_snapshot_restores_rows_in_place_and_elsewhere():
    model = _transformer()
    x = torch.randn(3, 12, 16)
    with streaming(model, 3):
        for t in range(4):
            model(x[:, t:t + 1])
        snap = get_state(model, [1])
        assert snap.rows == 1 and all("exec_mask" not in layer for layer in snap.layers)
        later = torch.cat([model(x[:, t:t + 1]) for t in range(4, 12)], dim=1)
        set_state(model, 1, snap.to("cpu"))
        again = torch.cat([model(x[:, t:t + 1]) for t in range(4, 12)], dim=1)
        torch.testing.assert_close(again[1], later[1], rtol=0, atol=0)
        # Into rows 0 and 2 at once (one saved row written into several), the same continuation.
        set_state(model, [0, 2], snap)
        moved = torch.cat([model(x[[1, 1, 1], t:t + 1]) for t in range(4, 12)], dim=1)
        for r in (0, 2):
            torch.testing.assert_close(moved[r], later[1], rtol=0, atol=1e-6)
        assert not torch.allclose(moved[1], later[1])  # row 1 went on from where it was


def test_snapshot_must_match():
    model, conv = _transformer(), StreamingConv1d(1, 1, 3)
    with streaming(model, 2), streaming(conv, 2):
        snap = get_state(model, [0, 1])
        with pytest.raises(ValueError, match="holds 2 rows"):
            set_state(model, [0, 1, 0], snap)
        with pytest.raises(ValueError, match="streaming layers"):
            set_state(conv, [0, 1], snap)
        with pytest.raises(IndexError, match="row 2 out of range"):
            get_state(model, [2])


@torch.no_grad()
def test_patch_replays_a_computation_from_reset_rows():
    """A patch recorded from fills 0 and 1 turns any reset row into the state that computation leaves."""
    model = _transformer()
    x = torch.randn(1, 2, 16)
    runs = []
    with streaming(model, 1):
        for fill in (0, 1):
            fill_state(model, fill)
            reset_streaming(model)
            model(x)
            runs.append(get_state(model, [0]))
        patch = StatePatch.between(runs[0], runs[1], 0, 1)
    kv = sum(index.numel() for layer in patch.layers for name, (index, _) in layer.items() if name == "keys")
    assert 0 < kv < sum(t.numel() for layer in runs[0].layers for n, t in layer.items() if n == "keys")
    y = torch.randn(3, 6, 16)
    with streaming(model, 3):
        model(y[:, :4])  # rows hold some history
        patch.apply(model, [0, 2])
        out = model(y[:, 4:5])
    with streaming(model, 3):
        model(x.expand(3, -1, -1))
        ref = model(y[:, 4:5])  # every row after the same computation from a fresh start
    for r in (0, 2):
        torch.testing.assert_close(out[r], ref[r], rtol=0, atol=1e-6)
    assert not torch.allclose(out[1], ref[1])
