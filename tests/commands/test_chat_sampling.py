"""`openmoshi chat`'s sampling settings reach the sampler: flags over the model's lm_gen_config over defaults.

The tokens `--save-tokens` records are compared draw for draw with the reference LMGen sampling with the
settings each rule should pick: with the reference's noise substituted for ours (tests/inference/reference_noise.py)
our sampler and Kyutai's draw the same tokens (see tests/inference/test_sampling_settings.py), so a setting lost
or taken from the wrong place changes tokens. Each test also checks that the settings it rules out give other tokens.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # shared runtime test helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_testutils import make_reference  # noqa: E402
from moshi.models.lm import LMGen  # noqa: E402
from reference_noise import reference_noise  # noqa: E402
from runtime_testutils import build_tiny_repo, single_thread, tiny_lm_config  # noqa: E402, F401

from openmoshi import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
CFG = tiny_lm_config()
GEN_CONFIG = {"temp": 1.3, "top_k": 7, "temp_text": 0.6, "top_k_text": 3}
RUN_SEED = 17
SEED = 4  # the tiny model's weights


def run_chat(repo_dir: Path, tmp_path: Path, *flags: str) -> dict[str, np.ndarray]:
    """`openmoshi chat` over 21 ms of noise (18 generator steps): the --save-tokens arrays."""
    import soundfile as sf

    user, tokens = tmp_path / "user.wav", tmp_path / "tokens.npz"
    sf.write(str(user), (0.3 * np.random.default_rng(0).standard_normal(504)).astype(np.float32), 24000)
    argv = ["chat", "--model", str(repo_dir), "--input", str(user), "--output", str(tmp_path / "out.wav"),
            "--no-progress", "--save-tokens", str(tokens), *flags]
    assert cli.main(argv) == 0
    return dict(np.load(tokens))


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """The same tiny model twice: without lm_gen_config, and with GEN_CONFIG in its config.json."""
    plain = build_tiny_repo(tmp_path_factory.mktemp("plain"), seed=SEED, lm_cfg=CFG)
    configured = build_tiny_repo(tmp_path_factory.mktemp("configured"), seed=SEED, lm_cfg=CFG)
    config = json.loads((configured / "config.json").read_text())
    (configured / "config.json").write_text(json.dumps({**config, "lm_gen_config": GEN_CONFIG}))
    return plain, configured


def reference_sampled(user_codes: np.ndarray, temp_text, top_k_text, temp, top_k) -> np.ndarray:
    """The reference LMGen's outputs [1 + dep_q, T] (-2: none) sampling with these settings, seeded like chat."""
    gen = LMGen(make_reference(CFG, seed=SEED), use_sampling=True, temp=temp, top_k=top_k, temp_text=temp_text,
                top_k_text=top_k_text)
    out = np.full((1 + CFG.dep_q, user_codes.shape[1]), -2, dtype=np.int64)
    torch.manual_seed(RUN_SEED)
    with gen.streaming(1), torch.no_grad():
        for t in range(user_codes.shape[1]):
            o = gen.step(torch.from_numpy(user_codes[:, t]).view(1, -1, 1))
            if o is not None:
                out[:, t] = o[0, :, 0].numpy()
    return out


def chat_tokens(repo_dir, tmp_path, *flags) -> tuple[np.ndarray, np.ndarray]:
    """(user codes [n_user, T], outputs [1 + dep_q, T]) of one `openmoshi chat` run over a short recording."""
    with reference_noise(RUN_SEED):
        tokens = run_chat(repo_dir, tmp_path, "--seed", str(RUN_SEED), *flags)
    return tokens["user_codes"], np.concatenate([tokens["text"][None], tokens["audio"]])


def test_model_lm_gen_config_reaches_the_sampler(repos, tmp_path):
    user, got = chat_tokens(repos[1], tmp_path)
    assert np.array_equal(got, reference_sampled(user, 0.6, 3, 1.3, 7))
    assert not np.array_equal(got, reference_sampled(user, 0.7, 25, 0.8, 0))  # not the defaults


def test_flags_override_the_model_lm_gen_config(repos, tmp_path):
    user, got = chat_tokens(repos[1], tmp_path, "--top-k", "5", "--temp-text", "0.9")
    assert np.array_equal(got, reference_sampled(user, 0.9, 3, 1.3, 5))  # the rest from lm_gen_config
    assert not np.array_equal(got, reference_sampled(user, 0.6, 3, 1.3, 7))


def test_without_config_or_flags_kyutai_defaults(repos, tmp_path):
    user, got = chat_tokens(repos[0], tmp_path)
    # Defaults: text 0.7 / top-k 25, audio 0.8 / top-k 250; 250 >= the tiny card (64) keeps every id, which is
    # the reference's top-k 0.
    assert np.array_equal(got, reference_sampled(user, 0.7, 25, 0.8, 0))
    assert not np.array_equal(got, reference_sampled(user, 0.7, 25, 0.8, 7))


def test_flags_without_config_and_greedy_over_everything(repos, tmp_path):
    user, got = chat_tokens(repos[0], tmp_path, "--temp", "1.1", "--top-k-text", "4")
    assert np.array_equal(got, reference_sampled(user, 0.7, 4, 1.1, 0))
    folder = tmp_path / "greedy"
    folder.mkdir()
    user, got = chat_tokens(repos[1], folder, "--greedy", "--temp", "1.1")
    assert np.array_equal(got, reference_sampled(user, 0.0, 3, 0.0, 7))  # temperature 0: argmax
