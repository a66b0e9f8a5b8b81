"""prepare_for_inference: the generic walk over hooks, and a re-laid Linear whose state dict stays saveable."""

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from openmoshi.nn.prepare import prepare_for_inference, store_transposed


class _Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.linear = nn.Linear(6, 4, bias=False)

    def prepare_for_inference(self) -> None:
        self.calls += 1
        store_transposed(self.linear)


def test_every_module_with_a_hook_is_prepared():
    model = nn.Sequential(_Hooked(), nn.ReLU(), nn.Sequential(_Hooked(), nn.Linear(4, 4)))
    assert prepare_for_inference(model) is model
    assert model[0].calls == 1 and model[2][0].calls == 1
    w = model[0].linear.weight
    assert w.shape == (4, 6) and w.stride() == (1, 4)  # [out, in] shape, [in, out] memory
    prepare_for_inference(model)
    assert w.stride() == (1, 4) and model[0].linear.weight is w  # idempotent, same parameter object


def test_prepared_linear_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = _Hooked()
    x = torch.randn(3, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model.linear(x)
    prepare_for_inference(model)
    torch.testing.assert_close(model.linear(x), ref)
    state = model.state_dict()
    assert all(v.is_contiguous() for v in state.values())
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert loaded.keys() == before.keys() and all(torch.equal(loaded[k], before[k]) for k in before)
    # keep_vars=True hands out the live parameter (what in-place loaders copy into), layout kept.
    live = model.state_dict(keep_vars=True)["linear.weight"]
    assert live is model.linear.weight and not live.is_contiguous()
    other = _Hooked()
    prepare_for_inference(other).load_state_dict(loaded)
    torch.testing.assert_close(other.linear(x), ref)
    assert other.linear.weight.stride() == (1, 4)
