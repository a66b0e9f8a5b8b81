"""Mimi and the tokenizer for preparing data: loading a model's pair, its identity, batched long-file encoding.

`encode_rows` encodes several mono signals of different lengths as one batch: each is zero-padded on the right
to the longest (Mimi is causal, so padding never changes the codes of the real frames) and the batch goes
through Mimi's streaming path in blocks of whole frames (the same codes as one whole-signal call; memory bounded
by the block, so hour-long files work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .manifest import MAIN_SPEAKER, file_sha256
from .shards import Identity
from .text_grid import num_frames

if TYPE_CHECKING:
    import torch

    from ..codec.mimi import Mimi
    from ..lm.config import LMConfig
    from ..lm.text import TextTokenizer
    from ..model_files import ModelFiles


class CodecError(ValueError):
    """A Mimi that does not fit the model (codebooks, card)."""


@dataclass
class Codec:
    """What preparing needs of a model: its Mimi, its tokenizer, and their identity."""

    mimi: Mimi
    tokenizer: TextTokenizer
    identity: Identity
    device: torch.device


def codebooks_per_side(cfg: LMConfig) -> tuple[int, int]:
    """(Moshi's codebooks, the user's) on the model's grid: 8 and 8 for moshiko (also with dep_q = 16)."""
    moshi = cfg.dep_q if cfg.num_user_codebooks else cfg.n_q // 2
    return moshi, cfg.n_q - moshi


def model_identity(files: ModelFiles) -> Identity:
    """The identity of a model's Mimi and tokenizer (hashes the two files; builds nothing)."""
    from ..codec.presets import mimi_config_from_overrides

    if files.mimi is None or files.tokenizer is None:
        raise ValueError("preparing data needs the model's Mimi and tokenizer files")
    lm = files.repo_config.lm
    mcfg = mimi_config_from_overrides(files.mimi_overrides)
    return Identity(file_sha256(files.mimi), file_sha256(files.tokenizer), max(codebooks_per_side(lm)),
                    mcfg.quantizer.codebook_size, mcfg.frame_rate, mcfg.sample_rate, lm.text_padding_id,
                    lm.text_end_padding_id, MAIN_SPEAKER)


def load_codec(files: ModelFiles, device: str | torch.device | None = None,
               identity: Identity | None = None) -> Codec:
    """Mimi (float32) and the tokenizer of a model, on `device` (None: cuda when available)."""
    from ..codec.checkpoint import load_mimi
    from ..codec.presets import mimi_config_from_overrides
    from ..inference.models import resolve_device
    from ..lm.text import TextTokenizer

    identity = identity or model_identity(files)
    lm = files.repo_config.lm
    mcfg = mimi_config_from_overrides(files.mimi_overrides)
    if mcfg.quantizer.num_codebooks < identity.codebooks:
        raise CodecError(f"Mimi has {mcfg.quantizer.num_codebooks} codebooks, the model needs "
                           f"{identity.codebooks} per side")
    if mcfg.quantizer.codebook_size != lm.card:
        raise CodecError(f"Mimi's codebooks have {mcfg.quantizer.codebook_size} entries, the model's card is "
                           f"{lm.card}: not this model's Mimi")
    dev = device if not isinstance(device, (str, type(None))) else resolve_device(device)
    tokenizer = TextTokenizer.for_model(files.tokenizer, lm)  # type: ignore[arg-type]
    mimi = load_mimi(files.mimi, mcfg, device=dev)  # type: ignore[arg-type]
    return Codec(mimi, tokenizer, identity, dev)


def encode_rows(mimi: Mimi, rows: list[np.ndarray], codebooks: int, block_frames: int, device: torch.device,
                on_block=None) -> list[np.ndarray]:
    """Mimi codes [Q, ceil(len / frame)] of each mono signal, encoded as one zero-padded batch, streamed in
    blocks of `block_frames` (the same codes as a whole-file encode)."""
    import torch

    from ..nn.streaming import streaming

    frame = mimi.frame_size
    lengths = [num_frames(len(r), frame) for r in rows]
    total = max(lengths)
    x = np.zeros((len(rows), 1, total * frame), dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, 0, :len(r)] = r
    out = []
    with torch.no_grad(), streaming(mimi, len(rows)):
        for start in range(0, total, block_frames):
            stop = min(total, start + block_frames)
            block = torch.from_numpy(x[..., start * frame:stop * frame]).to(device)
            out.append(mimi.encode(block, codebooks).cpu())
            if on_block is not None:
                on_block(start, stop)
    codes = torch.cat(out, -1).numpy()
    return [codes[i, :, :n] for i, n in enumerate(lengths)]
