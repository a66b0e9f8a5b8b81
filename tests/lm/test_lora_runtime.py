"""LoRA at run time: `--lora FILE` and config.json's `"lora": true` (load_models merges the adapters), generation
with adapters (LMGenerator, DuplexSession), and `openmoshi chat --lora` against Kyutai's LMGen on Kyutai's
LoRA-loaded model (greedy tokens equal), plus the errors a user meets."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from lm_testutils import kyutai_kwargs  # noqa: E402
from moshi.models.lm import LMGen  # noqa: E402
from moshi.models.loaders import get_moshi_lm  # noqa: E402
from runtime_testutils import build_tiny_repo, single_thread, tiny_lm_config  # noqa: E402,F401

from openmoshi import cli  # noqa: E402
from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.models import load_models, resolve_model_files  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.inference.session import DuplexSession  # noqa: E402
from openmoshi.lm.lora import LoraError, save_lora  # noqa: E402
from openmoshi.model_files import ModelFilesError  # noqa: E402
from openmoshi.nn.lora import apply_lora, lora_layers  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
CFG = tiny_lm_config()
RANK, SCALING = 4, 1.5
GREEDY = SamplingConfig(greedy=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("repo"), seed=4, lm_cfg=CFG)


@pytest.fixture(scope="module")
def adapted(repo, tmp_path_factory):
    """(adapter file, the repo's LM with those adapters unmerged)."""
    lm = load_models(resolve_model_files(str(repo)), device="cpu").lm
    apply_lora(lm, RANK, SCALING)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 / p.shape[-1] ** 0.5)
    path = tmp_path_factory.mktemp("run") / "lora.safetensors"
    save_lora(lm, path)
    return path, lm.eval()


def write_user(path: Path) -> Path:
    """A short stereo 16 kHz recording (resampled and mixed down by chat)."""
    sf.write(str(path), (0.3 * np.random.default_rng(0).standard_normal((336, 2))).astype(np.float32), 16000)
    return path


def run_chat(repo_dir, tmp_path, *extra):
    """`openmoshi chat` on a recording; the tokens it saved (--save-tokens)."""
    out, tokens = tmp_path / "out" / "conv.wav", tmp_path / "tokens.npz"
    argv = ["chat", "--model", str(repo_dir), "--input", str(write_user(tmp_path / "user.wav")), "--output",
            str(out), "--no-progress", "--save-tokens", str(tokens), *extra]
    assert cli.main(argv) == 0
    return dict(np.load(tokens))


def _codes(seed=0, T=8):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, CFG.card, (1, CFG.num_streams, T), generator=g)
    codes[:, 0] = torch.randint(0, CFG.text_card, (1, T), generator=g)
    return codes


def _same_outputs(a, b):
    codes = _codes()
    with torch.no_grad():
        x, y = a(codes), b(codes)
    torch.testing.assert_close(x.audio_logits, y.audio_logits, atol=1e-4, rtol=0)  # fp32 (merged: ~1e-5 apart)
    torch.testing.assert_close(x.text_logits, y.text_logits, atol=1e-4, rtol=0)


def test_load_models_with_lora_merges_the_adapters(repo, adapted):
    path, unmerged = adapted
    files = resolve_model_files(str(repo), lora=str(path))
    assert files.lora is not None and files.lora.path == path and files.lora.rank is None
    lm = load_models(files, device="cpu").lm
    assert not lora_layers(lm)
    _same_outputs(lm, unmerged)
    base = load_models(resolve_model_files(str(repo)), device="cpu").lm
    with torch.no_grad():
        assert (base(_codes()).audio_logits - lm(_codes()).audio_logits).abs().max() > 1e-2


