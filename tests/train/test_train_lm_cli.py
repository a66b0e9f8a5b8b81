"""`openmoshi train lm` end to end: fine-tune a tiny Kyutai-layout model on a tiny dataset of recordings
(prepared on first use), the loss falling; the export runs in `openmoshi chat`; errors for bad input."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "data"))
sys.path.insert(0, str(HERE.parents[1] / "lm"))
from data_testutils import MIMI, small_dataset  # noqa: E402
from lm_testutils import make_reference  # noqa: E402
from lm_train_testutils import read_metrics  # noqa: E402

from openmoshi import cli  # noqa: E402
from openmoshi.codec.mimi import Mimi  # noqa: E402
from openmoshi.codec.presets import mimi_config_from_overrides  # noqa: E402
from openmoshi.inference.models import load_models, resolve_model_files  # noqa: E402
from openmoshi.testing.kyutai import published_state_dict, tiny_lm_config, write_kyutai_repo  # noqa: E402
from openmoshi.testing.mimi_init import randomize_model  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny model in Kyutai's layout (reference weights under published names) whose Mimi runs at 12.5 Hz
    frames of 32 samples (400 Hz audio), so a few seconds of recordings make a few dozen frames."""
    cfg = tiny_lm_config()
    mimi = randomize_model(Mimi(mimi_config_from_overrides(MIMI)), 0)
    mimi_state = {k: v.detach().contiguous().clone() for k, v in mimi.state_dict().items()}
    lm_state = published_state_dict(make_reference(cfg, seed=0))
    return write_kyutai_repo(tmp_path_factory.mktemp("repo"), cfg, lm_state, mimi_state, mimi_overrides=MIMI)


def test_fine_tune_a_tiny_kyutai_model_from_recordings(repo, tmp_path, capsys):
    manifest = small_dataset(tmp_path / "data", n=5)
    run = tmp_path / "run"
    argv = ["train", "lm", "tiny", "--model", str(repo), "--data", str(manifest), "--out", str(run), "--steps",
            "60", "--no-progress", "--threads", "1", "--set", "train.val_every=30", "--set", "data.val_share=0.3"]
    assert cli.main(argv) == 0
    assert "done: step 60" in capsys.readouterr().out
    train = read_metrics(run)
    start = np.mean([r["loss"] for r in train[:3]])
    end = np.mean([r["loss"] for r in train[-3:]])
    assert end < 0.6 * start, (start, end)  # the tiny dataset is learnt
    export = run / "export"
    files = resolve_model_files(str(export))
    models = load_models(files, device="cpu")
    assert models.lm.cfg == resolve_model_files(str(repo)).repo_config.lm  # the checkpoint's architecture stood
    assert files.mimi.read_bytes() == (repo / files.mimi.name).read_bytes()
    before = load_models(resolve_model_files(str(repo)), device="cpu").lm.state_dict()
    after = models.lm.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained
    # the exported model chats
    user = tmp_path / "user.wav"
    sf.write(str(user), (0.1 * np.random.default_rng(0).standard_normal(2000)).astype(np.float32), 400)
    out = tmp_path / "conv.wav"
    assert cli.main(["chat", "--model", str(export), "--input", str(user), "--output", str(out),
                     "--no-progress"]) == 0
    assert out.is_file()
    # the dataset was prepared on first use, beside the manifest (where the next run finds it)
    assert (manifest.parent / "data.prepared" / "index.json").is_file()
    config = (run / "config.yaml").read_text()
    assert "init: " + str(repo) in config and "manifest: " + str(manifest) in config


def _fails(argv, capsys, *words):
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert "Traceback" not in err


def test_errors_are_clear(tmp_path, capsys, repo):
    out = str(tmp_path / "run")
    _fails(["train", "lm", "tinyy", "--data", "synthetic", "--out", out], capsys, "unknown preset 'tinyy'")
    _fails(["train", "lm", "tiny", "--data", "synthetic", "--out", out, "--set", "optim.lrr=1"], capsys,
           "optim.lrr")
    _fails(["train", "lm", "tiny", "--data", str(tmp_path / "none.jsonl"), "--out", out], capsys,
           "no such manifest")
    _fails(["train", "lm", "tiny", "--out", out, "--steps", "1"], capsys, "no data")
    _fails(["train", "lm", "tiny", "--data", "synthetic", "--model", str(tmp_path / "nomodel"), "--out", out],
           capsys, "neither an existing folder")
    _fails(["train", "lm", "--resume", "--out", str(tmp_path / "nothing")], capsys, "cannot resume")
    _fails(["train", "lm", "tiny", "--resume", "--out", out], capsys, "CONFIG")
    _fails(["train", "lm"], capsys, "give a CONFIG")
    manifest = small_dataset(tmp_path / "data", n=3)  # no text files
    _fails(["train", "lm", "tiny", "--model", str(repo), "--data", str(manifest), "--out", out, "--set",
            "loss.text_only_share=0.5", "--no-progress"], capsys, "text_only_share", "no text")
    assert not Path(out).exists()  # refused before the run folder was made
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    _fails(["train", "lm", "tiny", "--data", "synthetic", "--out", str(busy), "--steps", "1"], capsys,
           "not empty", "--resume")


def test_resume_from_the_command_line_extends_a_run(tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["train", "lm", "tiny", "--data", "synthetic", "--out", run, "--no-progress", "--threads", "1",
            "--set", "train.val_every=0", "--set", "train.log_every=1"]
    assert cli.main([*base, "--steps", "3"]) == 0
    assert cli.main(["train", "lm", "--resume", "--out", run, "--steps", "5", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(Path(run))] == [1, 2, 3, 4, 5]
    assert "steps: 3" in (Path(run) / "config.yaml").read_text()  # the run's own config is not rewritten
    assert json.loads((Path(run) / "export" / "config.json").read_text())["dim"] == 64
