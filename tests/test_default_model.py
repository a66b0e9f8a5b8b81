"""The bundled model (openmoshi/default_model.py): the folder as shipped, the default resolution with a stand-in,
the message of a checkout without weights, and the packaging of the assets."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from openmoshi import default_model
from openmoshi.lm.config import DEFAULT_MIMI_NAME, DEFAULT_MOSHI_NAME, DEFAULT_REPO, DEFAULT_TOKENIZER_NAME
from openmoshi.model_files import ModelFilesError, resolve_model_files

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "openmoshi" / "assets" / "nanomoshi"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A tiny model with real 80 ms frames at 24 kHz, in Kyutai's layout (what the export stage writes)."""
    from openmoshi.testing.server_model import build_server_repo

    return build_server_repo(tmp_path_factory.mktemp("nanomoshi"), seed=3)


def test_the_shipped_folder_is_complete_and_small_or_holds_only_its_readme() -> None:
    """With weights: at most 50 MB and it loads. Without: only the README (no half-shipped model)."""
    assert default_model.bundled_model_dir() == SHIPPED
    assert (SHIPPED / "README.md").is_file()
    if default_model.has_bundled_model():
        assert default_model.folder_bytes() <= default_model.MAX_BYTES == 50 * 10**6
        from openmoshi.inference.models import load_models

        files = resolve_model_files()
        assert files.source == str(SHIPPED)
        models = load_models(files, "cpu")
        assert models.mimi.sample_rate == 24_000 and models.mimi.frame_size == 1920  # the wire protocol's frames
    else:
        assert default_model.missing_files() == list(default_model.EXPECTED_FILES)
        assert sorted(p.name for p in SHIPPED.iterdir()) == ["README.md"]


def test_the_readme_names_the_files_the_export_writes() -> None:
    text = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert default_model.EXPECTED_FILES == ("config.json", DEFAULT_MOSHI_NAME, DEFAULT_MIMI_NAME,
                                            DEFAULT_TOKENIZER_NAME)
    assert all(f"`{name}`" in text for name in default_model.EXPECTED_FILES)


def test_no_model_resolves_to_the_bundled_folder(stand_in, monkeypatch) -> None:
    from openmoshi.inference.models import load_models

    monkeypatch.setattr(default_model, "_BUNDLED", stand_in)
    assert default_model.has_bundled_model() and default_model.missing_files() == []
    assert default_model.folder_bytes() <= default_model.MAX_BYTES
    files = resolve_model_files()
    assert files.source == str(stand_in) and files.moshi == stand_in / DEFAULT_MOSHI_NAME
    models = load_models(files, "cpu")
    assert models.mimi.frame_size == 1920
    # one file given, the others from the bundled folder; `default` (the Kyutai tools) and a model still win
    one = resolve_model_files(tokenizer=str(stand_in / DEFAULT_TOKENIZER_NAME), roles=("moshi", "tokenizer"))
    assert one.source == str(stand_in)
    other = shutil.copytree(stand_in, stand_in.parent / "other")
    assert resolve_model_files(default=str(other)).source == str(other)
    assert resolve_model_files(str(other)).source == str(other)


@pytest.mark.parametrize("present", [[], ["config.json", DEFAULT_MOSHI_NAME]])
def test_a_checkout_without_weights_names_both_ways_out(stand_in, tmp_path, monkeypatch, present) -> None:
    empty = tmp_path / "nanomoshi"
    empty.mkdir()
    (empty / "README.md").write_text("what goes here\n")
    for name in present:
        shutil.copyfile(stand_in / name, empty / name)
    monkeypatch.setattr(default_model, "_BUNDLED", empty)
    assert not default_model.has_bundled_model()
    with pytest.raises(ModelFilesError) as exc:
        resolve_model_files()
    message = str(exc.value)
    assert "scripts/train_nanomoshi.sh" in message and f"--model {DEFAULT_REPO}" in message
    assert str(empty) in message
    for name in default_model.EXPECTED_FILES:
        assert (name in message.split("lacks", 1)[1].split("(")[0]) == (name not in present), name
    # a command's own flag name is used
    with pytest.raises(ModelFilesError, match="--hf-repo kyutai/"):
        resolve_model_files(flags={"model": "--hf-repo"})
    # the Kyutai tools' default is not the bundled model: no such message
    with pytest.raises(ModelFilesError) as exc:
        resolve_model_files(default=str(tmp_path / "nowhere"))
    assert "bundled" not in str(exc.value)


