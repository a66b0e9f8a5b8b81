"""Finding and loading a Moshi model: a local folder or a Hugging Face repo in the layout of Kyutai's repos.

A model is three files plus an optional `config.json` (Kyutai's layout, parsed by `parse_kyutai_config`):
- `model.safetensors`: the language model;
- `tokenizer-e351c8d8-checkpoint125.safetensors`: Mimi;
- `tokenizer_spm_32k_3.model`: the SentencePiece text tokenizer.
`config.json` may rename them (`moshi_name`, `mimi_name`, `tokenizer_name`); without it the LM is moshiko 7B.
Each file can also be given directly (`--moshi-weight`, `--mimi-weight`, `--tokenizer`, `--config`), as in
Kyutai's tools. Repos are fetched with `huggingface_hub.hf_hub_download` (its cache, `HF_HUB_OFFLINE`, tokens);
a file that cannot be found, offline or not, raises `ModelFilesError` saying what is missing and where to put it.

Our extension to config.json: an optional `"mimi"` object of `MimiConfig` overrides (a smaller codec, for
tests); Kyutai's repos never have it and get the released Mimi.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..hub import hub_unreachable as _hub_unreachable
from ..lm.config import DEFAULT_REPO, KyutaiRepoConfig, parse_kyutai_config

if TYPE_CHECKING:  # the heavy modules are imported when models are loaded, not when flags are parsed
    from ..codec.mimi import Mimi, MimiConfig
    from ..lm.model import LMModel
    from ..lm.text import TextTokenizer

CONFIG_NAME = "config.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


class ModelFilesError(FileNotFoundError):
    """A model's files cannot be found; the message lists what is missing and where to put it."""


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are, once found (local paths), and what its config.json says."""

    source: str  # the folder or repo id the files came from
    moshi: Path
    mimi: Path
    tokenizer: Path
    repo_config: KyutaiRepoConfig
    mimi_overrides: dict[str, Any]
    config_path: Path | None = None


def is_repo_id(name: str) -> bool:
    """'owner/name' that is not an existing local path."""
    return bool(_REPO_ID.match(name)) and not Path(name).expanduser().exists()


def _read_config(path: Path) -> tuple[KyutaiRepoConfig, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read model config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"model config {path} must hold a JSON object")
    mimi = raw.pop("mimi", None) or {}
    if not isinstance(mimi, dict):
        raise ValueError(f"model config {path}: 'mimi' must be an object of MimiConfig fields")
    try:
        return parse_kyutai_config(raw), mimi
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _missing_message(source: str, missing: list[tuple[str, str]], hint: str) -> str:
    lines = [f"model files missing for {source}:"]
    lines += [f"  - {what}: {where}" for what, where in missing]
    lines.append(hint)
    return "\n".join(lines)


def _resolve_folder(folder: Path, explicit: dict[str, str | None]) -> ModelFiles:
    if not folder.is_dir():
        raise ModelFilesError(f"model folder not found: {folder}")
    config_path = Path(explicit["config"]) if explicit["config"] else folder / CONFIG_NAME
    if explicit["config"] and not config_path.is_file():
        raise ModelFilesError(f"model config not found: {config_path}")
    repo_cfg, mimi = _read_config(config_path) if config_path.is_file() else (parse_kyutai_config(None), {})
    paths: dict[str, Path] = {}
    missing: list[tuple[str, str]] = []
    for key, what, name in _file_roles(repo_cfg):
        path = Path(explicit[key]) if explicit[key] else folder / name
        paths[key] = path
        if not path.is_file():
            missing.append((what, str(path)))
    if missing:
        hint = (f"Put these files in {folder} (names as in Kyutai's repos, or as config.json's moshi_name / "
                f"mimi_name / tokenizer_name say), or pass --model {DEFAULT_REPO} to fetch them from the hub.")
        raise ModelFilesError(_missing_message(str(folder), missing, hint))
    return ModelFiles(str(folder), paths["moshi"], paths["mimi"], paths["tokenizer"], repo_cfg, mimi,
                      config_path if config_path.is_file() else None)


def _file_roles(cfg: KyutaiRepoConfig) -> list[tuple[str, str, str]]:
    return [("moshi", "language model", cfg.moshi_name), ("mimi", "Mimi codec", cfg.mimi_name),
            ("tokenizer", "text tokenizer", cfg.tokenizer_name)]


def _hub_fetch(repo: str, filename: str, revision: str | None, offline: str | None) -> tuple[Path | None, str | None]:
    """(local path, None) or (None, why it is unavailable) for one file of a hub repo; `offline`: why the hub
    cannot be reached (then only the local cache is looked at)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline is not None)), None
    except LocalEntryNotFoundError:
        return None, f"not in the local cache, and {offline or 'the hub is unreachable'}"
    except EntryNotFoundError:
        return None, "not in the repo"
    except RepositoryNotFoundError:
        raise ModelFilesError(
            f"Hugging Face repo not found (or private/gated without a token): {repo}. Check the name, run "
            f"`hf auth login` for a private repo, or pass --model with a local folder."
        ) from None
    except OSError as err:  # network errors past the hub's own offline handling
        return None, f"download failed ({type(err).__name__}: {err})"


