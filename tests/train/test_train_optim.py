"""The optimiser's groups (temporal / depth learning rates, no decay on vectors) and the schedules."""

import pytest
import torch

from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
from openmoshi.train.config import ScheduleConfig
from openmoshi.train.lm_config import LMOptimConfig
from openmoshi.train.lm_step import lm_param_groups
from openmoshi.train.optim import build_adamw, lr_multiplier, set_lr


def test_groups_split_temporal_and_depth():
    model = LMModel(LMConfig.tiny(num_layers=1, depformer_num_layers=1))
    cfg = LMOptimConfig(lr=1e-3, depth_lr=5e-3, weight_decay=0.1)
    opt = build_adamw(model.named_parameters(), lm_param_groups(cfg), cfg)
    ids = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in opt.param_groups:
        for p in g["params"]:
            name = ids[id(p)]
            seen.add(name)
            assert g["lr"] == (5e-3 if name.startswith("depformer.") else 1e-3), name
            assert g["weight_decay"] == (0.1 if p.dim() >= 2 else 0.0), name
    assert seen == set(ids.values())
    assert opt.defaults["betas"] == (0.9, 0.95)
    set_lr(opt, 0, 10, ScheduleConfig("constant", warmup_steps=2))
    assert {g["lr"] for g in opt.param_groups} == {0.5e-3, 2.5e-3}


def test_frozen_parameters_are_left_out():
    model = LMModel(LMConfig.tiny(num_layers=1, depformer_num_layers=1))
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("text_linear"))
    cfg = LMOptimConfig()
    opt = build_adamw(model.named_parameters(), lm_param_groups(cfg), cfg)
    assert sum(len(g["params"]) for g in opt.param_groups) == 1


def test_schedules():
    cos = ScheduleConfig("cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, 100, cos) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, cos) == pytest.approx(1.0)
    assert lr_multiplier(10, 100, cos) == pytest.approx(1.0)
    assert lr_multiplier(99, 100, cos) == pytest.approx(0.1)
    mids = [lr_multiplier(s, 100, cos) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(mids, mids[1:], strict=False))
    one = ScheduleConfig("onecycle", warmup_share=0.05)
    assert lr_multiplier(0, 100, one) == pytest.approx(1 / 25)
    assert lr_multiplier(5, 100, one) == pytest.approx(1.0)
    assert lr_multiplier(99, 100, one) < 1e-4
    assert lr_multiplier(50, 100, ScheduleConfig("constant", warmup_steps=0)) == 1.0


def test_empty_optimiser_is_an_error():
    p = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="no trainable"):
        build_adamw([("x", p)], {"all": (1.0, lambda n: True)}, LMOptimConfig())
