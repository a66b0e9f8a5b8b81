"""LoRA adapters across implementations: ours saved -> Kyutai's loader (`lora_weights`), Kyutai's LoRA modules
-> ours, merging, and bad adapter files. Teacher-forced logits compared in fp32 at atol 1e-4 (as the LM parity
tests; the observed differences are ~1e-6)."""

import json

import pytest
import torch
from lm_testutils import kyutai_kwargs, make_pair, one_thread, published_state_dict
from moshi.models.loaders import get_moshi_lm
from moshi.modules.lora import replace_all_linear_with_lora
from safetensors.torch import load_file, save_file

from openmoshi.lm.config import LMConfig
from openmoshi.lm.lora import LoraError, kyutai_modules, load_lora, save_lora
from openmoshi.lm.loss import LossConfig, lm_loss
from openmoshi.lm.model import LMModel
from openmoshi.nn.lora import apply_lora, linear_layers, lora_state_dict, merge_lora

_one_thread = pytest.fixture(autouse=True)(one_thread)
ATOL = 1e-4
CFG = LMConfig.tiny()
RANK, SCALING = 4, 1.5


def _codes(cfg, B=2, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.card, (B, cfg.num_streams, T), generator=g)
    codes[:, 0] = torch.randint(0, cfg.text_card, (B, T), generator=g)
    return codes


def _trained(cfg=CFG, seed=1, steps=3, targets=None):
    """(reference base model, ours with LoRA after a few AdamW steps on random codes)."""
    ref, ours = make_pair(cfg, seed=seed)
    assert apply_lora(ours, RANK, SCALING, targets) > 0
    ours.train()
    opt = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=3e-2)
    for step in range(steps):
        codes = _codes(cfg, seed=10 + step)
        loss = lm_loss(ours(codes), codes, LossConfig.for_model(cfg)).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ref, ours.eval()


def _assert_same_logits(ref, ours, cfg=CFG):
    codes = _codes(cfg, seed=99)
    with torch.no_grad():
        r, o = ref(codes), ours(codes)
    tm, am = o.text_mask[..., None], o.audio_mask[..., None]
    torch.testing.assert_close(o.text_logits, torch.where(tm, r.text_logits, 0.0), atol=ATOL, rtol=0)
    torch.testing.assert_close(o.audio_logits, torch.where(am, r.logits, 0.0), atol=ATOL, rtol=0)


def _reference_with_lora(tmp_path, ref, lora_file, fuse):
    base = tmp_path / "model.safetensors"
    save_file(published_state_dict(ref), str(base))
    kwargs = {**kyutai_kwargs(CFG), "lora": True, "lora_rank": RANK, "lora_scaling": SCALING}
    return get_moshi_lm(str(base), lm_kwargs=kwargs, device="cpu", dtype=torch.float32,
                        lora_weights=str(lora_file), fuse_lora=fuse)


def test_trained_adapters_change_the_model_and_only_adapters_train():
    ref, ours = _trained()
    assert set(lora_state_dict(ours)) == {f"{n}.{ab}" for n in kyutai_modules(CFG) for ab in ("lora_A", "lora_B")}
    assert any(v.abs().sum() > 0 for k, v in lora_state_dict(ours).items() if k.endswith("lora_B"))
    codes = _codes(CFG, seed=99)
    with torch.no_grad():
        assert (ours(codes).audio_logits - ref(codes).logits.nan_to_num()).abs().max() > 1e-2


@pytest.mark.parametrize("fuse", [False, True])
def test_ours_saved_then_loaded_by_kyutai_loader(tmp_path, fuse):
    ref, ours = _trained()
    path = save_lora(ours, tmp_path / "lora.safetensors", kyutai_config=kyutai_kwargs(CFG))
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["lora"], config["lora_rank"], config["lora_scaling"], config["lora_name"]) == \
        (True, RANK, SCALING, "lora.safetensors")
    names = set(load_file(str(path)))
    assert "transformer.layers.0.self_attn.in_projs.0.lora_A.weight" in names
    assert "depformer.layers.1.gating.7.linear_out.lora_B.weight" in names and "linears.3.lora_A.weight" in names
    theirs = _reference_with_lora(tmp_path, ref, path, fuse)
    _assert_same_logits(theirs, ours)


