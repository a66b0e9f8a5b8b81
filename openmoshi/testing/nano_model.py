"""nanomoshi's architecture with random weights, in the layout of the shipped model folder: for speed
measurements (bench/serve.py --nano, bench/runtime.py --nano) before, or without, the trained weights.

The codec is the `nano` codec preset (`train.codec_config.NANO_MIMI`: Mimi's architecture at 128 channels,
16 filters, 2 transformer layers, 8 codebooks of 1024), the LM `train.lm_config.NANO_LM` with the post-training
delays (acoustic delay 1: the stage that is shipped). Both are written the way the trainers export them
(`lm_export.export_lm`, the codec under Kyutai's names with `to_kyutai_state`), so the folder loads through the
same path as the real one (`resolve_model_files` + `load_models`). The tokenizer is a tiny SentencePiece model
(its pieces are fewer than the text card, which the loader allows): speed does not depend on it.
moshi-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_PIECES = 320  # what the tiny corpus of `train_tiny_spm` supports


def nano_lm_config(**overrides: Any):
    """The LMConfig of nanomoshi's shipped LM (NANO_LM, acoustic delay 1), with `overrides` (LMConfig fields,
    e.g. num_layers=4 to measure a smaller variant)."""
    from ..lm.config import lm_preset
    from ..train.lm_config import NANO_LM
    from ..train.lm_step import training_lm_config

    cfg = lm_preset("tiny").replace(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in NANO_LM.items()})
    cfg = training_lm_config(cfg, 1)
    return cfg.replace(**overrides) if overrides else cfg


def nano_mimi_overrides(**overrides: Any) -> dict[str, Any]:
    """config.json's "mimi" object of nanomoshi's codec (NANO_MIMI), sections updated by `overrides`
    (e.g. transformer={"num_layers": 1})."""
    from ..train.codec_config import NANO_MIMI

    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in NANO_MIMI.items()}
    for section, values in overrides.items():
        out[section] = {**out.get(section, {}), **values} if isinstance(values, dict) else values
    return out


def build_nano_repo(folder: str | Path, seed: int = 0, lm_overrides: dict[str, Any] | None = None,
                    mimi_overrides: dict[str, Any] | None = None) -> Path:
    """Write a random-weight nanomoshi model folder to `folder` (created): model.safetensors, the codec,
    the tokenizer, config.json. `lm_overrides` / `mimi_overrides`: see `nano_lm_config` / `nano_mimi_overrides`.
    Returns the folder."""
    import torch
    from safetensors.torch import save_file

    from ..codec.checkpoint import to_kyutai_state
    from ..codec.mimi import Mimi
    from ..codec.presets import mimi_config_from_overrides
    from ..lm.model import LMModel
    from ..train.lm_export import export_lm
    from .mimi_init import randomize_model
    from .spm import train_tiny_spm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = nano_lm_config(**(lm_overrides or {}))
    mimi_json = nano_mimi_overrides(**(mimi_overrides or {}))
    mimi_cfg = mimi_config_from_overrides(mimi_json)
    torch.manual_seed(seed)
    with torch.device("meta"):
        lm = LMModel(cfg)
    lm = lm.to_empty(device="cpu")
    lm.init_weights()
    mimi = randomize_model(Mimi(mimi_cfg), seed)
    work = folder / ".nano_build"
    codec_file = work / "mimi.safetensors"
    work.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in to_kyutai_state(mimi.state_dict(), len(mimi_cfg.seanet.ratios)).items()},
              str(codec_file))
    spm = train_tiny_spm(work / "spm", vocab_size=TOKENIZER_PIECES)
    export_lm(folder, lm.state_dict(), cfg, mimi=codec_file, tokenizer=spm, mimi_overrides=mimi_json)
    for f in (codec_file, spm):
        f.unlink()
    (work / "spm").rmdir()
    work.rmdir()
    return folder
