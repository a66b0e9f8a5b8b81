"""Finding a model's files: a local folder or a Hugging Face repo in the layout of Kyutai's repos (one resolver).

Every command finds its files here (`chat` all three, `helium` the LM and the tokenizer, `codec demo` Mimi alone).
Without a model (`model=None`) the default is the bundled nanomoshi (`default_model.py`; ModelFilesError naming
both ways out in a checkout without its weights); the tools made for Kyutai's checkpoints (`data prepare`, `eval
codec`, `codec demo`) pass `default=DEFAULT_REPO` (Kyutai's moshiko) instead, and `helium` names it itself. A
model is up to three files plus an optional `config.json` (Kyutai's layout, parsed by `parse_kyutai_config`):
- `model.safetensors`: the language model (role "moshi");
- `tokenizer-e351c8d8-checkpoint125.safetensors`: Mimi (role "mimi");
- `tokenizer_spm_32k_3.model`: the SentencePiece text tokenizer (role "tokenizer").
`config.json` may rename them (`moshi_name`, `mimi_name`, `tokenizer_name`); without it the LM is moshiko 7B.
Each file can also be given directly, as in Kyutai's tools (the command's own flags, named in the messages).

Repos are fetched with `huggingface_hub.hf_hub_download` (its cache, tokens, `HF_HUB_OFFLINE`). A quick TCP check
(`hub.hub_unreachable`) comes first: without a network only the local cache is looked at, sparing the client's
minute of retries. A file that cannot be found, offline or not, raises `ModelFilesError` listing every missing
file, why, and how to provide it.

LoRA adapters (`--lora FILE`, or config.json's `"lora": true` with `lora_name`, `lora_rank`, `lora_scaling`, as
Kyutai's loader reads them) are found here too (`ModelFiles.lora`) and applied by `inference.models.load_models`.

Our extension to config.json: an optional `"mimi"` object of `MimiConfig` overrides (a smaller codec, for tests,
see `codec/presets.py`); Kyutai's repos never have it and get the released Mimi.

This module imports neither torch nor the models: resolving files (and the commands' `--help`) stays fast.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hub
from .lm.config import DEFAULT_REPO, KyutaiRepoConfig, parse_kyutai_config

CONFIG_NAME = "config.json"
ROLES = ("moshi", "mimi", "tokenizer")
ROLE_NAMES = {"moshi": "language model", "mimi": "Mimi codec", "tokenizer": "text tokenizer"}
# The flags of `openmoshi chat` (add_model_arguments); commands with other flags pass theirs to the resolver.
DEFAULT_FLAGS = {"moshi": "--moshi-weight", "mimi": "--mimi-weight", "tokenizer": "--tokenizer",
                 "config": "--config", "model": "--model", "lora": "--lora"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelFilesError(FileNotFoundError):
    """A model's files cannot be found; the message lists what is missing and how to provide it."""


@dataclass(frozen=True)
class LoraFile:
    """LoRA adapters to run the LM with: the file, and the rank / scaling a config.json states (None: not stated;
    `lm.lora.load_lora` then takes them from the file, and checks them against it)."""

    path: Path
    rank: int | None = None
    scaling: float | None = None


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are, once found (local paths; None for a role not asked for), and its config.json."""

    source: str  # the folder or repo id the files came from
    moshi: Path | None
    mimi: Path | None
    tokenizer: Path | None
    repo_config: KyutaiRepoConfig
    mimi_overrides: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    lora: LoraFile | None = None


def is_repo_id(name: str) -> bool:
    """'owner/name' that is not an existing local path."""
    return bool(_REPO_ID.match(name)) and not Path(name).expanduser().exists()


def read_model_config(path: Path) -> tuple[KyutaiRepoConfig, dict[str, Any]]:
    """(repo config, Mimi overrides) of a config.json; ValueError naming the file and the problem."""
    repo_cfg, mimi, _ = _read_config(path)
    return repo_cfg, mimi


def _lora_settings(raw: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """Pop Kyutai's LoRA keys: {"name", "rank", "scaling"} when `"lora": true` (None otherwise)."""
    lora = raw.pop("lora", False)
    keys = {k: raw.pop(k) for k in ("lora_name", "lora_rank", "lora_scaling") if k in raw}
    if lora is False:
        return None
    problems = [] if lora is True else [f"lora={lora!r} (must be true or false)"]
    name, rank, scaling = keys.get("lora_name"), keys.get("lora_rank"), keys.get("lora_scaling")
    if name is not None and not (isinstance(name, str) and name.strip()):
        problems.append(f"lora_name={name!r} (must be a file name)")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        problems.append(f"lora_rank={rank!r} (must be an integer >= 1)")
    if scaling is not None and (isinstance(scaling, bool) or not isinstance(scaling, int | float)
                                or scaling != scaling or abs(scaling) == float("inf")):
        problems.append(f"lora_scaling={scaling!r} (must be a finite number)")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return {"name": name, "rank": rank, "scaling": None if scaling is None else float(scaling)}


