"""LMConfig: presets, validation, Kyutai config.json parsing."""

import pytest

from openmoshi.lm.config import LMConfig, kyutai_gating_hidden, parse_kyutai_config

# The LM part of Kyutai's moshiko config (moshi 0.2.13 loaders._lm_kwargs) plus repo fields.
KYUTAI_MOSHIKO = {
    "dim": 4096, "text_card": 32000, "existing_text_padding_id": 3, "n_q": 16, "dep_q": 8, "card": 2048,
    "num_heads": 32, "num_layers": 32, "hidden_scale": 4.125, "causal": True, "layer_scale": None,
    "context": 3000, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 1024, "depformer_dim_feedforward": 4224,
    "depformer_num_heads": 16, "depformer_num_layers": 6, "depformer_layer_scale": None,
    "depformer_multi_linear": True, "depformer_context": 8, "depformer_max_period": 10000,
    "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    "moshi_name": "model.safetensors", "mimi_name": "mimi.safetensors", "tokenizer_name": "tok.model",
    "lm_gen_config": {"temp": 0.6, "temp_text": 0.5, "top_k": 100, "top_k_text": 10},
}


def test_moshiko_preset_values():
    cfg = LMConfig.moshiko_7b()
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.hidden) == (4096, 32, 32, 11264)
    assert (cfg.depformer_dim, cfg.depformer_num_layers, cfg.depformer_num_heads, cfg.depformer_hidden) == (
        1024, 6, 16, 2816)
    assert cfg.num_streams == 17 and cfg.num_user_codebooks == 8 and cfg.max_delay == 1
    assert cfg.text_initial_id == 32000 and cfg.audio_initial_id == 2048


def test_kyutai_json_moshiko_equals_preset():
    repo = parse_kyutai_config(KYUTAI_MOSHIKO)
    assert repo.lm == LMConfig.moshiko_7b()
    assert repo.mimi_name == "mimi.safetensors" and repo.tokenizer_name == "tok.model"
    assert repo.lm_gen_config["temp_text"] == 0.5
    assert LMConfig.from_kyutai_json(KYUTAI_MOSHIKO) == LMConfig.moshiko_7b()
    assert parse_kyutai_config(None).lm == LMConfig.moshiko_7b()


def test_kyutai_json_custom_sizes():
    raw = dict(KYUTAI_MOSHIKO, dim=256, num_heads=4, num_layers=3, depformer_dim=64,
               depformer_dim_feedforward=256, dep_q=16, delays=[0] + [2] * 16)
    cfg = LMConfig.from_kyutai_json(raw)
    assert cfg.hidden == kyutai_gating_hidden(256, int(4.125 * 256)) == 704
    assert cfg.depformer_hidden == (21 * 64) // 8  # dim_feedforward == 4 * dim rule
    assert cfg.dep_q == 16 and cfg.num_user_codebooks == 0 and cfg.max_delay == 2


@pytest.mark.parametrize("key,value", [("norm", "layer_norm"), ("depformer_pos_emb", "sin"),
                                       ("conditioners", {"x": 1}), ("some_new_key", 1)])
def test_kyutai_json_unsupported_is_named(key, value):
    with pytest.raises(ValueError, match=key):
        parse_kyutai_config(dict(KYUTAI_MOSHIKO, **{key: value}))


def test_unknown_override_keys_are_errors():
    with pytest.raises(ValueError, match="wrong_key"):
        LMConfig.from_dict({"dim": 8, "wrong_key": 1})
    with pytest.raises(ValueError, match="depformer_dimm"):
        LMConfig.tiny().replace(depformer_dimm=3)


def test_validation():
    with pytest.raises(ValueError, match="delays"):
        LMConfig.tiny().replace(delays=(0, 1))
    with pytest.raises(ValueError, match="dep_q"):
        LMConfig.tiny().replace(dep_q=17)
    with pytest.raises(ValueError, match="num_heads"):
        LMConfig.tiny().replace(num_heads=5)


def test_tiny_presets():
    cfg = LMConfig.tiny(dep_q=16, acoustic_delay=2)
    assert cfg.delays == (0, 0, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2)
    assert cfg.num_user_codebooks == 0
    assert LMConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("key,value,named", [
    ("dim", None, "dim=None"), ("dim", "4096", "dim='4096'"), ("num_layers", 2.5, "num_layers must be an integer"),
    ("hidden_scale", "big", "hidden_scale='big'"), ("delays", [0, "1"], "delays must be a list of integers"),
    ("n_q", True, "n_q must be an integer"), ("depformer_dim_feedforward", [0], "depformer_dim_feedforward"),
    ("moshi_name", 7, "moshi_name=7"), ("tokenizer_name", "", "tokenizer_name=''"),
    ("lm_gen_config", [1, 2], "lm_gen_config=[1, 2]"), ("lm_gen_config", {"temp": "hot"}, "lm_gen_config.temp"),
    ("lm_gen_config", {"top_k": -1}, "lm_gen_config.top_k=-1"), ("max_period", None, "max_period"),
])
def test_kyutai_json_wrong_types_are_named(key, value, named):
    """Wrong types in a config.json are a ValueError naming the key, never a TypeError from deep inside."""
    with pytest.raises(ValueError, match="unsupported Kyutai config.json") as err:
        parse_kyutai_config(dict(KYUTAI_MOSHIKO, **{key: value}))
    assert named in str(err.value)
    with pytest.raises(ValueError, match="must hold a JSON object"):
        parse_kyutai_config([1, 2])  # type: ignore[arg-type]


def test_lm_presets_registry():
    from openmoshi.lm.config import LM_PRESETS, lm_preset

    assert set(LM_PRESETS) == {"moshiko_7b", "tiny"}
    assert lm_preset("moshiko_7b") == LMConfig.moshiko_7b() and lm_preset("tiny") == LMConfig.tiny()
    with pytest.raises(ValueError, match="unknown LM preset 'huge' \\(known: moshiko_7b, tiny\\)"):
        lm_preset("huge")
