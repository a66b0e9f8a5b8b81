"""A loss balancer: each loss's weight says what share of the gradient it gets, whatever its scale.

The losses that depend on the codec's output y (reconstruction, adversarial, feature matching) are not summed
as such: for each loss L_i the balancer takes g_i = dL_i/dy, the norm n_i = ||g_i|| (averaged over the batch
rows), smoothed by an EMA across steps, and back-propagates

    dy = total_norm * sum_i (w_i / sum_j w_j) * g_i / n_i     (divided by the number of rows B when the norm
                                                             is taken per row: the gradient of a batch mean)

through the model. A weight is thus a share of the gradient reaching y: the adversarial loss, whose raw scale
drifts as the discriminator learns, cannot swamp the mel loss (or vanish). The idea is EnCodec's
(Défossez et al., 2022); this implementation is ours.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class Balancer:
    """`backward(losses, output, extra)` back-propagates the balanced gradient of `losses` (a dict name -> scalar)
    at `output`, plus the plain gradient of `extra` (a scalar of the losses that do not go through `output`, e.g.
    commitment), in one backward pass; returns each loss's gradient norm at `output` (floats, before scaling)."""

    def __init__(self, weights: Mapping[str, float], total_norm: float = 1.0, ema_decay: float = 0.999,
                 per_batch_item: bool = True, epsilon: float = 1e-12) -> None:
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"balancer weights must be >= 0 with a positive sum, got {dict(weights)}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.weights = dict(weights)
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        self.norms: dict[str, float] = {}  # EMA of each loss's gradient norm
        self.counts: dict[str, float] = {}  # EMA of 1 (for the bias correction of the first steps)

    def _norm(self, grad: Tensor) -> Tensor:
        if self.per_batch_item and grad.dim() > 1:
            return grad.flatten(1).norm(dim=1).mean()
        return grad.norm()

    def backward(self, losses: Mapping[str, Tensor], output: Tensor, extra: Tensor | None = None) -> dict[str, float]:
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise KeyError(f"no balancer weight for {sorted(unknown)} (weights: {sorted(self.weights)})")
        active = {k: v for k, v in losses.items() if self.weights[k] > 0}
        if not active:
            if extra is not None:
                extra.backward()
            return {}
        grads, norms = {}, {}
        for name, loss in active.items():
            (g,) = torch.autograd.grad(loss, [output], retain_graph=True)
            grads[name] = g
            norms[name] = float(self._norm(g))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank scales alike: the norms are averaged over ranks.
            t = torch.tensor(list(norms.values()), device=output.device, dtype=torch.float64)
            torch.distributed.all_reduce(t)
            norms = dict(zip(norms, (t / torch.distributed.get_world_size()).tolist(), strict=True))
        total_weight = sum(self.weights[k] for k in active)
        combined = torch.zeros_like(output)
        for name, g in grads.items():
            d = self.ema_decay
            self.norms[name] = d * self.norms.get(name, 0.0) + (1 - d) * norms[name]
            self.counts[name] = d * self.counts.get(name, 0.0) + (1 - d)
            avg = self.norms[name] / self.counts[name]  # bias-corrected: the first step is not shrunk
            combined += g * (self.total_norm * self.weights[name] / total_weight / (avg + self.epsilon))
        if self.per_batch_item and output.dim() > 1:
            # Each row's share has norm ~total_norm: average the rows (as a mean loss does), so the result does
            # not grow with the batch, and a batch split over ranks (gradients averaged) is one batch.
            combined /= output.shape[0]
        if extra is not None and extra.requires_grad:
            torch.autograd.backward([output, extra], [combined, torch.ones_like(extra)])
        else:
            output.backward(combined)
        return norms

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"norms": dict(self.norms), "counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.norms = {k: float(v) for k, v in state["norms"].items()}
        self.counts = {k: float(v) for k, v in state["counts"].items()}
