"""LoRA fine-tuning in the trainer: only the adapters train and the loss falls; the export is the untouched base
plus the adapters alone (Kyutai's layout), which our loader runs as the trained model."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "inference"))
from lm_train_testutils import read_metrics, tiny_config  # noqa: E402
from runtime_testutils import build_tiny_repo  # noqa: E402

from openmoshi.inference.models import load_models, resolve_model_files  # noqa: E402
from openmoshi.train.lm_data import SyntheticLMData  # noqa: E402
from openmoshi.train.lm_trainer import train_lm  # noqa: E402


def test_lora_overfits_and_exports_adapters_alone(tmp_path):
    repo = build_tiny_repo(tmp_path / "repo", seed=1)
    cfg = tiny_config(f"model.init={repo}", "lora.enabled=true", "lora.rank=8", "lora.scaling=2.0",
                      "train.steps=50", "optim.lr=1e-2", "optim.depth_lr=1e-2", small=False)
    run = tmp_path / "run"
    train_lm(cfg, run, progress=False, log=lambda _m: None)
    train = read_metrics(run)
    assert train[-1]["loss"] < 0.5 * train[0]["loss"], (train[0]["loss"], train[-1]["loss"])
    export = run / "export"
    adapters = load_file(export / "lora.safetensors")
    assert adapters and all(".lora_A." in k or ".lora_B." in k for k in adapters)
    assert (export / "model.safetensors").read_bytes() == (repo / "model.safetensors").read_bytes()  # base kept
    config = json.loads((export / "config.json").read_text())
    assert config["lora"] is True and config["lora_rank"] == 8 and config["lora_scaling"] == 2.0
    # our runtime loads base + adapters; it computes the trained model, not the base
    base = load_models(resolve_model_files(str(repo)), device="cpu").lm
    tuned = load_models(resolve_model_files(str(export)), device="cpu").lm
    codes = SyntheticLMData(base.cfg, 2, 16, seed=cfg.train.seed).sequences[:2]
    from openmoshi.lm.loss import LossConfig, lm_loss

    with torch.no_grad():
        loss_base = lm_loss(base(codes), codes, LossConfig.for_model(base.cfg, audio_codebooks=tuple(range(8)))).total
        loss_tuned = lm_loss(tuned(codes), codes, LossConfig.for_model(base.cfg, audio_codebooks=tuple(range(8)))).total
    assert loss_tuned < 0.6 * loss_base  # the training sequences, learnt through the adapters