def _reference_adapters(ref, seed=5, stacked=False):
    """Kyutai's LoRA modules on `ref` with random nonzero A and B; (their adapter state, ref)."""
    replace_all_linear_with_lora(ref, RANK, SCALING)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 / p.shape[-1] ** 0.5)
    state = {k: v.clone() for k, v in ref.state_dict().items() if "lora" in k}
    if stacked:  # the unsplit attention names Kyutai's load hook also takes (steps stacked along dim 0)
        out = {}
        for k, v in state.items():
            for kind in ("in_projs", "out_projs"):
                marker = f".self_attn.{kind}."
                if marker in k:
                    prefix, rest = k.split(marker)
                    step, tail = rest.split(".", 1)
                    out.setdefault(f"{prefix}.self_attn.{kind[:-1]}.{tail}", {})[int(step)] = v
                    break
            else:
                out[k] = v
        state = {k: torch.cat([v[i] for i in sorted(v)]) if isinstance(v, dict) else v for k, v in out.items()}
    return state, ref.eval()


@pytest.mark.parametrize("stacked", [False, True])
def test_kyutai_adapters_load_into_ours(tmp_path, stacked):
    ref, ours = make_pair(CFG, seed=3)
    state, ref = _reference_adapters(ref, stacked=stacked)
    path = tmp_path / "lora.safetensors"
    save_file(state, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"lora": True, "lora_rank": RANK, "lora_scaling": SCALING}))
    info = load_lora(ours, path)
    assert (info.rank, info.scaling, len(info.layers)) == (RANK, SCALING, len(kyutai_modules(CFG)))
    _assert_same_logits(ref, ours.eval())
    if stacked:  # Kyutai's own loader reads the same file
        theirs = _reference_with_lora(tmp_path, make_pair(CFG, seed=3)[0], path, fuse=False)
        _assert_same_logits(theirs, ours)


def test_merging_gives_the_same_outputs(tmp_path):
    ref, ours = _trained()
    path = save_lora(ours, tmp_path / "lora.safetensors")
    merged = LMModel(CFG).eval()
    merged.load_state_dict({k: v for k, v in ours.state_dict().items() if "lora_" not in k})
    info = load_lora(merged, path, merge=True)
    assert info.merged and not any("lora" in k for k in merged.state_dict())
    assert set(linear_layers(merged)) == set(kyutai_modules(CFG))  # plain layers again
    _assert_same_logits(_reference_with_lora(tmp_path, ref, path, fuse=True), merged)
    codes = _codes(CFG, seed=7)
    with torch.no_grad():
        a, b = ours(codes), merged(codes)
    torch.testing.assert_close(a.audio_logits, b.audio_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.text_logits, b.text_logits, atol=1e-5, rtol=0)
    assert merge_lora(ours) == len(kyutai_modules(CFG))
    with torch.no_grad():
        torch.testing.assert_close(ours(codes).audio_logits, a.audio_logits, atol=1e-5, rtol=0)


def test_subset_of_layers_round_trips(tmp_path):
    ref, ours = _trained(targets=["in_proj", "depformer.heads"])
    path = save_lora(ours, tmp_path / "lora.safetensors")
    other = LMModel(CFG).eval()
    other.load_state_dict({k: v for k, v in ours.state_dict().items() if "lora_" not in k})
    info = load_lora(other, path)
    assert set(info.layers) == set(n.rsplit(".lora", 1)[0] for n in lora_state_dict(ours))
    assert "depformer.in_proj" in info.layers and "text_linear" not in info.layers
    for k, v in lora_state_dict(ours).items():
        assert torch.equal(lora_state_dict(other)[k], v), k


def test_saved_from_a_state_dict_into_a_folder(tmp_path):
    _, ours = _trained(steps=1, targets=["in_proj", "text_linear"])
    full = {k: v.clone() for k, v in ours.state_dict().items()}  # e.g. gathered from FSDP2: base entries too
    with pytest.raises(ValueError, match="needs their scaling"):
        save_lora(full, tmp_path / "x")
    path = save_lora(full, tmp_path / "run", scaling=SCALING, kyutai_config={"dim": CFG.dim})
    assert path == tmp_path / "run" / "lora.safetensors"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == {"dim": CFG.dim, "lora": True, "lora_rank": RANK, "lora_scaling": SCALING,
                      "lora_name": "lora.safetensors"}
    assert load_file(str(path)).keys() == load_file(str(save_lora(ours, tmp_path / "m.safetensors"))).keys()
    other = LMModel(CFG).eval()
    other.load_state_dict({k: v for k, v in full.items() if "lora_" not in k})
    load_lora(other, path)
    assert all(torch.equal(lora_state_dict(other)[k], v) for k, v in lora_state_dict(ours).items())
    with pytest.raises(ValueError, match="rank 8 asked for"):
        save_lora(ours, tmp_path / "r.safetensors", rank=8)


