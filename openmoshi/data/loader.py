"""Training batches from prepared data: `LMBatch(codes [B, K, T])` on the model's input grid, resumable.

Rows of `codes`: 0 = Moshi's text stream, 1..M = Moshi's Mimi codebooks, M+1..M+U = the user's (M, U from the
model: 8 and 8 for moshiko); -1 = no token (no input, no target). Single-stream speech has its user rows -1;
text-only batches have every audio row -1 and text tokens packed in row 0. The grid is undelayed: the model
applies its delays itself.

Everything is a pure function of (seed, epoch, position), never of a running random state, so a run resumed
from `state_dict()` sees exactly the batches an uninterrupted run would:
- train, epoch e: every training conversation gives max(1, frames // T) crops; the crops are shuffled by a
  generator seeded with (seed, e); rank r takes every world_size-th crop (as many per rank); batches of B
  follow (the last one completed from the start of the epoch's list); a crop of a longer conversation starts at
  a random frame drawn from (seed, e, position), a shorter one is padded with -1;
- step s is a text-only batch when a draw from (seed, s) falls below `text_only_share` (then B windows of T
  packed text tokens, at random places); without audio data every batch is text-only;
- validation (`split="val"`): the held-out conversations (a share chosen by a hash of each path, stable as the
  dataset grows), cut into consecutive windows of T frames, one pass, the same number of batches on each rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from .shards import Item, PreparedIndex, read_index

if TYPE_CHECKING:
    from ..lm.config import LMConfig

Split = Literal["train", "val"]


@dataclass
class LMBatch:
    """codes: LongTensor [B, K, T] (K = 1 + Moshi's codebooks + the user's); text_only: no audio row holds a
    token; user_text: LongTensor [B, T], the user's words on the same grid (-1 = none: mono, text-only, padding),
    when the loader was asked for it (`LoaderConfig.user_text`), else None."""

    codes: torch.Tensor
    text_only: bool = False
    user_text: torch.Tensor | None = None


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 8  # per rank
    frames: int = 1250  # T: crop length in frames (100 s at 12.5 Hz)
    seed: int = 0
    moshi_codebooks: int = 8
    user_codebooks: int = 8
    text_only_share: float = 0.0  # share of text-only batches (pre-training: 0.5)
    val_share: float = 0.0  # share of conversations held out for validation
    rank: int = 0
    world_size: int = 1
    user_text: bool = False  # also give each batch the user's words (`LMBatch.user_text`)

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1 or self.frames < 1:
            problems.append("batch_size and frames must be >= 1")
        if not 0 <= self.rank < self.world_size:
            problems.append(f"rank {self.rank} not in 0..world_size-1 ({self.world_size})")
        if not 0 <= self.text_only_share <= 1 or not 0 <= self.val_share < 1:
            problems.append("text_only_share must be in [0, 1] and val_share in [0, 1)")
        if self.moshi_codebooks < 1 or self.user_codebooks < 0:
            problems.append("moshi_codebooks must be >= 1 and user_codebooks >= 0")
        if problems:
            raise ValueError("invalid LoaderConfig: " + "; ".join(problems))

    @classmethod
    def for_model(cls, cfg: LMConfig, **overrides: Any) -> LoaderConfig:
        """The codebooks of a model's grid (`prepare.codebooks_per_side`), other fields from `overrides`."""
        from .encode import codebooks_per_side

        moshi, user = codebooks_per_side(cfg)
        return cls(**{"moshi_codebooks": moshi, "user_codebooks": user, **overrides})

    @property
    def num_streams(self) -> int:
        return 1 + self.moshi_codebooks + self.user_codebooks


