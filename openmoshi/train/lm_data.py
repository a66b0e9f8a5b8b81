"""Where the LM trainer's batches come from: the glue to `openmoshi.data.loader`, and a synthetic dataset.

The trainer consumes an iterable of `LMBatch(codes [B, K, T])` (B = this rank's micro-batch) with
`state_dict()` / `load_state_dict()` (a JSON-able position, saved in every checkpoint). Two sources:
- a JSONL manifest, through the data package's loader (`openmoshi.data.loader.LMDataLoader`) over its
  prepared shards (`prepare_lm_data` prepares them first when they never were, with the model's Mimi);
- `SyntheticLMData`: a few fixed random sequences on the model's grid, cycled in a seeded order. Used by the
  tests, the benchmark and `--data synthetic` (a smoke test of the whole pipeline: its loss must fall, since the
  sequences can be memorised).

Micro-batch order: the global batch of a step is split into world_size x grad_accum micro-batches; rank r's
a-th micro-batch of a step is global micro-batch j = a * world_size + r. The same global batch therefore gives
the same micro-batches whether it is split over processes or over accumulation steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..data.loader import LMBatch
from ..lm.config import LMConfig
from .lm_step import is_text_only_step


def random_sequences(cfg: LMConfig, count: int, frames: int, seed: int) -> torch.Tensor:
    """[count, K, frames] sequences shaped like real data: text mostly PAD with words (a few tokens, EPAD before),
    audio codes in [0, card); the user's stream present."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.card, (count, cfg.num_streams, frames), generator=gen)
    text = torch.full((count, frames), cfg.text_padding_id, dtype=torch.long)
    for i in range(count):
        t = 1
        while t < frames - 1:
            n = int(torch.randint(1, 4, (1,), generator=gen))
            text[i, t - 1] = cfg.text_end_padding_id
            words = torch.randint(4, cfg.text_card, (n,), generator=gen)
            text[i, t:t + n] = words[: frames - t]
            t += n + int(torch.randint(1, 4, (1,), generator=gen))
    codes[:, 0] = text
    return codes


class SyntheticLMData:
    """`num_sequences` fixed sequences; each global batch draws `batch_size` of them from a seeded permutation.

    Iterating yields this rank's micro-batches ([batch_size / (world_size * grad_accum), K, seq_frames]) forever.
    """

    def __init__(self, cfg: LMConfig, batch_size: int, seq_frames: int, *, grad_accum: int = 1, rank: int = 0,
                 world_size: int = 1, num_sequences: int = 8, seed: int = 0, text_only_share: float = 0.0,
                 user_text: bool = False) -> None:
        if batch_size % (world_size * grad_accum):
            raise ValueError(f"batch size {batch_size} is not a multiple of world size x grad accumulation "
                             f"({world_size} x {grad_accum})")
        self.sequences = random_sequences(cfg, num_sequences, seq_frames, seed)
        # the user's words: another random text stream (the synthetic audio says nothing anyway)
        self.user_text = random_sequences(cfg, num_sequences, seq_frames, seed + 7919)[:, 0] if user_text else None
        self.batch_size, self.accum, self.rank, self.world = batch_size, grad_accum, rank, world_size
        self.micro = batch_size // (world_size * grad_accum)
        self.seed, self.text_only_share = seed, text_only_share
        self.position = 0  # micro-batches this rank has yielded

    def global_rows(self, step: int) -> torch.Tensor:
        """Indices of the sequences in global batch `step`."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        count = len(self.sequences)
        reps = -(-self.batch_size // count)
        return torch.cat([torch.randperm(count, generator=gen) for _ in range(reps)])[: self.batch_size]

    def __iter__(self) -> Iterator[LMBatch]:
        while True:
            step, a = divmod(self.position, self.accum)
            j = a * self.world + self.rank
            rows = self.global_rows(step)[j * self.micro:(j + 1) * self.micro]
            self.position += 1
            codes = self.sequences[rows].clone()
            text_only = is_text_only_step(self.seed, step, self.text_only_share)
            user = None if self.user_text is None else self.user_text[rows].clone()
            if text_only:  # the text stream alone (a stand-in for text data: the same words, no audio)
                codes[:, 1:] = -1
                if user is not None:
                    user[:] = -1
            yield LMBatch(codes=codes, text_only=text_only, user_text=user)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.position // self.accum, "micro": self.position % self.accum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The same position (the next step), whatever the ranks and accumulation now."""
        self.position = int(state["step"]) * self.accum + min(int(state["micro"]), self.accum - 1)


def build_lm_data(cfg: LMConfig, *, split: str, batch_size: int, seq_frames: int, grad_accum: int, rank: int,
                  world_size: int, seed: int, text_only_share: float = 0.0, val_share: float = 0.05,
                  prepared: Any = None, synthetic: bool = False, user_text: bool = False):
    """This rank's batch iterable for `split` ("train" or "val"): synthetic, or the loader over `prepared` (the
    `PreparedIndex` of `prepare_lm_data`). `batch_size` is the global batch. `user_text`: batches carry the
    user's words (`LMBatch.user_text`)."""
    micro = batch_size // (world_size * grad_accum)
    if synthetic:
        # the validation split holds other sequences than the training one
        return SyntheticLMData(cfg, batch_size, seq_frames, grad_accum=grad_accum, rank=rank,
                               world_size=world_size, seed=seed if split == "train" else seed + 1,
                               text_only_share=text_only_share if split == "train" else 0.0,
                               user_text=user_text)
    from ..data.loader import LMDataLoader, LoaderConfig

    loader_cfg = LoaderConfig.for_model(cfg, batch_size=micro, frames=seq_frames, seed=seed,
                                        text_only_share=text_only_share if split == "train" else 0.0,
                                        val_share=val_share, rank=rank, world_size=world_size,
                                        user_text=user_text)
    return LMDataLoader(prepared, loader_cfg, split="train" if split == "train" else "val")


def prepare_lm_data(manifest: str, files: Any, d: Any) -> Any:
    """The prepared data of `manifest` (Mimi codes and the text grid, computed once with the model's own Mimi
    and tokenizer, then reused): rank 0 prepares while the others wait."""
    from ..data.prepare import PrepareOptions, ensure_prepared
    from .distributed import barrier

    if files is None or files.mimi is None or files.tokenizer is None:
        raise ValueError("preparing --data needs a Mimi and a tokenizer: start from --model, or set model.assets "
                         "to a model folder or repo that has them")
    if d.is_main:
        ensure_prepared(manifest, files, options=PrepareOptions(progress=True))
    barrier(d)
    return ensure_prepared(manifest, files, options=PrepareOptions(progress=False))
