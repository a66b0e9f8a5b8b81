"""The streaming mechanism: state lifetime, nesting, mask validation."""

import pytest
import torch

from openmoshi.nn.conv import StreamingConv1d
from openmoshi.nn.streaming import reset_streaming, set_exec_mask, streaming


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
