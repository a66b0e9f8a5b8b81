"""LoRA wrappers (openmoshi.nn.lora): what apply_lora wraps and freezes, the per-step layers, merging, init on
the meta device, activation checkpointing and FSDP2 (one gloo process)."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
from openmoshi.nn.linear import StepLinear
from openmoshi.nn.lora import (
    LoRALinear,
    LoRAStepLinear,
    apply_lora,
    init_lora,
    linear_layers,
    lora_layers,
    lora_state_dict,
    merge_lora,
)

CFG = LMConfig.tiny()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _codes(B=2, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, CFG.card, (B, CFG.num_streams, T), generator=g)
    codes[:, 0] = torch.randint(0, CFG.text_card, (B, T), generator=g)
    return codes


def _randomize_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _model(seed=0):
    torch.manual_seed(seed)
    return LMModel(CFG).eval()


def test_apply_wraps_every_linear_and_freezes_the_rest():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linears = linear_layers(model)
    # temporal: 4 per layer; depth: 4 per layer + in_proj + heads; text_linear
    assert len(linears) == 4 * CFG.num_layers + 4 * CFG.depformer_num_layers + 3
    codes = _codes()
    with torch.no_grad():
        base = model(codes)
    assert apply_lora(model, 4, 2.0) == len(linears)
    assert isinstance(model.text_linear, LoRALinear) and isinstance(model.text_linear, nn.Linear)
    assert isinstance(model.depformer.heads, LoRAStepLinear) and isinstance(model.depformer.heads, StepLinear)
    adapters = lora_state_dict(model)
    assert set(adapters) == {f"{n}.{ab}" for n in linears for ab in ("lora_A", "lora_B")}
    assert adapters["depformer.heads.lora_A"].shape == (CFG.dep_q, 4, CFG.depformer_dim)
    assert adapters["depformer.heads.lora_B"].shape == (CFG.dep_q, CFG.card, 4)
    # base names unchanged, values untouched; only adapters train; a fresh adapter (B = 0) changes nothing
    state = model.state_dict()
    assert {k: v for k, v in state.items() if "lora_" not in k}.keys() == before.keys()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapters)
    with torch.no_grad():
        again = model(codes)
    assert torch.equal(base.audio_logits, again.audio_logits) and torch.equal(base.text_logits, again.text_logits)


def test_frozen_base_gets_no_gradient_and_adapters_do():
    model = _model()
    apply_lora(model, 2, 1.0)
    _randomize_adapters(model)
    out = model(_codes())
    (out.audio_logits.square().mean() + out.text_logits.square().mean()).backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_targets_select_layers_by_name():
    n_in_proj = sum(1 for n in linear_layers(_model()) if n.endswith(".in_proj"))
    m = _model()
    assert apply_lora(m, 2, 1.0, targets=["in_proj"]) == n_in_proj
    assert set(lora_layers(m)) == {n for n in linear_layers(_model()) if n.endswith(".in_proj")}
    m = _model()
    assert apply_lora(m, 2, 1.0, targets=["transformer.layers.*.ff.*", "text_linear"]) == 2 * CFG.num_layers + 1
    assert "depformer.transformer.layers.0.ff.linear_in" not in lora_layers(m)
    assert apply_lora(_model(), 2, 1.0, targets=["all"]) == len(linear_layers(_model()))
    with pytest.raises(ValueError, match=r"LoRA targets \['q_proj'\] match no linear layer"):
        apply_lora(_model(), 2, 1.0, targets=["in_proj", "q_proj"])
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(m, 2, 1.0)
    for rank, scaling in ((0, 1.0), (2.5, 1.0), (True, 1.0), (2, float("nan")), (2, "2")):
        with pytest.raises(ValueError, match="LoRA (rank|scaling)"):
            apply_lora(_model(), rank, scaling)
    with pytest.raises(ValueError, match="list of non-empty name patterns"):
        apply_lora(_model(), 2, 1.0, targets="in_proj")


def test_step_linear_one_step_at_a_time_equals_all_steps():
    base = StepLinear(6, 5, 4)
    layer = LoRAStepLinear(base, 3, 0.7)
    _randomize_adapters(nn.ModuleDict({"l": layer}))
    x = torch.randn(2, 4, 6)
    full = layer(x)
    steps = torch.cat([layer(x[:, k:k + 1], k) for k in range(4)], dim=1)
    torch.testing.assert_close(full, steps, atol=1e-6, rtol=0)
    expect = torch.stack([x[:, k] @ (base.weight[k] + 0.7 * layer.lora_B[k] @ layer.lora_A[k]).T for k in range(4)], 1)
    torch.testing.assert_close(full, expect, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(x[:, 1:3], 1), full[:, 1:3], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="exceed"):
        layer(x[:, :2], 3)


def test_merge_folds_adapters_and_restores_plain_layers():
    model = _model()
    names = set(model.state_dict())
    apply_lora(model, 3, 1.5)
    _randomize_adapters(model)
    codes = _codes()
    with torch.no_grad():
        a = model(codes)
    assert merge_lora(model) == len(linear_layers(_model()))
    assert not lora_layers(model) and set(model.state_dict()) == names
    assert type(model.text_linear) is nn.Linear and type(model.depformer.heads) is StepLinear
    with torch.no_grad():
        b = model(codes)
    torch.testing.assert_close(a.audio_logits, b.audio_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.text_logits, b.text_logits, atol=1e-5, rtol=0)
    assert merge_lora(model) == 0


def test_built_on_meta_then_materialised():
    with torch.device("meta"):
        model = LMModel(CFG)
    apply_lora(model, 2, 2.0)
    assert model.text_linear.lora_A.is_meta
    model.to_empty(device="cpu")
    init_lora(model)
    for name, p in lora_state_dict(model).items():
        if name.endswith("lora_B"):
            assert torch.count_nonzero(p) == 0, name
        else:
            bound = 1 / p.shape[-1] ** 0.5
            assert p.abs().max() <= bound and p.std() > bound / 4, name


def test_activation_checkpointing_gives_the_same_gradients():
    model = _model()
    apply_lora(model, 2, 1.0)
    _randomize_adapters(model)
    other = copy.deepcopy(model)
    x = torch.randn(2, 5, CFG.dim)
    layer = model.transformer.layers[0]
    checkpoint(layer, x, use_reentrant=False).square().sum().backward()
    other.transformer.layers[0](x).square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), other.named_parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=0)


def test_fsdp2_shards_and_trains_the_adapters(tmp_path):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not dist.is_available():
        pytest.fail("torch.distributed is required")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = _model()
        apply_lora(model, 2, 1.0)
        _randomize_adapters(model)
        plain = copy.deepcopy(model)
        for layer in model.transformer.layers:
            fully_shard(layer)
        fully_shard(model)
        codes = _codes()
        for m in (model, plain):
            out = m(codes)
            (out.audio_logits.square().mean() + out.text_logits.square().mean()).backward()
        sharded = dict(model.named_parameters())
        for name, p in plain.named_parameters():
            g = sharded[name].grad
            assert (g is None) == (p.grad is None), name
            if g is not None:
                torch.testing.assert_close(g.full_tensor(), p.grad, atol=1e-6, rtol=0)
        adapters = lora_state_dict(model)
        assert set(adapters) == set(lora_state_dict(plain))
        assert all(torch.equal(v.full_tensor(), lora_state_dict(plain)[k]) for k, v in adapters.items())
        from safetensors.torch import load_file

        from openmoshi.lm.lora import save_lora

        a = load_file(str(save_lora(model, tmp_path / "sharded.safetensors")))
        b = load_file(str(save_lora(plain, tmp_path / "plain.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    finally:
        dist.destroy_process_group()


def test_float32_adapters_over_bfloat16_weights():
    model = _model().to(torch.bfloat16)
    apply_lora(model, 2, 1.0, dtype=torch.float32)
    assert model.text_linear.lora_A.dtype == torch.float32 and model.text_linear.weight.dtype == torch.bfloat16
    _randomize_adapters(model)
    out = model(_codes())
    assert out.audio_logits.dtype == torch.bfloat16
    (out.audio_logits.float().square().mean()).backward()
    assert model.depformer.heads.lora_B.grad.dtype == torch.float32
    assert model.depformer.heads.lora_B.grad.abs().sum() > 0