def _read_config(path: Path) -> tuple[KyutaiRepoConfig, dict[str, Any], dict[str, Any] | None]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read model config {path}: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"model config {path} must hold a JSON object")
    mimi = raw.pop("mimi", None)
    if mimi is None:
        mimi = {}
    if not isinstance(mimi, dict):
        raise ValueError(f"model config {path}: 'mimi' must be an object of MimiConfig fields")
    lora = _lora_settings(raw, path)
    try:
        return parse_kyutai_config(raw), mimi, lora
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _flag_list(roles: Iterable[str], flags: Mapping[str, str]) -> str:
    return " / ".join(f"{flags[r]} FILE" for r in roles if flags.get(r))


def _flags_hint(roles: Iterable[str], flags: Mapping[str, str]) -> str:
    given = _flag_list(roles, flags)
    return f", or pass each file with {given}" if given else ""


def _message(source: str, missing: list[tuple[str, str]], hint: str) -> str:
    return "\n".join([f"model files missing for {source}:", *(f"  - {what}: {why}" for what, why in missing), hint])


def _find_lora(settings: dict[str, Any] | None, given: str | None, locate: Callable[[str], tuple[Path | None, str]],
               config: Path | str | None, roles: tuple[str, ...], flags: Mapping[str, str]) -> LoraFile | None:
    """The adapters to run with: `given` (--lora) or config.json's `lora_name` (found by `locate`), with the
    rank / scaling config.json states; None without either, or when the LM is not among the wanted roles."""
    if "moshi" not in roles:
        return None
    flag = flags.get("lora") or "--lora"
    rank = settings["rank"] if settings else None
    scaling = settings["scaling"] if settings else None
    if given:
        path = Path(given).expanduser()
        if path.is_dir():  # a run or checkpoint folder: its lora.safetensors (moshi-finetune's name and ours)
            path = path / "lora.safetensors"
        if not path.is_file():
            raise ModelFilesError(f"LoRA adapter file not found: {path} (given with {flag})")
        return LoraFile(path, rank, scaling)
    if settings is None:
        return None
    if not settings["name"]:
        raise ModelFilesError(f'{config} says "lora": true but names no adapter file (lora_name): pass {flag} FILE')
    found, problem = locate(settings["name"])
    if found is None:
        raise ModelFilesError(f"LoRA adapters {settings['name']} (lora_name of {config}): {problem}; "
                              f"pass {flag} FILE")
    return LoraFile(found, rank, scaling)


def _local(folder: Path) -> Callable[[str], tuple[Path | None, str]]:
    def locate(name: str) -> tuple[Path | None, str]:
        path = folder / name
        return (path, "") if path.is_file() else (None, f"{path} does not exist")
    return locate


def _resolve_folder(folder: Path, explicit: dict[str, str | None], roles: tuple[str, ...],
                    flags: Mapping[str, str], lora: str | None = None) -> ModelFiles:
    if not folder.is_dir():
        raise ModelFilesError(f"model folder not found: {folder}")
    config_path = Path(explicit["config"]) if explicit["config"] else folder / CONFIG_NAME
    repo_cfg, mimi, lora_cfg = _read_config(config_path) if config_path.is_file() else \
        (parse_kyutai_config(None), {}, None)
    paths: dict[str, Path | None] = dict.fromkeys(ROLES)
    missing: list[tuple[str, str]] = []
    for role in roles:
        given = explicit[role]
        path = Path(given).expanduser() if given else folder / _file_name(repo_cfg, role)
        paths[role] = path
        if not path.is_file():
            missing.append((ROLE_NAMES[role], f"{path}" + (" (given on the command line)" if given else "")))
    if missing:
        mf = flags.get("model")
        hint = (f"Put these files in {folder} (names as in Kyutai's repos, or as config.json's moshi_name / "
                f"mimi_name / tokenizer_name say){_flags_hint(roles, flags)}"
                + (f", or pass {mf} {DEFAULT_REPO} to fetch them from the hub." if mf else "."))
        raise ModelFilesError(_message(str(folder), missing, hint))
    found = _find_lora(lora_cfg, lora, _local(folder), config_path, roles, flags)
    return ModelFiles(str(folder), paths["moshi"], paths["mimi"], paths["tokenizer"], repo_cfg, mimi,
                      config_path if config_path.is_file() else None, found)


