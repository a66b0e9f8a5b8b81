"""Causal streaming 1-d convolutions (plain and transposed), layout [B, C, T].

Batch and streaming give the same output: a streaming call may take any number of samples and emits every
output frame that is complete; feeding a sequence in chunks yields the whole-sequence output in pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import S, StreamingModule, StreamingState, where_rows


class CausalConvBase(StreamingModule[S]):
    """What both causal convs share: shape checks, `weight` / `bias` and `init_weights`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
                 bias: bool, transposed: bool, device, dtype) -> None:
        super().__init__()
        if min(in_channels, out_channels, kernel_size, stride, groups) < 1:
            raise ValueError("channels, kernel_size, stride and groups must be >= 1")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        # Conv1d weights are [out, in/groups, K]; transposed ones [in, out/groups, K], as in torch.
        rows, cols = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = nn.Parameter(torch.empty(rows, cols // groups, kernel_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype)) if bias else None
        if not self.weight.is_meta:  # a meta-built model is initialised after `to_empty`, by `init_weights`
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Weight ~ N(0, 1/fan_in), bias 0: variance-preserving, so a deep stack (SEANet) keeps the signal's scale.

        (torch's default U(+-1/sqrt(fan_in)) shrinks it ~1.7x per conv: Mimi's latent would be ~50x smaller
        than its input, left to the biases, and every frame would get the same code.)
        """
        self.weight.normal_(std=1 / math.sqrt(self.weight.shape[1] * self.kernel_size))
        if self.bias is not None:
            self.bias.zero_()


@dataclass
class _ConvState(StreamingState):
    # [B, C, padding + stride - 1], right-aligned: its last `padding + extra` samples are the left padding and the
    # input samples not yet consumed by a full output frame. Allocated once, written in place.
    pending: torch.Tensor
    first: torch.Tensor  # [B] bool: no input seen yet (replicate padding is decided on the first call)
    # Samples held beyond `padding` (0 .. stride - 1), shared by all rows: it only changes with chunks that are
    # not whole multiples of the stride, so it stays 0 in Mimi's frame steps (a constant for torch.compile).
    extra: int = 0

    def reset(self, mask: torch.Tensor) -> None:
        self.pending.masked_fill_(mask[:, None, None], 0)
        self.first.logical_or_(mask)


class StreamingConv1d(CausalConvBase[_ConvState]):
    """Causal Conv1d: [B, C_in, T] -> [B, C_out, ceil(T / stride)].

    Left padding is (kernel_size - 1) * dilation + 1 - stride samples: zeros, or copies of the first sample with
    `pad_mode="replicate"`. Batch mode pads on the right just enough to complete the last frame.
    Streaming calls whose length is a multiple of `stride` have static shapes (the graph-safe case); other
    lengths work too, but with an exec mask in streaming chunks must be whole multiples of `stride`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, pad_mode: str = "constant",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, groups, bias, False, device, dtype)
        self.dilation, self.pad_mode = dilation, pad_mode
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        if self.effective_kernel < stride:
            raise ValueError(f"effective kernel {self.effective_kernel} must be >= stride {stride}")
        self.padding = self.effective_kernel - stride  # causal: all of it on the left

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        width = self.in_channels * self.kernel_size
        frames = (x.shape[-1] - self.effective_kernel) // self.stride + 1
        if self.groups == 1 and self.dilation == 1 and width >= 1024 and frames * width <= 1 << 20:
            # Wide convs on short inputs (streaming) as one GEMM over the unfolded frames: on CPU, F.conv1d
            # takes a slow path there, 2-5x slower. Long inputs keep F.conv1d (no unfolded copy in memory).
            # The weight [O, I, K] viewed as [O, I*K] needs no copy.
            cols = x.unfold(2, self.kernel_size, self.stride).transpose(1, 2)  # [B, T', I, K]
            cols = cols.reshape(x.shape[0], cols.shape[1], -1)
            w = self.weight.view(self.out_channels, -1)
            return F.linear(cols, w, self.bias).transpose(1, 2)
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def init_state(self, batch_size: int, exec_mask: torch.Tensor) -> _ConvState:
        pending = torch.zeros(batch_size, self.in_channels, self.padding + self.stride - 1,
                              device=self.weight.device, dtype=self.weight.dtype)
        first = torch.ones(batch_size, dtype=torch.bool, device=self.weight.device)
        return _ConvState(batch_size, exec_mask, pending, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, T], got {list(x.shape)}")
        state = self.state
        if state is None:
            return self._forward_batch(x)
        capacity = state.pending.shape[-1]
        held = self.padding + state.extra
        pending = state.pending[:, :, capacity - held:]
        if self.pad_mode == "replicate" and state.extra == 0 and x.shape[-1] > 0 and self.padding:
            # Rows starting a stream replicate their first sample, like batch mode does.
            first_pad = x[:, :, :1].expand(-1, -1, self.padding)
            pending = where_rows(state.first, first_pad, pending)
        full = torch.cat([pending, x], dim=-1) if held else x
        length = full.shape[-1]
        frames = (length - self.effective_kernel) // self.stride + 1 if length >= self.effective_kernel else 0
        if frames > 0:
            used = (frames - 1) * self.stride + self.effective_kernel
            y = self._conv(full[:, :, :used])
        else:
            y = full.new_zeros(full.shape[0], self.out_channels, 0)
        rest = full[:, :, frames * self.stride:]  # padding + (new extra) samples, at most `capacity`
        if rest.shape[-1]:
            # In place, right-aligned; rows outside the exec mask keep what they held (same length: see class doc).
            target = state.pending[:, :, capacity - rest.shape[-1]:]
            target.copy_(where_rows(state.exec_mask, rest, target))
        state.extra = rest.shape[-1] - self.padding
        if x.shape[-1] > 0:
            state.first.logical_and_(~state.exec_mask)
        return y

    def _forward_batch(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        frames = math.ceil(length / self.stride) if length > 0 else 0
        extra = max(0, (frames - 1) * self.stride + self.effective_kernel - (self.padding + length))
        if self.padding and self.pad_mode == "replicate":
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.padding), x], dim=-1)
            x = F.pad(x, (0, extra))
        else:
            x = F.pad(x, (self.padding, extra))
        return self._conv(x)


