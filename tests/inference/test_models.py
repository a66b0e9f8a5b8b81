"""Model resolution: local folders and hub repos in Kyutai's layout, overrides, clear messages, loading."""

import json
import os
import subprocess
import sys

import pytest
import torch
from runtime_testutils import build_tiny_repo, single_thread  # noqa: F401

from openmoshi import hub
from openmoshi.inference import models as models_mod
from openmoshi.inference.models import (
    ModelFilesError,
    is_repo_id,
    load_models,
    resolve_device,
    resolve_dtype,
    resolve_model_files,
)
from openmoshi.lm.config import DEFAULT_MIMI_NAME, DEFAULT_MOSHI_NAME, DEFAULT_TOKENIZER_NAME, LMConfig

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("tiny_repo"), seed=2)


def test_local_folder(repo):
    files = resolve_model_files(str(repo))
    assert files.moshi == repo / DEFAULT_MOSHI_NAME and files.mimi == repo / DEFAULT_MIMI_NAME
    assert files.tokenizer == repo / DEFAULT_TOKENIZER_NAME and files.config_path == repo / "config.json"
    assert files.repo_config.lm.dim == 64 and files.repo_config.lm.text_card == 320
    assert files.mimi_overrides["preset"] == "tiny"


def test_config_json_renames_files(tmp_path):
    names = {"moshi_name": "lm.safetensors", "mimi_name": "codec.safetensors", "tokenizer_name": "spm.model"}
    folder = build_tiny_repo(tmp_path / "renamed", names=names)
    files = resolve_model_files(str(folder))
    assert (files.moshi.name, files.mimi.name, files.tokenizer.name) == tuple(names.values())
    loaded = load_models(files, "cpu")
    assert loaded.lm.cfg == files.repo_config.lm


def test_missing_files_are_listed_with_where_to_put_them(tmp_path):
    (tmp_path / DEFAULT_MOSHI_NAME).write_bytes(b"")
    with pytest.raises(ModelFilesError) as err:
        resolve_model_files(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / DEFAULT_MIMI_NAME) in msg and str(tmp_path / DEFAULT_TOKENIZER_NAME) in msg
    assert str(tmp_path / DEFAULT_MOSHI_NAME) not in msg  # present: not reported
    assert "Mimi codec" in msg and "text tokenizer" in msg and f"Put these files in {tmp_path}" in msg


def test_folder_without_config_is_moshiko(tmp_path):
    for name in (DEFAULT_MOSHI_NAME, DEFAULT_MIMI_NAME, DEFAULT_TOKENIZER_NAME):
        (tmp_path / name).write_bytes(b"")
    files = resolve_model_files(str(tmp_path))
    assert files.config_path is None and files.repo_config.lm == LMConfig.moshiko_7b() and files.mimi_overrides == {}


def test_explicit_files_override(repo, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes((repo / DEFAULT_MOSHI_NAME).read_bytes())
    files = resolve_model_files(str(repo), moshi_weight=str(other))
    assert files.moshi == other and files.mimi == repo / DEFAULT_MIMI_NAME
    with pytest.raises(ModelFilesError, match="model config not found"):
        resolve_model_files(str(repo), config=str(tmp_path / "nope.json"))


def test_bad_config_is_refused_naming_the_problem(tmp_path, repo):
    folder = tmp_path / "bad"
    folder.mkdir()
    for p in repo.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((repo / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "norm": "layer_norm"}))
    with pytest.raises(ValueError, match="norm='layer_norm'"):
        resolve_model_files(str(folder))
    (folder / "config.json").write_text(json.dumps({**cfg, "mimi": {"preset": "huge"}}))
    with pytest.raises(ValueError, match="unknown Mimi preset 'huge'"):
        load_models(resolve_model_files(str(folder)))


def test_names_that_are_neither_folder_nor_repo(tmp_path):
    assert is_repo_id("kyutai/moshiko-pytorch-bf16") and not is_repo_id("a/b/c") and not is_repo_id("plain")
    with pytest.raises(ModelFilesError, match="neither an existing folder nor a Hugging Face repo id"):
        resolve_model_files(str(tmp_path / "does" / "not" / "exist"))