def _file_name(cfg: KyutaiRepoConfig, role: str) -> str:
    return {"moshi": cfg.moshi_name, "mimi": cfg.mimi_name, "tokenizer": cfg.tokenizer_name}[role]


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
            f"`hf auth login` for a private repo, or pass a local folder."
        ) from None
    except (OSError, ValueError) as err:  # network errors past the hub's own offline handling, bad revisions
        return None, f"download failed ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"


def _resolve_repo(repo: str, explicit: dict[str, str | None], revision: str | None, roles: tuple[str, ...],
                  flags: Mapping[str, str], lora: str | None = None) -> ModelFiles:
    config_problem: str | None = None
    offline = hub.hub_unreachable()
    if explicit["config"]:
        config_path: Path | None = Path(explicit["config"])
    else:
        config_path, config_problem = _hub_fetch(repo, CONFIG_NAME, revision, offline)
    repo_cfg, mimi, lora_cfg = _read_config(config_path) if config_path else (parse_kyutai_config(None), {}, None)
    paths: dict[str, Path | None] = dict.fromkeys(ROLES)
    missing: list[tuple[str, str]] = []
    for role in roles:
        if explicit[role]:
            path = Path(explicit[role]).expanduser()  # type: ignore[arg-type]
            if not path.is_file():
                missing.append((ROLE_NAMES[role], f"{path} (given on the command line) does not exist"))
            paths[role] = path
            continue
        name = _file_name(repo_cfg, role)
        found, problem = _hub_fetch(repo, name, revision, offline)
        if found is None:
            missing.append((ROLE_NAMES[role], f"{name} from https://huggingface.co/{repo}: {problem}"))
        paths[role] = found
    if missing:
        if config_problem and config_problem != "not in the repo":
            missing.append(("config.json (optional)", f"{CONFIG_NAME}: {config_problem}"))
        names = " ".join(_file_name(repo_cfg, r) for r in roles if not explicit[r])
        mf = flags.get("model")
        hint = (f"Connect to the internet (and unset HF_HUB_OFFLINE) to download them, or fetch them elsewhere with "
                f"`hf download {repo} {names} --local-dir FOLDER` (`huggingface-cli download` with older "
                f"huggingface_hub), copy FOLDER here and pass "
                + (f"{mf} FOLDER{_flags_hint(roles, flags)}." if mf else f"each file with {_flag_list(roles, flags)}."))
        raise ModelFilesError(_message(repo, missing, hint))

    def fetch(name: str) -> tuple[Path | None, str]:
        found, problem = _hub_fetch(repo, name, revision, offline)
        return found, f"{name} from https://huggingface.co/{repo}: {problem}"

    found_lora = _find_lora(lora_cfg, lora, fetch, config_path, roles, flags)
    return ModelFiles(repo, paths["moshi"], paths["mimi"], paths["tokenizer"], repo_cfg, mimi, config_path,
                      found_lora)


