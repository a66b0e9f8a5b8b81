"""Per-stream delays between the input grid of codes and the grid the language model sees.

Stream k is shifted `delays[k]` steps later in time: on the delayed grid, position t of stream k holds the
input's frame t - delays[k], and the first delays[k] positions hold the stream's initial token.
Undelaying maps
per-position values (logits, masks) on the delayed grid back onto the input grid. Pure functions, any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(delays: Sequence[int], num_streams: int) -> None:
    if len(delays) != num_streams:
        raise ValueError(f"got {len(delays)} delays for {num_streams} streams")
    if any(d < 0 for d in delays):
        raise ValueError(f"delays must be >= 0, got {list(delays)}")


def delay_codes(codes: torch.Tensor, delays: Sequence[int], initial: torch.Tensor) -> torch.Tensor:
    """Delay each stream: codes [B, K, T] -> [B, K, T], out[:, k, t] = codes[:, k, t - d_k] or initial[k].

    `initial` [K] (or [B, K]): the token placed in front of each stream. Frames shifted past T are dropped.
    """
    B, K, T = codes.shape
    _check(delays, K)
    initial = initial.to(codes).expand(B, K)
    out = initial[:, :, None].expand(B, K, T).clone()
    for k, d in enumerate(delays):
        if d < T:
            out[:, k, d:] = codes[:, k, : T - d]
    return out


def undelay(
    values: torch.Tensor, delays: Sequence[int], fill_value: float | int = float("nan")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `delay_codes` for per-position values: [B, K, T, ...] -> ([B, K, T, ...], mask [B, K, T]).

    out[:, k, t] = values[:, k, t + d_k]; positions whose source lies past the end get `fill_value` and a
    False mask entry.
    """
    B, K, T = values.shape[:3]
    _check(delays, K)
    out = torch.full_like(values, fill_value)
    mask = torch.zeros(B, K, T, dtype=torch.bool, device=values.device)
    for k, d in enumerate(delays):
        if d < T:
            out[:, k, : T - d] = values[:, k, d:]
            mask[:, k, : T - d] = True
    return out, mask
