"""The model openmoshi ships: nanomoshi, a model folder in Kyutai's layout inside the package.

`openmoshi/assets/nanomoshi/` holds what `scripts/train_nanomoshi.sh`'s export stage writes (the model card is
docs/nanomoshi.md): `config.json` (the nano shapes, file names and our `"mimi"` codec overrides), the LM
`model.safetensors` (bf16), the codec `tokenizer-e351c8d8-checkpoint125.safetensors` and the SentencePiece
`tokenizer_spm_32k_3.model` (Kyutai's file names, as `config.json` states them), at most 50 MB in all. It is
package data (pyproject.toml), so an installed wheel has it. A checkout made before the weights were committed
has only the folder's README.md: `missing_message` then says so and names both ways out.

`openmoshi chat`, `serve` and `demo` use it when no model is given: `model_files.resolve_model_files` with
`model=None` resolves to `bundled_model_dir()` (the one place that decides the default). Kyutai's models stay
one flag away (`--model kyutai/moshiko-pytorch-bf16`).

Torch-free and cheap (the commands' `--help` lists the default).
"""

from __future__ import annotations

import json
from pathlib import Path

from .lm.config import DEFAULT_MIMI_NAME, DEFAULT_MOSHI_NAME, DEFAULT_REPO, DEFAULT_TOKENIZER_NAME

NAME = "nanomoshi"
MAX_BYTES = 50 * 10**6  # the budget for the shipped weights, all files together
CONFIG_NAME = "config.json"
# What the export stage writes (and so what the lead copies in): config.json names the three others.
EXPECTED_FILES = (CONFIG_NAME, DEFAULT_MOSHI_NAME, DEFAULT_MIMI_NAME, DEFAULT_TOKENIZER_NAME)
TRAIN_SCRIPT = "scripts/train_nanomoshi.sh"

_BUNDLED = Path(__file__).resolve().parent / "assets" / NAME  # tests point this at a stand-in


def bundled_model_dir() -> Path:
    """The bundled model's folder (it exists in every checkout and wheel; it may hold only its README)."""
    return _BUNDLED


def missing_files(folder: Path | None = None) -> list[str]:
    """The files the bundled model still lacks (empty: complete): config.json, then the three files it names."""
    folder = bundled_model_dir() if folder is None else folder
    config = folder / CONFIG_NAME
    if not config.is_file():
        return [CONFIG_NAME] + [n for n in EXPECTED_FILES[1:] if not (folder / n).is_file()]
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raw = None  # a broken config.json is reported by the resolver itself, with its reason
    names = []
    for key, default in zip(("moshi_name", "mimi_name", "tokenizer_name"), EXPECTED_FILES[1:], strict=True):
        value = raw.get(key, default) if isinstance(raw, dict) else default
        names.append(value if isinstance(value, str) and value else default)
    return [n for n in names if not (folder / n).is_file()]


def has_bundled_model() -> bool:
    """True when the bundled folder holds config.json and the three files it names."""
    return not missing_files()


def missing_message(flag: str = "--model") -> str:
    """Why the default model cannot be used in this checkout, and both ways out."""
    folder = bundled_model_dir()
    return (f"the bundled model ({NAME}) is not in this checkout: {folder} lacks "
            f"{', '.join(missing_files(folder))} (its weights are committed once training has finished; see "
            f"docs/nanomoshi.md). Either train it (`{TRAIN_SCRIPT} --out OUT`) and pass {flag} OUT/export (or copy "
            f"OUT/export/* into {folder}), or use Kyutai's Moshi: {flag} {DEFAULT_REPO}")


def folder_bytes(folder: Path | None = None) -> int:
    """The size of the model folder's files (the README included), to hold against MAX_BYTES."""
    folder = bundled_model_dir() if folder is None else folder
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def bundled_question() -> Path:
    """The demo's spoken question: 24 kHz mono wav (its words in the sidecar question.txt), made by
    scripts/make_demo_question.sh with one of the synthetic data's user voices."""
    return Path(__file__).resolve().parent / "assets" / "question.wav"