def _saved(tmp_path):
    _, ours = _trained(steps=1)
    path = save_lora(ours, tmp_path / "good.safetensors")
    return load_file(str(path)), ours


def _write(tmp_path, state, name="bad.safetensors", config=None):
    path = tmp_path / name
    save_file(state, str(path))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return path


def _fresh():
    return LMModel(CFG).eval()


def test_bad_adapter_files_are_refused_naming_the_problem(tmp_path):
    state, _ = _saved(tmp_path)
    missing = {k: v for k, v in state.items() if k != "linears.3.lora_B.weight"}
    with pytest.raises(LoraError, match=r"missing: depformer\.heads\.lora_B\[3\]"):
        load_lora(_fresh(), _write(tmp_path, missing, "missing.safetensors"))
    extra = {**state, "mystery.lora_A.weight": torch.zeros(RANK, 8), "emb.0.lora_A.weight": torch.zeros(RANK, 8)}
    with pytest.raises(LoraError, match="unexpected: .*mystery.lora_A.weight"):
        load_lora(_fresh(), _write(tmp_path, extra, "extra.safetensors"))
    with pytest.raises(LoraError, match="wrong LoRA rank: the model's config.json says 8, .* rank 4"):
        load_lora(_fresh(), _write(tmp_path, state, "rank.safetensors"), rank=8)
    mixed = dict(state)
    mixed["text_linear.lora_A.weight"] = torch.zeros(RANK + 2, CFG.dim)
    mixed["text_linear.lora_B.weight"] = torch.zeros(CFG.text_card, RANK + 2)
    with pytest.raises(LoraError, match="different ranks"):
        load_lora(_fresh(), _write(tmp_path, mixed, "mixed.safetensors"))
    nan = dict(state)
    nan["text_linear.lora_B.weight"] = torch.full_like(state["text_linear.lora_B.weight"], float("nan"))
    with pytest.raises(LoraError, match="text_linear.lora_B.weight holds .* NaN"):
        load_lora(_fresh(), _write(tmp_path, nan, "nan.safetensors"))
    with pytest.raises(LoraError, match="holds no LoRA adapter"):
        load_lora(_fresh(), _write(tmp_path, {"x": torch.zeros(2)}, "none.safetensors"))
    sub = tmp_path / "sub"
    sub.mkdir()
    path = save_lora(_trained(steps=0)[1], sub / "lora.safetensors")
    (sub / "config.json").write_text(json.dumps({"lora": True, "lora_rank": RANK, "lora_scaling": 3.0}))
    with pytest.raises(LoraError, match="conflicting LoRA scaling .*metadata says 1.5; .*config.json says 3"):
        load_lora(_fresh(), path)
    with pytest.raises(LoraError, match="mis-shaped: .*text_linear.lora_A.weight"):  # another model's adapters
        load_lora(LMModel(CFG.replace(dim=96, num_heads=4)), tmp_path / "good.safetensors")
    with pytest.raises(LoraError, match=r"20 missing: depformer\.in_proj\.lora_A\[8, 9, "):  # more depth steps
        load_lora(LMModel(CFG.replace(dep_q=16)), tmp_path / "good.safetensors")
    with pytest.raises(FileNotFoundError, match="LoRA adapter file not found"):
        load_lora(_fresh(), tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_lora(_fresh(), tmp_path / "junk.safetensors")


def test_loading_into_a_model_with_adapters_replaces_them(tmp_path):
    _, ours = _trained(steps=1)
    path = save_lora(ours, tmp_path / "lora.safetensors")
    other = LMModel(CFG).eval()
    apply_lora(other, RANK, SCALING)
    load_lora(other, path)  # e.g. resuming a LoRA run from its adapters
    assert all(torch.equal(lora_state_dict(other)[k], v) for k, v in lora_state_dict(ours).items())
    wrong = LMModel(CFG).eval()
    apply_lora(wrong, RANK + 1, SCALING)
    with pytest.raises(LoraError, match="already has adapters"):
        load_lora(wrong, path)


def test_a_config_json_without_lora_true_beside_the_file_is_not_read(tmp_path):
    _, ours = _trained(steps=0)
    path = save_lora(ours, tmp_path / "lora.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"lora": False, "lora_rank": 128, "lora_scaling": 9.0}))
    assert load_lora(_fresh(), path).scaling == SCALING
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LoraError, match="cannot read .*config.json"):
        load_lora(_fresh(), path)
