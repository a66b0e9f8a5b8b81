"""The streaming mechanism: typed per-module state, entered with a `streaming(batch_size)` context.

A stateful layer subclasses `StreamingModule` and keeps everything it remembers between calls in a small
dataclass deriving from `StreamingState`. Outside a `streaming` context, `module.state` is None and the layer
runs in batch (whole-sequence) mode.

Rows of a streaming batch are independent conversations/streams:
- `reset_streaming(module, mask)` resets the rows where `mask` [B] is True (a new stream in that slot);
- `set_exec_mask(module, mask)` marks the rows that really execute the next calls; the others are computed
  (the batch stays rectangular) but their state is left untouched, as if the call never happened;
- `get_state(module, rows)` copies the rows' state out (a `StreamingSnapshot`) and `set_state(module, rows,
  snapshot)` writes it back, into the same rows or others: a conversation can be parked, moved or replayed;
- a `StatePatch` holds what one computation from a reset row always leaves in the state (found by running it
  from two different fills); applied to any rows, it replays that computation there without running it.
Per-row state is, by convention, every state tensor whose dim 0 is the batch; layers update it in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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

    # Host-side hints: a layer may keep host values derived from its device state (attention's bound on the
    # filled part of its ring) so that a step reads no device value. Writes from outside keep them valid here.
    def host_hint(self) -> Any:
        """A host-side summary of every row's state, valid now (None: the layer keeps none, or it is stale)."""
        return None

    def rows_written(self, before: Any, written: Any) -> None:
        """Called after `set_state` / `StatePatch.apply` wrote some rows: `before` is `host_hint()` taken just
        before the write, `written` the hint of the state the rows came from (either may be None)."""


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


# ---- per-row state: snapshots and patches ------------------------------------------------------------------
# By convention (docs/architecture.md) a state field that is a tensor whose dim 0 is the batch holds per-row
# state; everything else (exec_mask, host-side values) is shared by the rows and is neither saved nor restored.


def _row_fields(state: StreamingState) -> dict[str, torch.Tensor]:
    return {
        name: value
        for name, value in vars(state).items()
        if name != "exec_mask" and isinstance(value, torch.Tensor) and value.dim() >= 1
        and value.shape[0] == state.batch_size
    }