def _resolve_repo(repo: str, explicit: dict[str, str | None], revision: str | None) -> ModelFiles:
    config_path: Path | None = None
    config_problem: str | None = None
    offline = _hub_unreachable()
    if explicit["config"]:
        config_path = Path(explicit["config"])
        if not config_path.is_file():
            raise ModelFilesError(f"model config not found: {config_path}")
    else:
        config_path, config_problem = _hub_fetch(repo, CONFIG_NAME, revision, offline)
    repo_cfg, mimi = _read_config(config_path) if config_path else (parse_kyutai_config(None), {})
    paths: dict[str, Path] = {}
    missing: list[tuple[str, str]] = []
    for key, what, name in _file_roles(repo_cfg):
        if explicit[key]:
            path = Path(explicit[key])
            if not path.is_file():
                missing.append((what, f"{path} (given on the command line) does not exist"))
            paths[key] = path
            continue
        path, problem = _hub_fetch(repo, name, revision, offline)
        if path is None:
            missing.append((what, f"{name} from https://huggingface.co/{repo}: {problem}"))
        else:
            paths[key] = path
    if missing:
        if config_problem and config_problem != "not in the repo":
            missing.append(("config.json (optional)", f"{CONFIG_NAME}: {config_problem}"))
        names = " ".join(name for _, _, name in _file_roles(repo_cfg))
        hint = (f"Connect to the internet (and unset HF_HUB_OFFLINE) to download them, or fetch them elsewhere with "
                f"`hf download {repo} {names} --local-dir FOLDER` (`huggingface-cli download` with older "
                f"huggingface_hub), copy FOLDER here and pass --model FOLDER.")
        raise ModelFilesError(_missing_message(repo, missing, hint))
    return ModelFiles(repo, paths["moshi"], paths["mimi"], paths["tokenizer"], repo_cfg, mimi, config_path)


def resolve_model_files(
    model: str | None = None,
    *,
    moshi_weight: str | None = None,
    mimi_weight: str | None = None,
    tokenizer: str | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> ModelFiles:
    """Find a model's files: `model` is a local folder or a hub repo id (None: Kyutai's moshiko).

    Explicit file paths replace the folder's or repo's files one by one (they are not downloaded).
    """
    explicit = {"moshi": moshi_weight, "mimi": mimi_weight, "tokenizer": tokenizer, "config": config}
    name = model or DEFAULT_REPO
    local = Path(name).expanduser()
    if local.exists():
        return _resolve_folder(local, explicit)
    if is_repo_id(name):
        return _resolve_repo(name, explicit, revision)
    raise ModelFilesError(f"--model {name!r} is neither an existing folder nor a Hugging Face repo id (owner/name)")


def resolve_device(name: str | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps'; None: cuda when available, else cpu."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available (use --device cpu)")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """float32 by default on CPU (bf16 matmuls are slow there), bfloat16 on accelerators."""
    if name is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-selection flags shared by the runtime commands."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", "--hf-repo", dest="model", default=None, metavar="FOLDER_OR_REPO",
                   help=f"a local folder or a Hugging Face repo id in Kyutai's layout (default {DEFAULT_REPO})")
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    g.add_argument("--moshi-weight", default=None, metavar="FILE", help="language model safetensors, overrides")
    g.add_argument("--mimi-weight", default=None, metavar="FILE", help="Mimi safetensors, overrides")
    g.add_argument("--tokenizer", default=None, metavar="FILE", help="SentencePiece model, overrides")
    g.add_argument("--config", "--lm-config", dest="config", default=None, metavar="FILE",
                   help="config.json in Kyutai's layout, overrides the model's")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    g.add_argument("--dtype", default=None, choices=sorted(_DTYPES),
                   help="weights dtype (default float32 on CPU, bfloat16 on GPU)")


def files_from_args(args: argparse.Namespace) -> ModelFiles:
    return resolve_model_files(args.model, moshi_weight=args.moshi_weight, mimi_weight=args.mimi_weight,
                               tokenizer=args.tokenizer, config=args.config, revision=args.revision)


@dataclass
class LoadedModels:
    """A model ready to run: Mimi (float32), the LM (in `dtype`) and the tokenizer, on `device`."""

    files: ModelFiles
    mimi: Mimi
    lm: LMModel
    tokenizer: TextTokenizer
    device: torch.device
    dtype: torch.dtype


def mimi_config(overrides: dict[str, Any]) -> MimiConfig:
    """The released Mimi, or the config.json `"mimi"` overrides: {"preset": "tiny", "seanet": {...}, ...}."""
    from ..codec.mimi import MimiConfig

    values = dict(overrides)
    preset = values.pop("preset", "mimi")
    if preset not in ("mimi", "tiny"):
        raise ValueError(f"unknown Mimi preset {preset!r} (known: mimi, tiny)")
    base = getattr(MimiConfig, preset)()
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if not hasattr(base, key):
            raise ValueError(f"unknown Mimi config key {key!r}")
        current = getattr(base, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = dataclasses.replace(current, **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in value.items()})
        changes[key] = value
    return dataclasses.replace(base, **changes)


def load_models(files: ModelFiles, device: str | torch.device | None = None, dtype: str | None = None
                ) -> LoadedModels:
    """Build and load the three parts. Mimi stays float32 (small, and its output is what users hear)."""
    from ..codec.checkpoint import load_safetensors
    from ..codec.mimi import Mimi
    from ..lm.checkpoint import load_lm
    from ..lm.text import TextTokenizer
    from ..nn.prepare import prepare_for_inference

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    lm_cfg = files.repo_config.lm
    mimi = Mimi(mimi_config(files.mimi_overrides))
    load_safetensors(mimi, files.mimi)
    mimi = prepare_for_inference(mimi.to(dev).eval())
    lm = load_lm(files.moshi, lm_cfg, device=dev, dtype=dt)
    tokenizer = TextTokenizer(files.tokenizer, text_card=lm_cfg.text_card)
    return LoadedModels(files, mimi, lm, tokenizer, dev, dt)


def models_from_args(args: argparse.Namespace) -> LoadedModels:
    return load_models(files_from_args(args), args.device, args.dtype)
