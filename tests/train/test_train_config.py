"""Training configs: presets with FACTS.md's constants, strict YAML and --set overrides, the saved config.yaml
reading back to the same config."""

import pytest

from openmoshi.commands.train_lm import PRESET_NAMES
from openmoshi.train.config import ConfigError, dump_yaml, parse_set, resolve_config
from openmoshi.train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig


def resolve(source, *sets):
    return resolve_config(LMTrainConfig, source, LM_TRAIN_PRESETS, list(sets))


def test_presets_hold_the_facts():
    assert set(PRESET_NAMES) == set(LM_TRAIN_PRESETS)  # the command's torch-free list is the registry
    pre = resolve("pretrain")
    assert (pre.optim.lr, pre.optim.depth_lr) == (3e-5, 2e-4)
    assert (pre.loss.acoustic_delay, pre.loss.text_mask_prob, pre.loss.text_only_share) == (2, 0.3, 0.5)
    post = resolve("posttrain")
    assert (post.optim.lr, post.optim.depth_lr, post.loss.acoustic_delay) == (3e-6, 5e-5, 1)
    ft = resolve("finetune")
    assert (ft.optim.lr, ft.optim.depth_lr, ft.loss.codebooks) == (2e-6, 4e-6, "moshi")
    lora = resolve("finetune_lora")
    assert lora.lora.enabled and (lora.lora.rank, lora.lora.scaling) == (128, 2.0)
    assert (lora.optim.lr, lora.schedule.kind, lora.schedule.warmup_share, lora.optim.grad_clip) == (
        2e-6, "onecycle", 0.05, 1.0)
    assert lora.data.seq_frames == 1250  # 100 s at 12.5 Hz
    for name in LM_TRAIN_PRESETS:
        cfg = resolve(name)
        assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.1, name


def test_set_overrides_are_typed_and_dotted():
    cfg = resolve("tiny", "optim.lr=1e-4", "train.steps=7", "loss.codebooks=all", "lora.targets=[attn]",
                  "optim.betas=[0.8, 0.9]", "model.overrides={dep_q: 16}")
    assert cfg.optim.lr == 1e-4 and cfg.train.steps == 7 and cfg.loss.codebooks == "all"
    assert cfg.lora.targets == ["attn"] and cfg.optim.betas == (0.8, 0.9) and cfg.model.overrides == {"dep_q": 16}
    assert resolve("tiny", "optim.lr=1").optim.lr == 1.0  # an integer for a float is fine


@pytest.mark.parametrize("item, words", [
    ("optim.lrr=1", ["optim.lrr", "known:"]),
    ("nope.x=1", ["nope"]),
    ("train.steps=ten", ["train.steps", "integer", "'ten'"]),
    ("train.steps=1.5", ["train.steps", "integer"]),
    ("train.compile=1", ["train.compile", "true or false"]),
    ("loss.codebooks=some", ["loss.codebooks", "'moshi'"]),
    ("optim.betas=[0.9]", ["optim.betas"]),
    ("loss.text_mask_prob=2", ["text_mask_prob", "[0, 1]"]),
    ("train.batch_size=3", ["batch_size", "grad_accum"]),
    ("optim", ["key=value"]),
    ("optim.lr=[", ["optim.lr", "cannot parse"]),
])
def test_bad_overrides_are_refused_by_name(item, words):
    if item == "train.batch_size=3":
        item_list = [item, "train.grad_accum=2"]
    else:
        item_list = [item]
    with pytest.raises(ConfigError) as err:
        resolve("tiny", *item_list)
    for w in words:
        assert w in str(err.value), (item, str(err.value))


def test_parse_set_nests():
    assert parse_set("a.b.c=3") == {"a": {"b": {"c": 3}}}


def test_yaml_file_over_a_preset(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("preset: finetune\noptim:\n  lr: 1.0e-5\ntrain:\n  steps: 3\n")
    cfg = resolve(str(f))
    assert cfg.optim.lr == 1e-5 and cfg.train.steps == 3 and cfg.optim.depth_lr == 4e-6  # the rest: finetune
    f.write_text("optim:\n  lr: 1.0e-5\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match="optim.momentum"):
        resolve(str(f))
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(str(f))
    f.write_text("preset: huge\n")
    with pytest.raises(ConfigError, match="huge"):
        resolve(str(f))
    with pytest.raises(ConfigError, match="unknown preset 'tinyy'"):
        resolve("tinyy")
    with pytest.raises(ConfigError, match="not found"):
        resolve(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("name", list(LM_TRAIN_PRESETS))
def test_saved_config_reads_back_equal(tmp_path, name):
    cfg = resolve(name, "model.overrides={dim: 32}", "loss.acoustic_delay=null")
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    assert resolve(str(path)) == cfg