def test_config_names_other_files(stand_in, tmp_path, monkeypatch) -> None:
    """The files config.json names are the ones looked for."""
    import json

    folder = shutil.copytree(stand_in, tmp_path / "renamed")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["moshi_name"] = "lm.safetensors"
    (folder / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(default_model, "_BUNDLED", folder)
    assert default_model.missing_files() == ["lm.safetensors"]
    (folder / DEFAULT_MOSHI_NAME).rename(folder / "lm.safetensors")
    assert default_model.has_bundled_model()
    assert resolve_model_files().moshi == folder / "lm.safetensors"


def _package_data() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["openmoshi"]


def test_package_data_patterns_cover_the_assets() -> None:
    patterns = _package_data()
    wanted = [f"assets/nanomoshi/{name}" for name in (*default_model.EXPECTED_FILES, "README.md")]
    wanted += ["assets/question.wav", "assets/question.txt", "assets/example.wav"]
    for rel in wanted:  # setuptools globs: `*` stays within one folder
        assert any(fnmatch.fnmatch(rel, p) and p.count("/") == rel.count("/") for p in patterns), rel


def test_a_wheel_holds_the_bundled_model(tmp_path) -> None:
    """Build a wheel of a copy of the package with stand-in files in the model folder: they are in it."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(ROOT / "pyproject.toml", src / "pyproject.toml")
    shutil.copyfile(ROOT / "README.md", src / "README.md")
    shutil.copytree(ROOT / "openmoshi", src / "openmoshi", ignore=shutil.ignore_patterns("__pycache__"))
    folder = src / "openmoshi" / "assets" / "nanomoshi"
    for name in default_model.EXPECTED_FILES:
        (folder / name).write_text("stand-in\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("openmoshi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*default_model.EXPECTED_FILES, "README.md"):
        assert f"openmoshi/assets/nanomoshi/{name}" in names, name
    assert {"openmoshi/assets/question.wav", "openmoshi/assets/question.txt"} <= names


def test_the_bundled_question() -> None:
    import soundfile as sf

    path = default_model.bundled_question()
    info = sf.info(str(path))
    assert info.samplerate == 24_000 and info.channels == 1 and info.subtype == "PCM_16"
    assert path.stat().st_size < 300_000
    audio, _ = sf.read(str(path), dtype="float32")
    second = 24_000
    # silence before and after (so Moshi can answer), speech in between
    assert abs(audio[: second - 100]).max() < 1e-3 and abs(audio[-second + 100:]).max() < 1e-3
    assert abs(audio[second:-second]).max() > 0.1
    assert path.with_suffix(".txt").read_text().strip() == "Hi there. What is two plus three?"


def test_the_question_script_remakes_it(tmp_path) -> None:
    """scripts/make_demo_question.sh writes the same question (a flite user voice) into another folder."""
    import os

    import soundfile as sf

    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (scripts/test.sh installs it)")
    env = {**os.environ, "OPENMOSHI_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(ROOT / "scripts" / "make_demo_question.sh"), "flite:rms", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shipped = default_model.bundled_question()
    assert (tmp_path / "question.txt").read_text() == shipped.with_suffix(".txt").read_text()
    made, shipped_info = sf.info(str(tmp_path / "question.wav")), sf.info(str(shipped))
    assert (made.samplerate, made.channels, made.subtype) == (shipped_info.samplerate, 1, "PCM_16")
    assert abs(made.frames - shipped_info.frames) <= 0.05 * shipped_info.frames  # another flite may differ a bit
    refused = subprocess.run([str(ROOT / "scripts" / "make_demo_question.sh"), "festival:cmu_us_slt_arctic_hts",
                              str(tmp_path / "moshi")], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0 and "Moshi's voice" in refused.stderr
    assert not (tmp_path / "moshi").exists()
