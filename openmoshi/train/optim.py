"""AdamW with named parameter groups, and the learning-rate schedule as a pure function of the step.

`build_adamw(named_params, groups, cfg)`: `groups` maps a group name to (learning rate, predicate on the
parameter name); each parameter goes to the first group whose predicate accepts it. Matrices decay
(`weight_decay`); vectors (norm scales, biases) do not. Only parameters with requires_grad are optimised.

`lr_multiplier(step, total, schedule)`: the factor applied to every group's base lr at `step` (0-based). No
scheduler object: the schedule has no state besides the step, which the checkpoint holds, so resuming at
step s gives exactly the learning rates of an uninterrupted run. `set_lr(optimizer, step, total, schedule)`
writes the groups' lr for that step (each group keeps its base lr in `base_lr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch

from .config import OptimConfig, ScheduleConfig


def build_adamw(
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    groups: Mapping[str, tuple[float, Callable[[str], bool]]],
    cfg: OptimConfig,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, split into `groups` (name -> (lr, accepts(param name))) x decay."""
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        group = next((g for g, (_, accepts) in groups.items() if accepts(name)), None)
        if group is None:
            raise ValueError(f"parameter {name} matches no optimiser group ({', '.join(groups)})")
        buckets.setdefault((group, p.dim() >= 2), []).append(p)
    if not buckets:
        raise ValueError("no trainable parameters")
    param_groups = []
    for (group, decay), params in buckets.items():
        lr = groups[group][0]
        param_groups.append({"params": params, "lr": lr, "base_lr": lr, "name": f"{group}{'' if decay else '_nodecay'}",
                             "weight_decay": cfg.weight_decay if decay else 0.0})
    return torch.optim.AdamW(param_groups, lr=next(iter(groups.values()))[0], betas=tuple(cfg.betas),
                             eps=cfg.eps, weight_decay=cfg.weight_decay)


def warmup_steps(total: int, schedule: ScheduleConfig) -> int:
    if schedule.warmup_steps is not None:
        return max(0, min(schedule.warmup_steps, total))
    return int(round(schedule.warmup_share * total))


def lr_multiplier(step: int, total: int, schedule: ScheduleConfig) -> float:
    """The factor on the base learning rate at `step` in [0, total)."""
    warm = warmup_steps(total, schedule)
    if schedule.kind == "onecycle":
        # cosine from 1/25 up to 1 over the warm-up, then cosine down to 1/(25 * 1e4), as OneCycleLR's defaults
        start, end = 1 / 25, 1 / (25 * 1e4)
        if step < warm:
            return _cos(start, 1.0, step / warm)
        return _cos(1.0, end, (step - warm) / max(1, total - 1 - warm))
    if step < warm:
        return (step + 1) / warm
    if schedule.kind == "constant":
        return 1.0
    return _cos(1.0, schedule.min_lr_ratio, (step - warm) / max(1, total - 1 - warm))


def _cos(a: float, b: float, t: float) -> float:
    """From a (t = 0) to b (t = 1) along half a cosine."""
    t = min(max(t, 0.0), 1.0)
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, step: int, total: int, schedule: ScheduleConfig) -> float:
    """Set every group's lr for `step`; returns the multiplier."""
    mult = lr_multiplier(step, total, schedule)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * mult
    return mult