def test_load_models_dtypes(repo):
    files = resolve_model_files(str(repo))
    loaded = load_models(files, "cpu")
    assert loaded.dtype == torch.float32 and loaded.lm.dtype == torch.float32 and loaded.mimi.frame_size == 32
    assert loaded.tokenizer.vocab_size == 320 and not loaded.lm.training and not loaded.mimi.training
    half = load_models(files, "cpu", "bfloat16")
    assert half.lm.dtype == torch.bfloat16
    assert next(half.mimi.parameters()).dtype == torch.float32  # Mimi stays float32
    # the loaded weights are the file's (the same in both loads, up to the bf16 cast)
    a, b = loaded.lm.text_linear.weight, half.lm.text_linear.weight
    torch.testing.assert_close(a.to(torch.bfloat16), b)


def test_device_and_dtype_resolution():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_hub_repo_uses_hf_hub_download(repo, monkeypatch):
    """A repo id goes through hf_hub_download; a repo without config.json is moshiko with default names."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False):
        calls.append((repo_id, filename, revision, local_files_only))
        if filename == "config.json":
            raise EntryNotFoundError("no config.json")
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    files = resolve_model_files("someone/tiny", revision="main")
    assert [c[1] for c in calls] == ["config.json", DEFAULT_MOSHI_NAME, DEFAULT_MIMI_NAME, DEFAULT_TOKENIZER_NAME]
    assert all(c[0] == "someone/tiny" and c[2] == "main" and not c[3] for c in calls)
    assert files.repo_config.lm == LMConfig.moshiko_7b() and files.mimi == repo / DEFAULT_MIMI_NAME


def test_hub_file_missing_from_repo(monkeypatch, repo):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    def fake_download(repo_id, filename, revision=None, **kw):
        if filename in ("config.json", DEFAULT_TOKENIZER_NAME):
            raise EntryNotFoundError(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    with pytest.raises(ModelFilesError) as err:
        resolve_model_files("someone/tiny")
    msg = str(err.value)
    assert f"{DEFAULT_TOKENIZER_NAME} from https://huggingface.co/someone/tiny: not in the repo" in msg
    assert DEFAULT_MOSHI_NAME not in msg.split("\n")[1]


def test_unreachable_hub_uses_the_cache_alone(monkeypatch, repo):
    """No network: files come from the cache (local_files_only), without the client's retries."""
    import huggingface_hub

    seen = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False):
        seen.append(local_files_only)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: "cannot reach huggingface.co (test)")
    files = resolve_model_files("someone/tiny")
    assert seen == [True] * 4 and files.mimi == repo / DEFAULT_MIMI_NAME


def test_offline_message_names_files_and_remedy(tmp_path):
    """HF_HUB_OFFLINE=1 with an empty cache: the message lists every file and how to provide it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "NO_TORCH_COMPILE": "1"}
    code = "from openmoshi.inference.models import resolve_model_files as r; r(\"kyutai/moshiko-pytorch-bf16\")"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert "ModelFilesError" in err and "kyutai/moshiko-pytorch-bf16" in err
    for name in (DEFAULT_MOSHI_NAME, DEFAULT_MIMI_NAME, DEFAULT_TOKENIZER_NAME):
        assert f"{name} from https://huggingface.co/kyutai/moshiko-pytorch-bf16: not in the local cache, and " \
               "HF_HUB_OFFLINE is set" in err
    assert "unset HF_HUB_OFFLINE" in err and "--model FOLDER" in err


def test_model_flags(repo):
    import argparse

    parser = argparse.ArgumentParser()
    models_mod.add_model_arguments(parser)
    args = parser.parse_args(["--hf-repo", str(repo), "--dtype", "bf16", "--device", "cpu"])
    assert args.model == str(repo) and args.dtype == "bf16"
    loaded = models_mod.models_from_args(args)
    assert loaded.lm.dtype == torch.bfloat16 and loaded.device == torch.device("cpu")
