"""The strict-loading engine on a toy model: placements (slices, Kyutai's norm scales, stacked matrices),
and every kind of problem listed in one CheckpointError before anything is loaded."""

import pytest
import torch
from torch import nn

from openmoshi.checkpoint import CheckpointError, Placement, load_checkpoint, plan_checkpoint


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stack = nn.Parameter(torch.zeros(3, 2, 4))  # per-step weights [S, out, in]
        self.norm = nn.Parameter(torch.zeros(4))
        self.register_buffer("count", torch.zeros(2))


def mapper(name: str) -> Placement | None:
    if name.startswith("step."):  # Kyutai-style: one tensor per step
        return Placement("stack", int(name.split(".")[1]))
    return {"alpha": Placement("norm", kind="alpha"), "packed": Placement("stack", kind="stacked")}.get(name)


def test_placements_load_in_place():
    model = Toy()
    storage = model.stack.data_ptr()
    state = {f"step.{k}": torch.full((2, 4), float(k)) for k in range(3)}
    state |= {"alpha": torch.arange(4.0).view(1, 1, 4), "count": torch.ones(2)}
    load_checkpoint(model, state, mapper)
    assert model.stack.data_ptr() == storage  # copied into the existing storage
    assert torch.equal(model.stack[:, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(model.norm, torch.arange(4.0))
    load_checkpoint(model, {"packed": torch.arange(24.0).view(6, 4), "norm": torch.ones(4), "count": torch.ones(2)},
                    mapper)
    assert torch.equal(model.stack, torch.arange(24.0).view(3, 2, 4))


def test_every_problem_is_listed_and_nothing_is_loaded():
    model = Toy()
    state = {"step.0": torch.ones(2, 4), "step.2": torch.ones(2, 4), "step.5": torch.ones(2, 4),
             "packed": torch.ones(6, 4), "alpha": torch.ones(4), "other": torch.ones(1)}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, state, mapper, name="toy.safetensors")
    msg = str(err.value)
    assert msg.startswith("toy.safetensors does not fit the model:")
    assert "1 unexpected: other" in msg
    assert "mis-shaped: step.5 (2, 4) (-> stack[5] (3, 2, 4))" in msg and "alpha (4,) (-> norm (1, 1, 4))" in msg
    assert "1 duplicated: packed (a second tensor for stack)" in msg
    assert "2 missing: stack[1], count" in msg
    assert torch.equal(model.stack, torch.zeros(3, 2, 4))  # the plan failed: nothing copied


def test_plan_from_shapes_alone():
    targets = Toy().state_dict()
    plan = plan_checkpoint(targets, {"packed": (6, 4), "alpha": (1, 1, 4), "count": (2,)}, mapper)
    assert plan == {"packed": Placement("stack", None, "stacked"), "alpha": Placement("norm", None, "alpha"),
                    "count": Placement("count")}


def test_non_finite_values_are_refused():
    state = {"stack": torch.zeros(3, 2, 4), "norm": torch.tensor([0.0, float("-inf"), 1.0, 2.0]),
             "count": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="checkpoint: tensor norm holds 1 NaN or infinite value"):
        load_checkpoint(Toy(), state)
    state["norm"] = torch.tensor([3.0e38, 3.0e38, 3.0e38, 3.0e38])  # finite, though their sum overflows
    load_checkpoint(Toy(), state)