def resolve_model_files(
    model: str | None = None,
    *,
    moshi_weight: str | None = None,
    mimi_weight: str | None = None,
    tokenizer: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    roles: Iterable[str] = ROLES,
    flags: Mapping[str, str] | None = None,
    lora: str | None = None,
    default: str | None = None,
) -> ModelFiles:
    """Find a model's files: `model` is a local folder or a hub repo id (None: `default`, a folder or repo id, or
    when that is None too the bundled nanomoshi, `default_model.bundled_model_dir()`).

    `roles`: the files wanted ("moshi", "mimi", "tokenizer"); the others are not looked for (None in the result).
    Explicit file paths replace the folder's or repo's files one by one (they are not downloaded); when every
    wanted file is given explicitly, nothing is fetched. `flags`: the command's flag names for the messages.
    `lora`: a LoRA adapter file (replaces the one config.json names with `"lora": true`; only with the LM role).
    Raises ModelFilesError (files) or ValueError (a config.json that cannot be used).
    """
    roles = tuple(roles)
    if not roles or any(r not in ROLES for r in roles):
        raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {roles}")
    flags = {**DEFAULT_FLAGS, **(flags or {})}
    explicit = {"moshi": moshi_weight, "mimi": mimi_weight, "tokenizer": tokenizer, "config": config}
    if config and not Path(config).expanduser().is_file():
        raise ModelFilesError(f"model config not found: {config}")
    if config:
        explicit["config"] = str(Path(config).expanduser())
    if model is None and all(explicit[r] for r in roles):
        return _all_explicit(explicit, roles, flags, lora)
    name = model or default or _bundled(flags)
    local = Path(name).expanduser()
    if local.exists():
        return _resolve_folder(local, explicit, roles, flags, lora)
    if is_repo_id(name):
        return _resolve_repo(name, explicit, revision, roles, flags, lora)
    raise ModelFilesError(
        f"{flags.get('model') or 'the model'} {name!r} is neither an existing folder nor a Hugging Face repo id "
        "(owner/name)")


def _bundled(flags: Mapping[str, str]) -> str:
    """The default model: the bundled nanomoshi's folder, or ModelFilesError (this checkout has no weights yet)."""
    from . import default_model

    if not default_model.has_bundled_model():
        raise ModelFilesError(default_model.missing_message(flags.get("model") or "--model"))
    return str(default_model.bundled_model_dir())


def _all_explicit(explicit: dict[str, str | None], roles: tuple[str, ...], flags: Mapping[str, str],
                  lora: str | None = None) -> ModelFiles:
    """Every wanted file given on the command line (and no --model): no folder or hub involved."""
    config_path = Path(explicit["config"]) if explicit["config"] else None
    repo_cfg, mimi, lora_cfg = _read_config(config_path) if config_path else (parse_kyutai_config(None), {}, None)
    paths: dict[str, Path | None] = dict.fromkeys(ROLES)
    missing = []
    for role in roles:
        path = Path(explicit[role]).expanduser()  # type: ignore[arg-type]
        paths[role] = path
        if not path.is_file():
            missing.append((ROLE_NAMES[role], f"{path} (given on the command line) does not exist"))
    if missing:
        raise ModelFilesError(_message("the command line", missing, "Check the paths."))
    found = _find_lora(lora_cfg, lora, _local(config_path.parent) if config_path else _local(Path(".")),
                       config_path, roles, flags)
    return ModelFiles("the command line", paths["moshi"], paths["mimi"], paths["tokenizer"], repo_cfg, mimi,
                      config_path, found)


# --dtype choices (the torch dtypes are in inference/models.py; names only here, so `--help` needs no torch).
# The --dtype flag's spellings -> torch dtype names (torch-free here, so --help stays instant).
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}
DTYPE_NAMES = tuple(sorted(DTYPES))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-selection flags shared by the runtime commands (`files_from_args` reads them)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", "--hf-repo", dest="model", default=None, metavar="FOLDER_OR_REPO",
                   help="a local folder or a Hugging Face repo id in Kyutai's layout (default: the bundled nanomoshi; "
                        f"Kyutai's Moshi: {DEFAULT_REPO})")
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    g.add_argument("--moshi-weight", default=None, metavar="FILE", help="language model safetensors, overrides")
    g.add_argument("--mimi-weight", default=None, metavar="FILE", help="Mimi safetensors, overrides")
    g.add_argument("--tokenizer", default=None, metavar="FILE", help="SentencePiece model, overrides")
    g.add_argument("--config", "--lm-config", dest="config", default=None, metavar="FILE",
                   help="config.json in Kyutai's layout, overrides the model's")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    g.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="weights dtype (default float32 on CPU, bfloat16 on GPU)")
    g.add_argument("--lora", default=None, metavar="FILE",
                   help="LoRA adapters (a .safetensors file, ours or moshi-finetune's, or a folder holding "
                        "lora.safetensors), merged into the LM when it loads")


def files_from_args(args: argparse.Namespace) -> ModelFiles:
    """The files named by `add_model_arguments`' flags (the library API is `resolve_model_files`)."""
    return resolve_model_files(args.model, moshi_weight=args.moshi_weight, mimi_weight=args.mimi_weight,
                               tokenizer=args.tokenizer, config=args.config, revision=args.revision,
                               lora=getattr(args, "lora", None))
