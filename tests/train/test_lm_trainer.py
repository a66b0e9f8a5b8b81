"""The LM trainer on tiny models and synthetic data: it overfits, resumes exactly, keeps its run folder tidy,
and exports a model that our loader and Kyutai's load."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_train_testutils import CrashingData, read_metrics, tiny_config  # noqa: E402

from openmoshi.lm.checkpoint import load_lm  # noqa: E402
from openmoshi.model_files import read_model_config  # noqa: E402
from openmoshi.train.lm_data import SyntheticLMData  # noqa: E402
from openmoshi.train.lm_trainer import train_lm  # noqa: E402
from openmoshi.train.run import RunFolderError  # noqa: E402


def quiet(_msg: str) -> None:
    pass


def test_from_scratch_overfits_and_fills_the_run_folder(tmp_path):
    cfg = tiny_config("train.steps=60", "train.val_every=30", "train.val_batches=1", small=False)
    run = tmp_path / "run"
    result = train_lm(cfg, run, progress=False, log=quiet)
    train = read_metrics(run)
    assert [r["step"] for r in train] == list(range(1, 61))
    for key in ("loss", "lr", "depth_lr", "text_loss", "audio_loss", "tokens_per_s", "frames_per_s", "grad_norm"):
        assert all(isinstance(r[key], float) for r in train), key
    first, last = train[0]["loss"], train[-1]["loss"]
    assert last < 0.3 * first, (first, last)  # memorised: far below where it began
    assert train[-1]["text_loss"] < 0.3 * train[0]["text_loss"]
    assert train[-1]["audio_loss"] < 0.3 * train[0]["audio_loss"]
    val = read_metrics(run, "val")
    assert [r["step"] for r in val] == [30, 60]
    assert all(0 <= r[k] <= 1 for r in val for k in ("text_acc", "semantic_acc", "acoustic_acc"))
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step_00000060" / "meta.json").is_file()
    assert result.step == 60 and result.export == run / "export"


def test_a_non_empty_run_folder_is_refused_unless_resuming(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="--resume"):
        train_lm(tiny_config("train.steps=1"), run, progress=False, log=quiet)
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(RunFolderError, match="config.yaml"):
        train_lm(tiny_config("train.steps=1"), tmp_path / "other", resume=True, progress=False, log=quiet)


def _factory(crash_after=None):
    def make(split, **kw):
        seed = kw.pop("seed") + (0 if split == "train" else 1)
        from openmoshi.lm.config import LMConfig  # noqa: F401

        cfg = make.lm_cfg
        if crash_after is not None and split == "train":
            return CrashingData(crash_after, cfg=cfg, seed=seed, **kw)
        return SyntheticLMData(cfg, seed=seed, **kw)
    return make


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_continues_the_same_loss_curve(tmp_path, accum):
    """A run killed after its step-6 checkpoint and resumed logs the same losses as one never stopped (exactly
    the same computation: same weights, optimiser moments, data position, text masking draws)."""
    from openmoshi.train.lm_trainer import resolve_model_source

    sets = ["train.steps=12", "train.checkpoint_every=6", f"train.grad_accum={accum}", "loss.text_mask_prob=0.5",
            "loss.text_only_share=0.3", "train.val_every=6", "train.val_batches=1"]
    cfg = tiny_config(*sets)
    lm_cfg = resolve_model_source(cfg).cfg
    straight = _factory()
    straight.lm_cfg = lm_cfg
    train_lm(cfg, tmp_path / "a", progress=False, data=straight, log=quiet)
    crashing = _factory(crash_after=8 * accum - 1)  # dies during step 8: the step-6 checkpoint is the last
    crashing.lm_cfg = lm_cfg
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lm(cfg, tmp_path / "b", progress=False, data=crashing, log=quiet)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == list(range(1, 8))
    resumed = _factory()
    resumed.lm_cfg = lm_cfg
    train_lm(cfg, tmp_path / "b", resume=True, progress=False, data=resumed, log=quiet)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))  # step 7's first try was dropped from the log
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "text_loss", "audio_loss", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (ra["step"], key)
    va, vb = read_metrics(tmp_path / "a", "val"), read_metrics(tmp_path / "b", "val")
    assert [r["loss"] for r in vb] == pytest.approx([r["loss"] for r in va], rel=1e-6)


def test_export_loads_in_ours_and_in_kyutais(tmp_path):
    cfg = tiny_config("train.steps=2")
    run = tmp_path / "run"
    train_lm(cfg, run, progress=False, log=quiet)
    export = run / "export"
    repo_cfg, _ = read_model_config(export / "config.json")
    ours = load_lm(export / "model.safetensors", repo_cfg.lm)
    # the trained weights: the last checkpoint's model state equals the export
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from openmoshi.lm.model import LMModel

    fresh = LMModel(repo_cfg.lm)
    state = {"model.lm": get_model_state_dict(fresh)}
    dcp.load(state, checkpoint_id=str(run / "checkpoints" / "step_00000002"))
    for name, t in ours.state_dict().items():
        assert torch.equal(t, state["model.lm"][name]), name
    # Kyutai's own model class takes the file strictly, and computes what ours does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
    from lm_testutils import RefLMModel
    from safetensors.torch import load_file

    from openmoshi.testing.kyutai import kyutai_kwargs

    ref = RefLMModel(**kyutai_kwargs(repo_cfg.lm)).eval()
    ref.load_state_dict(load_file(export / "model.safetensors"), strict=True)
    raw = json.loads((export / "config.json").read_text())
    assert raw["delays"] == list(repo_cfg.lm.delays) and raw["dim"] == 32
    codes = SyntheticLMData(repo_cfg.lm, 2, 8).sequences[:2]
    with torch.no_grad():
        ref_out = ref.forward(codes)
        our_out = ours(codes)
    mask = our_out.text_mask[:, 0]
    assert torch.allclose(ref_out.text_logits[:, 0][mask], our_out.text_logits[:, 0][mask], atol=1e-4)