def _with_config(repo, tmp_path, adapters, **lora):
    folder = shutil.copytree(repo, tmp_path / "model")
    if adapters is not None:
        shutil.copy(adapters, folder / "adapters.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **lora}))
    return folder


def test_config_json_lora_true_loads_the_named_adapters(repo, adapted, tmp_path):
    path, unmerged = adapted
    folder = _with_config(repo, tmp_path, path, lora=True, lora_name="adapters.safetensors", lora_rank=RANK,
                          lora_scaling=SCALING)
    files = resolve_model_files(str(folder))
    assert files.lora.path == folder / "adapters.safetensors" and (files.lora.rank, files.lora.scaling) == \
        (RANK, SCALING)
    _same_outputs(load_models(files, device="cpu").lm, unmerged)


@pytest.mark.parametrize("lora, error, match", [
    ({"lora": True}, ModelFilesError, "names no adapter file .*pass --lora FILE"),
    ({"lora": True, "lora_name": "gone.safetensors"}, ModelFilesError, "gone.safetensors .*does not exist"),
    ({"lora": "yes", "lora_name": "adapters.safetensors"}, ValueError, "lora='yes'"),
    ({"lora": True, "lora_name": "adapters.safetensors", "lora_rank": 0}, ValueError, "lora_rank=0"),
    ({"lora": True, "lora_name": "adapters.safetensors", "lora_rank": 8}, LoraError, "wrong LoRA rank"),
    ({"lora": True, "lora_name": "adapters.safetensors", "lora_scaling": 3}, LoraError, "conflicting LoRA scaling"),
])
def test_config_json_lora_errors(repo, adapted, tmp_path, lora, error, match):
    folder = _with_config(repo, tmp_path, adapted[0], **lora)
    with pytest.raises(error, match=match):
        load_models(resolve_model_files(str(folder)), device="cpu")


def test_missing_lora_file_is_named(repo, tmp_path):
    with pytest.raises(ModelFilesError, match="LoRA adapter file not found: .*nope.safetensors .*--lora"):
        resolve_model_files(str(repo), lora=str(tmp_path / "nope.safetensors"))
    assert resolve_model_files(str(repo), roles=("mimi",), lora=str(tmp_path / "nope")).lora is None
    with pytest.raises(ModelFilesError, match="not found: .*lora.safetensors"):  # a folder without adapters
        resolve_model_files(str(repo), lora=str(tmp_path))


def test_lora_folder_means_its_lora_safetensors(repo, adapted):
    path, _ = adapted  # saved as <folder>/lora.safetensors
    assert resolve_model_files(str(repo), lora=str(path.parent)).lora.path == path


def test_generation_runs_through_unmerged_adapters(repo, adapted):
    path, unmerged = adapted
    models = load_models(resolve_model_files(str(repo), lora=str(path)), device="cpu")
    user = torch.randint(0, CFG.card, (12, 2, CFG.num_user_codebooks), generator=torch.Generator().manual_seed(3))
    outs = []
    for lm in (unmerged, models.lm):
        with LMGenerator(lm, 2, text_sampling=GREEDY, audio_sampling=GREEDY, seed=0) as gen:
            outs.append([o if o is None else torch.cat([o.text[:, None], o.audio], 1)
                         for o in (gen.step(user[t]) for t in range(12))])
    assert sum(o is not None for o in outs[0]) >= 10
    for a, b in zip(*outs, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    pcm = 0.1 * torch.randn(6, 1, 1, models.mimi.frame_size, generator=torch.Generator().manual_seed(1))
    texts = []
    for lm in (unmerged, models.lm):
        with DuplexSession(models.mimi, lm, 1, text_sampling=GREEDY, audio_sampling=GREEDY, seed=0) as session:
            texts.append([session.step(pcm[t]).text.clone() for t in range(6)])
    assert all(torch.equal(a, b) for a, b in zip(*texts, strict=True))


def test_chat_with_lora_matches_kyutai_loader(repo, adapted, tmp_path):
    path, _ = adapted
    tokens = run_chat(repo, tmp_path, "--greedy", "--lora", str(path))
    kwargs = {**kyutai_kwargs(CFG), "lora": True, "lora_rank": RANK, "lora_scaling": SCALING}
    ref = get_moshi_lm(str(repo / "model.safetensors"), lm_kwargs=kwargs, device="cpu", dtype=torch.float32,
                       lora_weights=str(path), fuse_lora=True)
    gen = LMGen(ref, use_sampling=False)
    user = tokens["user_codes"]
    T = user.shape[1]
    text, audio = np.full(T, -2), np.full((CFG.dep_q, T), -2)
    with gen.streaming(1), torch.no_grad():
        for t in range(T):
            out = gen.step(torch.from_numpy(user[:, t]).view(1, -1, 1))
            if out is not None:
                text[t], audio[:, t] = out[0, 0, 0].item(), out[0, 1:, 0].numpy()
    assert np.array_equal(tokens["text"], text) and np.array_equal(tokens["audio"], audio)
    base = run_chat(repo, tmp_path, "--greedy")
    assert not np.array_equal(base["audio"], tokens["audio"])  # the adapters made a difference


def test_chat_reports_bad_lora_files(repo, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    user = write_user(tmp_path / "in.wav")
    for path, message in ((tmp_path / "nope.safetensors", "LoRA adapter file not found"),
                          (bad, "not a safetensors file")):
        code = cli.main(["chat", "--model", str(repo), "--input", str(user), "--lora", str(path),
                         "--output", str(tmp_path / "o.wav"), "--no-progress"])
        err = capsys.readouterr().err
        assert code != 0 and message in err and "Traceback" not in err, err


def test_bfloat16_load_merges_close_to_float32(repo, adapted):
    path, unmerged = adapted
    lm = load_models(resolve_model_files(str(repo), lora=str(path)), device="cpu", dtype="bfloat16").lm
    assert lm.dtype == torch.bfloat16 and not lora_layers(lm)
    codes = _codes()
    with torch.no_grad():
        x, y = lm(codes).audio_logits.float(), unmerged(codes).audio_logits
    assert (x - y).abs().max() < 0.1 * y.abs().max()  # bf16 weights: a few % of the logits' scale