def _hash_unit(text: str) -> float:
    """A stable number in [0, 1) for a string (the validation split)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_items(items: list[tuple[str, Item]], val_share: float) -> tuple[list[int], list[int]]:
    """(train, val) positions in `items`: val is the items whose path hashes below `val_share` (at least one
    when val_share > 0 and there are two items or more)."""
    if val_share <= 0:
        return list(range(len(items))), []
    units = [_hash_unit(item.source) for _, item in items]
    val = [i for i, u in enumerate(units) if u < val_share]
    if not val and len(items) >= 2:
        val = [min(range(len(items)), key=lambda i: units[i])]
    if len(val) == len(items):
        raise ValueError(f"val_share {val_share} holds out every one of the {len(items)} conversations")
    chosen = set(val)
    return [i for i in range(len(items)) if i not in chosen], val


class LMDataLoader:
    """Batches of a prepared dataset (a folder, its index.json, or a `PreparedIndex`); see the module docstring.

    Iterating a "train" loader never ends (epochs follow each other); a "val" loader makes one pass.
    """

    def __init__(self, data: PreparedIndex | str | Path, config: LoaderConfig, split: Split = "train") -> None:
        self.index = data if isinstance(data, PreparedIndex) else read_index(data)
        self.cfg, self.split = config, split
        q = self.index.identity.codebooks
        if config.moshi_codebooks > q or config.user_codebooks > q:
            raise ValueError(f"the data holds {q} codebooks per side, the model needs {config.moshi_codebooks} "
                             f"(Moshi) and {config.user_codebooks} (user): prepare it with the model's own Mimi")
        audio = [(c.name, i) for c in self.index.chunks for i in c.items if i.kind != "text"]
        train, val = split_items(audio, config.val_share)
        self.items = [audio[i] for i in (train if split == "train" else val)]
        self.text = [(c.name, i) for c in self.index.chunks for i in c.items if i.kind == "text" and i.length]
        self._text_starts = np.cumsum([0] + [i.length for _, i in self.text])
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._per_epoch: int | None = None
        if split == "train":
            if not self.items and not self.text:
                raise ValueError(f"{self.index.folder}: no training data (every conversation is held out?)")
            if config.text_only_share > 0 and not self.text:
                raise ValueError("text_only_share > 0 but the data holds no text files")
        self.epoch = self.batch = self.step = 0

    # ---- resumption ------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """The data and the settings that decide the batches, except rank, world size and batch size."""
        shape = ("rank", "world_size", "batch_size", "user_text")  # user_text changes no crop
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in shape}
        desc = repr((settings, self.split, [(c, i.source, i.offset, i.length) for c, i in self.items],
                     [(c, i.source, i.length) for c, i in self.text]))
        return hashlib.sha256(desc.encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """The position: the next batch of `__iter__` (plain ints and strings: fits any checkpoint). It is the
        same on every rank, so saving one rank's is enough."""
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "fingerprint": self._fingerprint(),
                "crops_per_batch": self.cfg.batch_size * self.cfg.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state`'s position: exactly the same batches with the same ranks and batch size; with
        another global batch (ranks x batch size), at the same share of the epoch."""
        if state.get("fingerprint") != self._fingerprint():
            raise ValueError("the loader's state was saved for other data or another loader config (seed, crop "
                             "length, shares): cannot resume its position")
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        before = int(state.get("crops_per_batch", self.cfg.batch_size * self.cfg.world_size))
        now = self.cfg.batch_size * self.cfg.world_size
        if before != now:  # resharded: the crops already seen this epoch stay seen
            self.batch = min(self.batch * before // now, self.batches_per_epoch() - 1)

    # ---- reading ---------------------------------------------------------------------------------
    def _array(self, chunk: str, kind: str) -> np.ndarray:
        key = (chunk, kind)
        if key not in self._arrays:
            read = {"audio": self.index.audio_array, "text": self.index.text_array,
                    "user_text": self.index.user_text_array}[kind]
            self._arrays[key] = read(chunk)
        return self._arrays[key]

    def _crop(self, position: int, start: int, out: np.ndarray, user: np.ndarray | None = None) -> None:
        """Frames [start, start + T) of item `position` into out [K, T] and user [T] (both already -1)."""
        chunk, item = self.items[position]
        stop = min(item.length, start + self.cfg.frames)
        rows = np.asarray(self._array(chunk, "audio")[item.offset + start:item.offset + stop])  # [t, 1 + 2Q]
        q, m, u = self.index.identity.codebooks, self.cfg.moshi_codebooks, self.cfg.user_codebooks
        t = stop - start
        out[0, :t] = rows[:, 0]
        out[1:1 + m, :t] = rows[:, 1:1 + m].T
        out[1 + m:, :t] = rows[:, 1 + q:1 + q + u].T
        if user is not None:
            user[:t] = self._array(chunk, "user_text")[item.offset + start:item.offset + stop]

    def _text_window(self, start: int, out: np.ndarray) -> None:
        """Packed text tokens [start, start + T) into out[0]."""
        total, t = int(self._text_starts[-1]), self.cfg.frames
        pos, written = start, 0
        while written < t and pos < total:
            k = int(np.searchsorted(self._text_starts, pos, side="right") - 1)
            chunk, item = self.text[k]
            local = pos - int(self._text_starts[k])
            n = min(t - written, item.length - local)
            out[0, written:written + n] = self._array(chunk, "text")[item.offset + local:item.offset + local + n]
            written += n
            pos += n

    # ---- the schedule ----------------------------------------------------------------------------
    def _epoch_crops(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's (item position, crop start) of an epoch, in order."""
        t = self.cfg.frames
        crops = [(p, c) for p, (_, item) in enumerate(self.items) for c in range(max(1, item.length // t))]
        order = np.random.default_rng([self.cfg.seed, 0, epoch]).permutation(len(crops))
        per_rank = len(crops) // self.cfg.world_size
        if per_rank == 0:
            raise ValueError(f"{len(crops)} training crops for {self.cfg.world_size} ranks: too little data")
        mine = order[self.cfg.rank::self.cfg.world_size][:per_rank]
        out = []
        for g in mine:
            p, _ = crops[g]
            length = self.items[p][1].length
            start = 0 if length <= t else int(np.random.default_rng([self.cfg.seed, 1, epoch, int(g)])
                                              .integers(0, length - t + 1))
            out.append((p, start))
        return out

    def batches_per_epoch(self) -> int:
        """Audio batches per epoch on each rank (text-only batches come on top)."""
        if self._per_epoch is None:
            self._per_epoch = self._count_batches()
        return self._per_epoch

    def _count_batches(self) -> int:
        if not self.items:
            total = int(self._text_starts[-1])
            return max(1, total // (self.cfg.batch_size * self.cfg.frames * self.cfg.world_size))
        crops = sum(max(1, i.length // self.cfg.frames) for _, i in self.items) // self.cfg.world_size
        return max(1, -(-crops // self.cfg.batch_size))

    def _is_text_step(self, step: int) -> bool:
        if not self.items:
            return True
        share = self.cfg.text_only_share
        return share > 0 and np.random.default_rng([self.cfg.seed, 2, step]).random() < share

    def _text_batch(self, step: int) -> LMBatch:
        b, t = self.cfg.batch_size, self.cfg.frames
        codes = np.full((b, self.cfg.num_streams, t), -1, dtype=np.int64)
        total = int(self._text_starts[-1])
        rng = np.random.default_rng([self.cfg.seed, 3, step, self.cfg.rank])
        for r in range(b):
            self._text_window(int(rng.integers(0, max(1, total - t + 1))), codes[r])
        user = torch.full((b, t), -1, dtype=torch.long) if self.cfg.user_text else None
        return LMBatch(torch.from_numpy(codes), text_only=True, user_text=user)

    def _audio_batch(self, crops: list[tuple[int, int]]) -> LMBatch:
        codes = np.full((len(crops), self.cfg.num_streams, self.cfg.frames), -1, dtype=np.int64)
        user = np.full((len(crops), self.cfg.frames), -1, dtype=np.int64) if self.cfg.user_text else None
        for r, (p, start) in enumerate(crops):
            self._crop(p, start, codes[r], None if user is None else user[r])
        return LMBatch(torch.from_numpy(codes), user_text=None if user is None else torch.from_numpy(user))

    def __iter__(self) -> Iterator[LMBatch]:
        if self.split == "val":
            yield from self._val_batches()
            return
        crops: list[tuple[int, int]] | None = None
        crops_epoch = -1
        while True:
            if self._is_text_step(self.step):
                batch = self._text_batch(self.step)
            else:
                if crops_epoch != self.epoch:
                    crops, crops_epoch = self._epoch_crops(self.epoch), self.epoch
                assert crops is not None
                b = self.cfg.batch_size
                picked = [crops[(self.batch * b + j) % len(crops)] for j in range(b)]
                batch = self._audio_batch(picked)
                self.batch += 1
                if self.batch >= self.batches_per_epoch():
                    self.epoch, self.batch = self.epoch + 1, 0
            self.step += 1
            yield batch

    def _val_batches(self) -> Iterator[LMBatch]:
        t = self.cfg.frames
        windows = [(p, s) for p, (_, item) in enumerate(self.items) for s in range(0, item.length, t)]
        if not windows:
            return
        world = self.cfg.world_size
        per_rank = -(-len(windows) // world)
        mine = [windows[(self.cfg.rank + world * j) % len(windows)] for j in range(per_rank)]
        for start in range(0, per_rank, self.cfg.batch_size):
            yield self._audio_batch(mine[start:start + self.cfg.batch_size])