@dataclass
class _ConvTrState(StreamingState):
    partial: torch.Tensor  # [B, C_out, K - stride]: overlap-add tail of the previous call, without bias; in place

    def reset(self, mask: torch.Tensor) -> None:
        self.partial.masked_fill_(mask[:, None, None], 0)


class StreamingConvTranspose1d(CausalConvBase[_ConvTrState]):
    """Causal ConvTranspose1d: [B, C_in, T] -> [B, C_out, T * stride].

    The raw transposed convolution is (T - 1) * stride + K long; the last K - stride samples depend on future
    input, so batch mode drops them and streaming keeps them to overlap-add into the next call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 groups: int = 1, bias: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be >= stride {stride}")
        super().__init__(in_channels, out_channels, kernel_size, stride, groups, bias, True, device, dtype)

    def init_state(self, batch_size: int, exec_mask: torch.Tensor) -> _ConvTrState:
        partial = torch.zeros(batch_size, self.out_channels, self.kernel_size - self.stride,
                              device=self.weight.device, dtype=self.weight.dtype)
        return _ConvTrState(batch_size, exec_mask, partial)

    def _conv_transpose(self, x: torch.Tensor) -> torch.Tensor:
        """The raw transposed conv without bias: [B, C_in, T] -> [B, C_out, (T - 1) * stride + K]."""
        T = x.shape[-1]
        if self.groups != 1 or T > 16:
            return F.conv_transpose1d(x, self.weight, None, self.stride, groups=self.groups)
        # Short inputs (streaming): one GEMM then overlap-add. CPU's conv_transpose1d takes a slow path
        # there, ~10x slower on Mimi's widest layer. The weight [I, O, K] viewed as [I, O*K] needs no copy.
        cols = torch.matmul(x.transpose(1, 2), self.weight.view(self.in_channels, -1))  # [B, T, O*K]
        out_len = (T - 1) * self.stride + self.kernel_size
        y = F.fold(cols.transpose(1, 2), (1, out_len), (1, self.kernel_size), stride=(1, self.stride))
        return y[:, :, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, T], got {list(x.shape)}")
        state = self.state
        out_len = x.shape[-1] * self.stride
        if state is None:
            y = F.conv_transpose1d(x, self.weight, self.bias, self.stride, groups=self.groups)
            return y[:, :, :out_len]
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        y = self._conv_transpose(x)
        tail = self.kernel_size - self.stride
        if tail:
            y = torch.cat([y[:, :, :tail] + state.partial, y[:, :, tail:]], dim=-1)
            state.partial.copy_(where_rows(state.exec_mask, y[:, :, out_len:], state.partial))  # in place
        out = y[:, :, :out_len]
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out
