"""The streaming mechanism: typed per-module state, entered with a `streaming(batch_size)` context.

A stateful layer subclasses `StreamingModule` and keeps everything it remembers between calls in a small
dataclass deriving from `StreamingState`. Outside a `streaming` context, `module.state` is None and the layer
runs in batch (whole-sequence) mode.

Rows of a streaming batch are independent conversations/streams:
- `reset_streaming(module, mask)` resets the rows where `mask` [B] is True (a new stream in that slot);
- `set_exec_mask(module, mask)` marks the rows that really execute the next calls; the others are computed
  (the batch stays rectangular) but their state is left untouched, as if the call never happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch
from torch import nn


@dataclass
class StreamingState:
    """Base of every layer's streaming state.

    `exec_mask` [B] bool: rows updated by the next calls (shared by all layers of one `streaming` context).
    """

    batch_size: int
    exec_mask: torch.Tensor = field(repr=False)

    def reset(self, mask: torch.Tensor) -> None:
        """Reset the rows where `mask` [B] is True. Subclasses extend this with their own fields."""


S = TypeVar("S", bound=StreamingState)


class StreamingModule(nn.Module, Generic[S]):
    """A layer with streaming state `self.state` (None in batch mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: S | None = None

    @property
    def is_streaming(self) -> bool:
        return self.state is not None

    def init_state(self, batch_size: int, exec_mask: torch.Tensor) -> S:
        """Allocate this layer's state for `batch_size` rows (called on entering `streaming`)."""
        raise NotImplementedError

    def streaming(self, batch_size: int) -> contextlib.AbstractContextManager[None]:
        return streaming(self, batch_size)


def _streaming_modules(module: nn.Module) -> Iterator[StreamingModule]:
    for m in module.modules():
        if isinstance(m, StreamingModule) and type(m).init_state is not StreamingModule.init_state:
            yield m


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def streaming(module: nn.Module, batch_size: int) -> Iterator[None]:
    """Put `module` and all its streaming sub-layers in streaming mode for `batch_size` rows.

    State is allocated on entry and dropped on exit. Nested entry of the same layer is an error.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = list(_streaming_modules(module))
    exec_mask = torch.ones(batch_size, dtype=torch.bool, device=_device_of(module))
    for layer in layers:
        if layer.state is not None:
            raise RuntimeError(f"{type(layer).__name__} is already streaming")
    try:
        for layer in layers:
            layer.state = layer.init_state(batch_size, exec_mask)
        yield
    finally:
        for layer in layers:
            layer.state = None


def _states(module: nn.Module) -> list[StreamingState]:
    states = [m.state for m in _streaming_modules(module) if m.state is not None]
    if not states:
        raise RuntimeError(f"{type(module).__name__} is not streaming: enter `streaming(module, batch_size)`")
    return states


def reset_streaming(module: nn.Module, mask: torch.Tensor | None = None) -> None:
    """Reset the rows where `mask` [B] is True (all rows when None) in every streaming layer of `module`."""
    states = _states(module)
    if mask is None:
        mask = torch.ones(states[0].batch_size, dtype=torch.bool, device=states[0].exec_mask.device)
    mask = mask.to(device=states[0].exec_mask.device, dtype=torch.bool)
    if mask.shape != (states[0].batch_size,):
        raise ValueError(f"reset mask must have shape [{states[0].batch_size}], got {list(mask.shape)}")
    for state in states:
        state.reset(mask)


def set_exec_mask(module: nn.Module, mask: torch.Tensor | None) -> None:
    """Rows where `mask` [B] is False keep their state through the next calls; None: all rows execute."""
    states = _states(module)
    for state in states:
        if mask is None:
            state.exec_mask.fill_(True)
        else:
            if mask.shape != state.exec_mask.shape:
                raise ValueError(f"exec mask must have shape {list(state.exec_mask.shape)}, got {list(mask.shape)}")
            state.exec_mask.copy_(mask)


def where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """`new` on the rows where `mask` [B] is True, `old` elsewhere; broadcast over the trailing dims."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)
