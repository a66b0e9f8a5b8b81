"""What docs/runtime.md promises of `openmoshi chat`'s options, each checked by a value.

- without --seed a seed is drawn and printed, and --seed with that number replays the conversation;
- the progress bar shows the real-time factor (rtf);
- --text-json / --text-srt write the monologue where asked (the same files as beside --output);
- --mimi-weight / --tokenizer replace single files of the --model folder (the conversation does not change).
"""

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # shared runtime test helpers
from runtime_testutils import build_tiny_repo, single_thread  # noqa: E402, F401

from openmoshi import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
MIMI = "tokenizer-e351c8d8-checkpoint125.safetensors"
SPM = "tokenizer_spm_32k_3.model"


def chat(repo_dir: Path, folder: Path, *flags: str) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    user = folder / "user.wav"
    sf.write(str(user), (0.3 * np.random.default_rng(0).standard_normal(640)).astype(np.float32), 24000)
    argv = ["chat", "--model", str(repo_dir), "--input", str(user), "--output", str(folder / "out.wav"),
            "--save-tokens", str(folder / "tokens.npz"), *flags]
    assert cli.main(argv) == 0
    return dict(np.load(folder / "tokens.npz"))


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in ("user_codes", "text", "audio"))


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("repo"), seed=2)


def test_a_random_seed_is_drawn_printed_and_replays(repo_dir, tmp_path, capsys):
    first = chat(repo_dir, tmp_path / "a")
    err = capsys.readouterr().err
    seed = re.search(r"sampling seed (\d+) \(--seed \1 reproduces", err)
    assert seed, err
    second = chat(repo_dir, tmp_path / "b")
    assert not same(first, second)  # another random seed: another conversation
    assert int(re.search(r"sampling seed (\d+)", capsys.readouterr().err).group(1)) != int(seed.group(1))
    assert same(chat(repo_dir, tmp_path / "c", "--seed", seed.group(1), "--no-progress"), first)
    assert (tmp_path / "c" / "out.json").read_text() == (tmp_path / "a" / "out.json").read_text()


def test_progress_bar_shows_the_real_time_factor(repo_dir, tmp_path, capsys):
    chat(repo_dir, tmp_path, "--seed", "1")
    err = capsys.readouterr().err
    assert re.search(r"chat: 100%.*\d+/\d+ .*rtf=\d+\.\d\d", err), err
    chat(repo_dir, tmp_path / "quiet", "--seed", "1", "--no-progress")
    assert "rtf=" not in capsys.readouterr().err


def test_text_files_and_single_file_overrides(repo_dir, tmp_path):
    plain = chat(repo_dir, tmp_path / "plain", "--seed", "3", "--no-progress", "--greedy")
    # A model folder without Mimi and the tokenizer: they come from --mimi-weight and --tokenizer.
    partial = tmp_path / "partial"
    shutil.copytree(repo_dir, partial)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (partial / MIMI).rename(elsewhere / "mimi.safetensors")
    (partial / SPM).rename(elsewhere / "spm.model")
    json_path, srt_path = tmp_path / "words" / "w.json", tmp_path / "words" / "w.srt"
    json_path.parent.mkdir()
    got = chat(partial, tmp_path / "over", "--seed", "3", "--no-progress", "--greedy",
               "--mimi-weight", str(elsewhere / "mimi.safetensors"), "--tokenizer", str(elsewhere / "spm.model"),
               "--text-json", str(json_path), "--text-srt", str(srt_path))
    assert same(got, plain)
    assert json_path.read_text() == (tmp_path / "plain" / "out.json").read_text()
    assert srt_path.read_text() == (tmp_path / "plain" / "out.srt").read_text()
    assert '"alignments"' in json_path.read_text()
    # and without them the folder is incomplete: the error names the missing files
    assert cli.main(["chat", "--model", str(partial), "--input", str(tmp_path / "plain" / "user.wav"),
                     "--output", str(tmp_path / "x.wav")]) == 1
