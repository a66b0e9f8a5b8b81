"""Causal multi-head self-attention with RoPE, a context window and a streaming ring KV cache.

A query at absolute position p attends exactly the keys at positions p - context + 1 .. p, in batch mode and in
streaming mode alike, whatever the chunking: streaming output equals batch output.

Three ways to call it, `forward(x, step=0, kv=None)`:
- batch (training): no state, positions 0..T-1;
- streaming (under `streaming(module, B)`): per row a ring of key/value slots with the absolute position held
  by each slot (-1 = empty) and the row's next position. Memory is flat however long the stream runs; positions
  keep growing (RoPE uses absolute positions, it never wraps with the window);
- depth steps (`kv` given, a `KVBuffer`): a short sequence whose keys/values live in a caller's buffer;
  `step` is the position of x's first entry (and the index of the per-step weights). The depth transformer
  generates this way, through the very modules it trains with.

Graph safety: the state is allocated once and only updated in place; positions and offsets are device tensors.
In the default (eager) mode a single-step call attends only the ring prefix that can hold keys, bounded by a
host-side hint (refreshed by one host read if the offsets were written from outside, e.g. a restored snapshot).
In static-shape mode (`set_static_shapes(module, True)`, before or during streaming) a step attends the whole
ring with a mask: no data-dependent shape and no host value, so a compiled step compiles once and a CUDA graph
can capture it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .linear import apply_linear, make_linear
from .rope import apply_rope, rope_frequencies
from .streaming import StreamingModule, StreamingState, where_rows


def _version(t: torch.Tensor) -> int:
    """The tensor's in-place write counter; -1 for inference tensors (they keep none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class KVBuffer:
    """Keys/values of one short sequence for step-by-step calls (the depth transformer's time step).

    `storage` [2, B, H, S, Dh] is allocated once and written in place (no autograd: the generator reuses it for
    every frame). Under autograd a write makes a new tensor instead (what attention read at earlier steps stays
    as autograd saved it; an in-place write there would invalidate it). Not a tensor itself, so wrappers that
    map over a module's tensor arguments (FSDP's hooks) pass it through untouched.
    """

    def __init__(self, storage: torch.Tensor) -> None:
        self.storage = storage
        self.data = storage  # [2, B, H, >= end, Dh]: slots 0..end-1 valid after write(step, ...)

    def write(self, step: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """kv [2, B, H, T, Dh] at slots step..step+T-1 -> (keys, values) [B, H, step + T, Dh]."""
        end = step + kv.shape[3]
        if end > self.storage.shape[3]:
            raise ValueError(f"steps {step}..{end - 1} exceed the key/value buffer's {self.storage.shape[3]} slots")
        if torch.is_grad_enabled() and (kv.requires_grad or self.data.requires_grad):
            self.data = kv if step == 0 else torch.cat([self.data[:, :, :, :step], kv], dim=3)
        else:
            self.storage[:, :, :, step:end] = kv
            self.data = self.storage
        return self.data[0, :, :, :end], self.data[1, :, :, :end]


def new_kv_buffers(attns: list[Attention], batch_size: int, length: int) -> list[KVBuffer]:
    """One KVBuffer per attention layer, all views of one zeroed allocation [L, 2, B, H, length, Dh]."""
    a = attns[0]
    w = a.out_proj.weight
    data = torch.zeros(len(attns), 2, batch_size, a.num_heads, length, a.head_dim, device=w.device, dtype=w.dtype)
    return [KVBuffer(data[i]) for i in range(len(attns))]


@dataclass
class _AttentionState(StreamingState):
    keys: torch.Tensor  # [B, H, C, Dh]
    values: torch.Tensor  # [B, H, C, Dh]
    positions: torch.Tensor  # [B, C] long: absolute position held by each slot, -1 = empty
    offset: torch.Tensor  # [B] long: absolute position of the row's next input (slots >= offset are empty)
    # Eager-mode hint, not state: a host-side upper bound on max(offset) capped at the capacity, so that a
    # single-step call reads only the ring prefix that can hold keys (early in a stream, most of a 3000-slot
    # window is empty). Kept exact without host syncs by adding each call's length; if `offset` was written by
    # anyone else (a reset, a restored snapshot: its version counter moved) it is re-read from the device once.
    fill_bound: int = 0
    seen_version: int = -2

    def reset(self, mask: torch.Tensor) -> None:
        in_sync = self.host_hint() is not None
        self.positions.masked_fill_(mask[:, None], -1)
        self.offset.masked_fill_(mask, 0)
        if in_sync:  # offsets only went down: the bound still holds (no device read needed for the next step)
            self.seen_version = _version(self.offset)

    def host_hint(self) -> int | None:
        """The fill bound, when it is known to hold for the offsets as they are now."""
        if self.seen_version < 0 or _version(self.offset) != self.seen_version:
            return None
        return self.fill_bound

    def rows_written(self, before: object, written: object) -> None:
        # Rows copied from a state whose bound was `written`, the others unchanged (bound `before`): the larger
        # bound holds for all. Unknown either way: leave it stale, the next call re-reads the offsets.
        if isinstance(before, int) and isinstance(written, int):
            self.fill_bound = min(self.keys.shape[2], max(before, written))
            self.seen_version = _version(self.offset)

    def prefix(self, T: int) -> int:
        """Ring slots a call of T steps must read (eager mode): max over rows of the slots written after it."""
        capacity = self.keys.shape[2]
        if self.seen_version == -1:
            return capacity  # inference tensors: no version counter, read the whole ring
        if _version(self.offset) != self.seen_version:
            self.fill_bound = min(capacity, int(self.offset.max()))
        return min(capacity, self.fill_bound + T)

    def advance(self, T: int, static: bool) -> None:
        """Offsets of the executing rows += T, in place."""
        self.offset.add_(self.exec_mask.to(self.offset.dtype), alpha=T)
        if not static:
            self.fill_bound = min(self.keys.shape[2], self.fill_bound + T)
            self.seen_version = _version(self.offset)


class Attention(StreamingModule[_AttentionState]):
    """x [B, T, D] -> [B, T, D]. `in_proj` rows are [q | k | v], each head-major; no biases.

    With `num_steps` > 0 the projections hold one weight per step (StepLinear), and the window is the
    number of steps when `context` is None.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context: int | None = None,
        rope_max_period: float | None = 10_000.0,
        causal: bool = True,
        num_steps: int = 0,
        stream_chunk: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if stream_chunk < 1:
            raise ValueError(f"stream_chunk must be >= 1, got {stream_chunk}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.context = context if context is not None else (num_steps or None)
        self.causal = causal
        self.num_steps = num_steps
        # Streaming calls of up to `stream_chunk` steps write into the ring first and attend over it in place:
        # the ring holds context + stream_chunk - 1 slots so that no key of any query's window is overwritten
        # by its own chunk. Longer calls take an exact but copying path.
        self.stream_chunk = stream_chunk
        self.static_shapes = False  # see set_static_shapes
        self.in_proj = make_linear(dim, 3 * dim, num_steps, device=device, dtype=dtype)
        self.out_proj = make_linear(dim, dim, num_steps, device=device, dtype=dtype)
        self.rope_max_period = rope_max_period
        # Not a buffer: a model built on the meta device and materialised later must not lose it.
        self._freqs: dict[torch.device, torch.Tensor] = {}

    def init_state(self, batch_size: int, exec_mask: torch.Tensor) -> _AttentionState:
        if self.context is None:
            raise RuntimeError("streaming attention needs a finite context to size its KV cache")
        w = self.out_proj.weight
        capacity = self.context + self.stream_chunk - 1
        shape = (batch_size, self.num_heads, capacity, self.head_dim)
        return _AttentionState(
            batch_size,
            exec_mask,
            keys=torch.zeros(shape, device=w.device, dtype=w.dtype),
            values=torch.zeros(shape, device=w.device, dtype=w.dtype),
            positions=torch.full((batch_size, capacity), -1, device=w.device, dtype=torch.long),
            offset=torch.zeros(batch_size, device=w.device, dtype=torch.long),
        )

    def rope_freqs(self, device: torch.device) -> torch.Tensor:
        if device not in self._freqs:
            assert self.rope_max_period is not None
            self._freqs[device] = rope_frequencies(self.head_dim, self.rope_max_period, device)
        return self._freqs[device]

    def forward(self, x: torch.Tensor, step: int = 0, kv: KVBuffer | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]. `step`: index of the per-step weights of x's first position (and, with
        `kv`, its position in that buffer: slots < step hold the earlier keys/values)."""
        B, T, _ = x.shape
        if kv is not None and T == 1 and self.num_steps and not self.rope_max_period:
            # One depth step (the generation hot path, ~50 calls per frame, where per-call overhead dominates
            # at batch 1): the same maths as the general path below with the fewest ops and calls.
            H, Dh = self.num_heads, self.head_dim
            qkv = self.in_proj(x, step).view(B, 3, H, 1, Dh)
            keys, values = kv.write(step, qkv[:, 1:].transpose(0, 1))
            y = F.scaled_dot_product_attention(qkv[:, 0], keys, values)  # [B, H, 1, Dh]
            return self.out_proj(y.view(B, 1, H * Dh), step)
        state = self.state if kv is None else None
        qkv = apply_linear(self.in_proj, x, step).view(B, T, 3, self.num_heads, self.head_dim)
        if state is not None:
            positions = state.offset[:, None] + torch.arange(T, device=x.device)
        elif self.rope_max_period:
            positions = (step + torch.arange(T, device=x.device)).expand(B, T)
        if self.rope_max_period:
            # Queries and keys rotated in one call (the same elementwise maths as one call each, half the ops).
            q, k = apply_rope(qkv[:, :, :2], positions, self.rope_freqs(x.device)).unbind(dim=2)
            v = qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(dim=2)  # each [B, T, H, Dh]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        if kv is not None:
            out = self._attend_steps(q, k, v, step, kv)
        elif state is None:
            out = self._attend_batch(q, k, v)
        else:
            if T <= self.stream_chunk:
                out = self._attend_in_ring(q, k, v, positions, state)
            else:
                out = self._attend_chunk(q, k, v, positions, state)
            state.advance(T, self.static_shapes)
        out = out.transpose(1, 2).reshape(B, T, self.dim)
        return apply_linear(self.out_proj, out, step)

    def _window_mask(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """[B, 1, Tq, Tk] bool: key valid, not in the future, within the context window."""
        delta = q_pos[:, :, None] - k_pos[:, None, :]
        mask = (k_pos[:, None, :] >= 0) & (delta >= 0)
        if self.context is not None:
            mask = mask & (delta < self.context)
        return mask[:, None]

    def _attend_batch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T = q.shape[2]
        if not self.causal:
            return F.scaled_dot_product_attention(q, k, v)
        if self.context is None or T <= self.context:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        pos = torch.arange(T, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self._window_mask(pos[None], pos[None]))

    def _attend_steps(self, q, k, v, step: int, kv: KVBuffer) -> torch.Tensor:
        # Depth steps: a fresh short sequence per call site, so the buffer needs no ring, positions or masks
        # beyond causality within x.
        T = q.shape[2]
        keys, values = kv.write(step, torch.stack([k, v]))
        if T == 1 or not self.causal:
            return F.scaled_dot_product_attention(q, keys, values)
        pos = torch.arange(step + T, device=q.device)
        mask = pos[None, :] <= pos[step:, None]  # [T, step + T]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    def _attend_in_ring(self, q, k, v, positions, state: _AttentionState) -> torch.Tensor:
        # Write first, then attend over the ring. With T <= stream_chunk the chunk only overwrites positions
        # p - context or older for its first query p, which no query of this chunk or later reads; a skipped
        # row's writes land on such slots too and keep their old positions, so they are never attended.
        # Advanced-index writes, not scatter_: on CPU a bf16 scatter_ copies the whole cache (~100 ms per call
        # for a 3000-slot 7B layer), index_put_ writes just the slots.
        T, capacity = q.shape[2], state.keys.shape[2]
        rows = torch.arange(q.shape[0], device=q.device)[:, None]
        slots = positions % capacity  # [B, T]
        state.keys.transpose(1, 2)[rows, slots] = k.transpose(1, 2)
        state.values.transpose(1, 2)[rows, slots] = v.transpose(1, 2)
        state.positions[rows, slots] = where_rows(state.exec_mask, positions, state.positions[rows, slots])
        if self.static_shapes:
            keys, values, k_pos = state.keys, state.values, state.positions
        else:
            n = state.prefix(T)
            keys, values, k_pos = state.keys[:, :, :n], state.values[:, :, :n], state.positions[:, :n]
        if T == 1 and capacity == self.context:
            mask = (k_pos >= 0)[:, None, None, :]  # the ring holds exactly this query's window
        else:
            mask = self._window_mask(positions, k_pos)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    def _attend_chunk(self, q, k, v, positions, state: _AttentionState) -> torch.Tensor:
        # Attend over the cache (read before this chunk overwrites it) plus the chunk itself.
        keys = torch.cat([state.keys, k], dim=2)
        values = torch.cat([state.values, v], dim=2)
        k_pos = torch.cat([state.positions, positions], dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=self._window_mask(positions, k_pos))
        # Keep the chunk's last `capacity` entries in their ring slots; a skipped row rewrites what it held
        # (a gather/where on the written slots only, not on the whole cache).
        capacity = state.keys.shape[2]
        n = min(q.shape[2], capacity)
        slots = positions[:, -n:] % capacity  # [B, n], distinct
        rows = torch.arange(q.shape[0], device=q.device)[:, None]
        run = state.exec_mask
        keys, values = state.keys.transpose(1, 2), state.values.transpose(1, 2)  # [B, C, H, Dh] views
        keys[rows, slots] = where_rows(run, k[:, :, -n:].transpose(1, 2), keys[rows, slots])
        values[rows, slots] = where_rows(run, v[:, :, -n:].transpose(1, 2), values[rows, slots])
        state.positions[rows, slots] = where_rows(run, positions[:, -n:], state.positions[rows, slots])
        return out


def set_static_shapes(module: nn.Module, enabled: bool = True) -> None:
    """Static-shape streaming for every Attention in `module`: a step attends the whole ring under a mask instead
    of the written prefix (no data-dependent shapes, no host-side values; for torch.compile and CUDA graphs).
    The default (False) is faster in eager mode early in a stream. Outputs are the same either way."""
    for m in module.modules():
        if isinstance(m, Attention):
            m.static_shapes = enabled
