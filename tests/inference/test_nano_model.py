"""The random-weight nanomoshi folder (openmoshi/testing/nano_model.py, used by bench/serve.py --nano and
bench/step.py): it loads through the runtime's loader with exactly nanomoshi's architecture, and steps."""

from __future__ import annotations

import json

import pytest
import torch

from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.session import DuplexSession
from openmoshi.testing.nano_model import build_nano_repo, nano_lm_config
from openmoshi.train.codec_config import NANO_MIMI
from openmoshi.train.lm_config import NANO_LM


@pytest.fixture(scope="module")
def nano_folder(tmp_path_factory):
    return build_nano_repo(tmp_path_factory.mktemp("nano") / "model", seed=3)


def test_nano_folder_loads_with_nanomoshis_architecture(nano_folder):
    config = json.loads((nano_folder / "config.json").read_text())
    assert config["mimi"] == NANO_MIMI  # the codec's config.json object, as the codec export writes it
    models = load_models(resolve_model_files(nano_folder), "cpu")
    cfg = models.lm.cfg
    for key, value in NANO_LM.items():
        if key != "delays":
            assert getattr(cfg, key) == value, key
    assert cfg == nano_lm_config()
    assert cfg.delays == (0, 0) + (1,) * 7 + (0,) + (1,) * 7  # the shipped (post-training) acoustic delay 1
    q = models.mimi.cfg.quantizer
    assert (q.num_codebooks, q.codebook_size, q.dimension) == (8, 1024, 128)
    assert models.mimi.cfg.seanet.n_filters == 16 and models.mimi.cfg.transformer.num_layers == 2
    assert models.mimi.frame_size == 1920
    with DuplexSession(models.mimi, models.lm, batch_size=1, seed=0) as session:
        outs = [session.step(0.1 * torch.randn(1, 1, 1920)) for _ in range(3)]
    assert outs[-1].pcm.shape == (1, 1, 1920) and torch.isfinite(outs[-1].pcm).all()
    assert 0 <= int(outs[-1].audio[0, 0]) < 1024  # producing from the second frame (max delay 1)


def test_nano_variant_and_bad_override(tmp_path):
    folder = build_nano_repo(tmp_path / "small", lm_overrides={"num_layers": 2, "depformer_num_layers": 1},
                             mimi_overrides={"transformer": {"num_layers": 1}})
    models = load_models(resolve_model_files(folder), "cpu")
    assert (models.lm.cfg.num_layers, models.lm.cfg.depformer_num_layers, models.lm.cfg.dim) == (2, 1, 256)
    assert models.mimi.cfg.transformer.num_layers == 1 and models.mimi.cfg.transformer.d_model == 128
    with pytest.raises(ValueError, match="num_layerz"):
        build_nano_repo(tmp_path / "bad", lm_overrides={"num_layerz": 2})
