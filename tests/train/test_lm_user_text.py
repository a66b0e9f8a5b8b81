"""The auxiliary user-transcript loss: its targets and weights, the trainer's use of it (learnt, checkpointed,
resumed exactly, never exported), and the clear error when the data has no user words."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_train_testutils import CrashingData, read_metrics, tiny_config  # noqa: E402

from openmoshi.lm.checkpoint import load_lm  # noqa: E402
from openmoshi.model_files import read_model_config  # noqa: E402
from openmoshi.train.lm_data import SyntheticLMData  # noqa: E402
from openmoshi.train.lm_trainer import resolve_model_source, train_lm  # noqa: E402
from openmoshi.train.lm_user_text import UserTranscriptHead, shifted_targets, user_transcript_loss  # noqa: E402


def quiet(_msg: str) -> None:
    pass


def test_targets_are_the_user_words_shift_frames_late():
    user = torch.tensor([[5, 6, 3, 0, 7, 8], [9, -1, -1, -1, -1, -1]])
    assert shifted_targets(user, 2).tolist() == [[-1, -1, 5, 6, 3, 0], [-1, -1, 9, -1, -1, -1]]
    assert shifted_targets(user, 0).tolist() == user.tolist()
    assert (shifted_targets(user, 9) == -1).all()
    with pytest.raises(ValueError, match="shift"):
        shifted_targets(user, -1)


def test_loss_weighs_words_and_padding_and_ignores_missing_targets():
    torch.manual_seed(0)
    head = UserTranscriptHead(8, 12)
    hidden = torch.randn(2, 7, 8)
    user = torch.tensor([[5, 3, 0, 7, -1, 9, 3], [3, 3, 4, 4, 0, -1, -1]])
    loss, ok, n = user_transcript_loss(head, hidden, user, shift=1, padding_ids=(3, 0), padding_weight=0.5)
    targets = shifted_targets(user, 1)
    ce = F.cross_entropy(head(hidden).flatten(0, 1), targets.clamp_min(0).flatten(), reduction="none")
    w = torch.where((targets == 3) | (targets == 0), 0.5, 1.0).flatten() * (targets >= 0).flatten()
    assert loss.item() == pytest.approx(((ce * w).sum() / w.sum()).item(), rel=1e-5)
    words = (targets >= 0) & (targets != 3) & (targets != 0)  # accuracy counts the word pieces only
    assert int(n) == int(words.sum()) == 5
    hits = ((head(hidden).argmax(-1) == targets) & words).sum()
    assert int(ok) == int(hits)
    always_pad = UserTranscriptHead(8, 12)
    with torch.no_grad():
        always_pad.linear.weight.zero_()
        always_pad.linear.weight[3] = 1.0
    _, ok_pad, _ = user_transcript_loss(always_pad, hidden.abs() + 1, user, shift=1, padding_ids=(3, 0),
                                        padding_weight=0.5)
    assert int(ok_pad) == 0
    none, _, n0 = user_transcript_loss(head, hidden, torch.full_like(user, -1), shift=1, padding_ids=(3, 0),
                                       padding_weight=0.5)
    assert none.item() == 0 and int(n0) == 0


def _factory(lm_cfg, user_text=True, crash_after=None):
    def make(split, **kw):
        seed = kw.pop("seed") + (0 if split == "train" else 1)
        if crash_after is not None and split == "train":
            return CrashingData(crash_after, cfg=lm_cfg, seed=seed, user_text=user_text, **kw)
        return SyntheticLMData(lm_cfg, seed=seed, user_text=user_text, **kw)
    return make


def test_the_trainer_learns_the_user_words_and_does_not_export_the_head(tmp_path):
    cfg = tiny_config("train.steps=40", "train.val_every=40", "train.val_batches=1", "loss.user_text_weight=1.0",
                      "loss.user_text_delay=2", "train.checkpoint_every=40")
    run = tmp_path / "run"
    result = train_lm(cfg, run, progress=False, log=quiet, data=_factory(resolve_model_source(cfg).cfg))
    train = read_metrics(run)
    first, last = train[0]["user_text_loss"], train[-1]["user_text_loss"]
    assert last < 0.5 * first, (first, last)  # the synthetic user words are memorised
    val = read_metrics(run, "val")[-1]
    assert 0 <= val["user_text_acc"] <= 1 and val["user_text_loss"] > 0
    # the checkpoint holds the trained head; the export is Moshi's model alone and loads strictly
    import torch.distributed.checkpoint as dcp

    head = UserTranscriptHead(32, resolve_model_source(cfg).cfg.text_card)
    start = head.linear.weight.clone()
    state = {"model.user_text": head.state_dict()}
    dcp.load(state, checkpoint_id=str(run / "checkpoints" / "step_00000040"))
    assert not torch.equal(state["model.user_text"]["linear.weight"], start)
    repo_cfg, _ = read_model_config(result.export / "config.json")
    from safetensors.torch import load_file

    weights = load_file(str(result.export / "model.safetensors"))
    assert not any("user" in k for k in weights)
    load_lm(result.export / "model.safetensors", repo_cfg.lm)  # strict: no unexpected key


def test_resume_with_the_head_continues_the_same_curve(tmp_path):
    sets = ["train.steps=8", "train.checkpoint_every=4", "loss.user_text_weight=0.5", "loss.user_text_delay=1"]
    cfg = tiny_config(*sets)
    lm_cfg = resolve_model_source(cfg).cfg
    train_lm(cfg, tmp_path / "a", progress=False, data=_factory(lm_cfg), log=quiet)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lm(cfg, tmp_path / "b", progress=False, data=_factory(lm_cfg, crash_after=6), log=quiet)
    train_lm(cfg, tmp_path / "b", resume=True, progress=False, data=_factory(lm_cfg), log=quiet)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "user_text_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (ra["step"], key)


def test_data_without_user_words_is_a_clear_error(tmp_path):
    cfg = tiny_config("train.steps=2", "loss.user_text_weight=1.0")
    with pytest.raises(ValueError, match="user's words"):
        train_lm(cfg, tmp_path / "run", progress=False, log=quiet,
                 data=_factory(resolve_model_source(cfg).cfg, user_text=False))
    with pytest.raises(ValueError, match="user_text_weight"):
        tiny_config("loss.user_text_weight=-1")
