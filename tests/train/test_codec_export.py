"""The export of a trained codec: Kyutai's names (both sizes), a folder our loaders read, streaming = batch
after training, and a codec trained at the released size loads into Kyutai's own MimiModel with the same codes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from openmoshi.codec.checkpoint import kyutai_to_ours, load_mimi, ours_to_kyutai
from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.codec.presets import mimi_config_from_overrides
from openmoshi.codec.quantizer import QuantizerTraining
from openmoshi.model_files import resolve_model_files
from openmoshi.nn.streaming import streaming
from openmoshi.testing.mimi_init import randomize_model, reference_shapes, to_published_naming
from openmoshi.train.codec_export import export_codec, mimi_overrides
from openmoshi.train.codec_step import (
    BalancerConfig,
    CodecBatch,
    CodecLossConfig,
    ReconstructionWeights,
    codec_optimizers,
    codec_parts,
    codec_step,
)


@pytest.mark.parametrize("cfg", [MimiConfig.tiny(), MimiConfig.mimi()], ids=["tiny", "mimi"])
def test_names_round_trip(cfg: MimiConfig) -> None:
    with torch.device("meta"):
        names = list(Mimi(cfg).state_dict())
    stages = len(cfg.seanet.ratios)
    kyutai = [ours_to_kyutai(n, stages) for n in names]
    assert [kyutai_to_ours(k, stages) for k in kyutai] == names
    assert len(set(kyutai)) == len(names)
    if cfg == MimiConfig.mimi():  # exactly the names of Kyutai's published file
        published = set(to_published_naming(dict.fromkeys(reference_shapes(), torch.empty(0))))
        assert set(kyutai) == published
    with pytest.raises(KeyError):
        ours_to_kyutai("encoder.nothing.weight")


def _train(mimi: Mimi, wav: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    mimi.quantizer.training_options = QuantizerTraining(ema_decay=0.9, dropout_prob=0.5)
    cfg = CodecLossConfig(ReconstructionWeights(adversarial=0, feature_matching=0), BalancerConfig(enabled=False))
    parts = codec_parts(mimi, cfg, ema_decay=0.5)
    optims = codec_optimizers(parts, lr=1e-3)
    for _ in range(steps):
        codec_step(parts, optims, CodecBatch(wav), cfg)
    assert parts.ema is not None
    return parts.ema.export_state(mimi)


def test_trained_tiny_codec_exports_loads_and_streams_as_batch(tmp_path) -> None:
    torch.manual_seed(0)
    mimi = randomize_model(Mimi(MimiConfig.tiny()), seed=0)
    wav = torch.randn(2, 1, 40 * mimi.frame_size) * 0.1
    state = _train(mimi, wav, steps=3)
    export_codec(tmp_path / "export", state, mimi.cfg)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config == {"mimi_name": "mimi.safetensors", "mimi": {"preset": "tiny"}}
    assert "encoder.model.0.conv.conv.weight" in load_file(tmp_path / "export" / "mimi.safetensors")
    files = resolve_model_files(str(tmp_path / "export"), roles=("mimi",))
    loaded = load_mimi(files.mimi, mimi_config_from_overrides(files.mimi_overrides))
    # The export holds the weight EMA, and the codebooks as trained.
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=name)
    clip = torch.randn(1, 1, 30 * mimi.frame_size) * 0.1
    with torch.no_grad():
        codes = loaded.encode(clip, 8)
        audio = loaded.decode(codes)
        with streaming(loaded, 1):
            stream_codes = torch.cat([loaded.encode(clip[..., i:i + mimi.frame_size], 8)
                                      for i in range(0, clip.shape[-1], mimi.frame_size)], dim=-1)
        with streaming(loaded, 1):
            stream_audio = torch.cat([loaded.decode(codes[..., i:i + 3]) for i in range(0, 30, 3)], dim=-1)
    assert torch.equal(stream_codes, codes)
    torch.testing.assert_close(stream_audio, audio, atol=1e-5, rtol=1e-5)


def test_overrides_of_a_custom_size() -> None:
    cfg = MimiConfig.tiny()
    cfg.quantizer.num_acoustic = 3
    cfg.num_codebooks = 2
    assert mimi_config_from_overrides(mimi_overrides(cfg)) == cfg


def test_released_size_trained_codec_loads_into_kyutai_mimimodel(tmp_path) -> None:
    from moshi.models.loaders import get_mimi

    torch.manual_seed(1)
    mimi = randomize_model(Mimi(MimiConfig.mimi()), seed=1)
    gen = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(1, 1, 4 * 1920, generator=gen)
    state = _train(mimi, wav, steps=1)
    weights = export_codec(tmp_path, state, mimi.cfg)
    assert json.loads((tmp_path / "config.json").read_text())["mimi"] == {"preset": "mimi"}
    ref = get_mimi(str(weights), device="cpu").eval()
    ours = load_mimi(weights, "mimi")
    clip = 0.1 * torch.randn(1, 1, 12 * 1920, generator=gen)
    with torch.no_grad():
        ref_codes = ref.encode(clip)
        our_codes = ours.encode(clip, 8)
    assert torch.equal(ref_codes[:, :8], our_codes)
    assert len(torch.unique(our_codes[0, 0])) > 1