def _row_index(rows: int | Sequence[int] | torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    if isinstance(rows, torch.Tensor):
        return rows.to(device=device, dtype=torch.long)
    rows = [rows] if isinstance(rows, int) else list(rows)
    for r in rows:
        if not 0 <= r < batch_size:
            raise IndexError(f"row {r} out of range for a batch of {batch_size}")
    return torch.tensor(rows, dtype=torch.long, device=device)


@dataclass
class StreamingSnapshot:
    """The per-row state of every streaming layer of a module, for `rows` rows: per layer, field -> [rows, ...].

    Taken by `get_state`, written back (into the same or other rows) by `set_state`. Tensors are copies.
    """

    layers: list[dict[str, torch.Tensor]]
    rows: int
    hints: list[Any] = field(default_factory=list)  # per layer: its `host_hint()` when the snapshot was taken

    def to(self, device: torch.device | str) -> StreamingSnapshot:
        """A copy on `device` (e.g. "cpu" to park a conversation off the accelerator)."""
        layers = [{k: v.to(device) for k, v in layer.items()} for layer in self.layers]
        return StreamingSnapshot(layers, self.rows, list(self.hints))


def get_state(module: nn.Module, rows: int | Sequence[int] | torch.Tensor) -> StreamingSnapshot:
    """Copy the per-row state of `rows` from every streaming layer of `module`."""
    states = _states(module)
    index = _row_index(rows, states[0].batch_size, states[0].exec_mask.device)
    layers = [{name: t.index_select(0, index) for name, t in _row_fields(s).items()} for s in states]
    return StreamingSnapshot(layers, index.numel(), [s.host_hint() for s in states])


def set_state(module: nn.Module, rows: int | Sequence[int] | torch.Tensor, snapshot: StreamingSnapshot) -> None:
    """Write `snapshot` into `rows` of every streaming layer of `module`, in place.

    The snapshot holds len(rows) rows, or 1 row (then written into every row of `rows`).
    """
    states = _states(module)
    index = _row_index(rows, states[0].batch_size, states[0].exec_mask.device)
    if snapshot.rows not in (1, index.numel()):
        raise ValueError(f"the snapshot holds {snapshot.rows} rows, cannot restore {index.numel()}")
    if len(snapshot.layers) != len(states):
        raise ValueError(f"the snapshot has {len(snapshot.layers)} streaming layers, the module {len(states)}")
    for state, saved in zip(states, snapshot.layers, strict=True):
        fields = _row_fields(state)
        if fields.keys() != saved.keys():
            raise ValueError(f"snapshot fields {sorted(saved)} do not match {type(state).__name__} {sorted(fields)}")
        for name, t in fields.items():
            if saved[name].shape[1:] != t.shape[1:]:
                raise ValueError(f"snapshot field {name} has shape {list(saved[name].shape)}, "
                                 f"the state {list(t.shape)}")
    hints = snapshot.hints or [None] * len(states)
    for state, saved, hint in zip(states, snapshot.layers, hints, strict=True):
        before = state.host_hint()
        for name, t in _row_fields(state).items():
            src = saved[name].to(device=t.device, dtype=t.dtype)
            t[index] = src.expand(index.numel(), *src.shape[1:])
        state.rows_written(before, hint)


def fill_state(module: nn.Module, value: float) -> None:
    """Fill every per-row state tensor of `module`'s streaming layers with `value` (all rows)."""
    for state in _states(module):
        for t in _row_fields(state).values():
            t.fill_(value)


@dataclass
class StatePatch:
    """Some elements of one row's state (per layer, field -> (flat index [n], values [n])), to be written into
    any rows: what a given computation from a reset row always leaves, whatever the row held before."""

    layers: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]
    hints: list[Any] = field(default_factory=list)  # per layer: the host hint of the computation's result

    @staticmethod
    def between(a: StreamingSnapshot, b: StreamingSnapshot, fill_a: float, fill_b: float) -> StatePatch:
        """The elements set by a computation run twice on one row: from state filled with `fill_a` (giving
        `a`) and with `fill_b` (giving `b`). Elements still at their fills were not written; all others are
        kept with a's values. One host sync per field: meant for set-up, not for a per-frame step."""
        layers = []
        for la, lb in zip(a.layers, b.layers, strict=True):
            layer = {}
            for name, ta in la.items():
                ta0, tb0 = ta[0].flatten(), lb[name][0].flatten()
                untouched = (ta0 == fill_a) & (tb0 == fill_b)
                index = (~untouched).nonzero()[:, 0]
                layer[name] = (index, ta0[index])
            layers.append(layer)
        return StatePatch(layers, list(a.hints))

    def apply(self, module: nn.Module, rows: Sequence[int] | torch.Tensor) -> None:
        """Write the patch into `rows` of every streaming layer of `module`, in place."""
        states = _states(module)
        index = _row_index(rows, states[0].batch_size, states[0].exec_mask.device)
        n = index.numel()
        hints = self.hints or [None] * len(states)
        for state, patch, hint in zip(states, self.layers, hints, strict=True):
            before = state.host_hint()
            fields = _row_fields(state)
            for name, (flat, values) in patch.items():
                t = fields[name]
                if t.is_contiguous():
                    t.view(t.shape[0], -1)[index[:, None], flat[None, :]] = values.expand(n, -1)
                else:
                    part = t.index_select(0, index).reshape(n, -1)
                    part[:, flat] = values.expand(n, -1)
                    t[index] = part.view(n, *t.shape[1:])
            state.rows_written(before, hint)
