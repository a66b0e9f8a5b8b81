"""Causal multi-head self-attention with RoPE, a context window and a streaming ring KV cache.

A query at absolute position p attends exactly the keys at positions p - context + 1 .. p, in batch mode and in
streaming mode alike, whatever the chunking: streaming output equals batch output.

Streaming state per row: a ring of `context` key/value slots with the absolute position held by each slot
(-1 = empty) and the row's next position. Memory is flat however long the stream runs; positions keep growing
(RoPE uses absolute positions, it never wraps with the window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .linear import apply_linear, make_linear
from .rope import apply_rope, rope_frequencies
from .streaming import StreamingModule, StreamingState, where_rows


@dataclass
class _AttentionState(StreamingState):
    keys: torch.Tensor  # [B, H, C, Dh]
    values: torch.Tensor  # [B, H, C, Dh]
    positions: torch.Tensor  # [B, C] long: absolute position held by each slot, -1 = empty
    offset: torch.Tensor  # [B] long: absolute position of the row's next input
    step: int = 0  # host-side step counter, selects per-step weights (such modules are reset as a whole)
    # Host-side bound on the ring slots ever written: min(capacity, inputs since allocation). Every row's offset
    # is at most that count, so slots at or past it are still empty: single-step attention reads only
    # the filled prefix (early in a stream, most of a 3000-slot window). Never lowered by a reset (a bound).
    filled: int = 0

    def reset(self, mask: torch.Tensor) -> None:
        self.positions.masked_fill_(mask[:, None], -1)
        self.offset.masked_fill_(mask, 0)
        self.step = 0


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

    @property
    def step(self) -> int:
        """Index of the per-step weights the next call starts at (0 in batch mode)."""
        return self.state.step if self.state is not None else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        state = self.state
        step = self.step
        qkv = apply_linear(self.in_proj, x, step).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=2)  # each [B, T, H, Dh]
        if state is None:
            positions = torch.arange(T, device=x.device).expand(B, T)
        else:
            positions = state.offset[:, None] + torch.arange(T, device=x.device)
        if self.rope_max_period:
            freqs = self.rope_freqs(x.device)
            q = apply_rope(q, positions, freqs)
            k = apply_rope(k, positions, freqs)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        if state is None:
            out = self._attend_batch(q, k, v)
        elif T <= self.stream_chunk:
            out = self._attend_in_ring(q, k, v, positions, state)
        else:
            out = self._attend_chunk(q, k, v, positions, state)
        if state is not None:
            state.offset = torch.where(state.exec_mask, state.offset + T, state.offset)
            state.step += T
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
        n = state.filled = min(capacity, state.filled + T)
        k_pos = state.positions[:, :n]
        if T == 1 and capacity == self.context:
            mask = (k_pos >= 0)[:, None, None, :]  # the ring holds exactly this query's window
        else:
            mask = self._window_mask(positions, k_pos)
        return F.scaled_dot_product_attention(q, state.keys[:, :, :n], state.values[:, :, :n], attn_mask=mask)

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
        state.filled = min(capacity, state.filled + q.shape[2])
        slots = positions[:, -n:] % capacity  # [B, n], distinct
        rows = torch.arange(q.shape[0], device=q.device)[:, None]
        run = state.exec_mask
        keys, values = state.keys.transpose(1, 2), state.values.transpose(1, 2)  # [B, C, H, Dh] views
        keys[rows, slots] = where_rows(run, k[:, :, -n:].transpose(1, 2), keys[rows, slots])
        values[rows, slots] = where_rows(run, v[:, :, -n:].transpose(1, 2), values[rows, slots])
        state.positions[rows, slots] = where_rows(run, positions[:, -n:], state.positions[rows, slots])
        return out
