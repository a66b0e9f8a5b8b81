"""Preparing a dataset once: Mimi codes of both channels and Moshi's text stream, into shards (`shards.py`).

- Checked first (`check.py`): a dataset with problems is refused (or its bad entries skipped, `skip_invalid`).
- The manifest's entries are cut into chunks of `chunk_size` consecutive entries; chunk c belongs to rank
  c % world_size, so processes or machines sharing the output folder split the work without talking.
- Resumable: a chunk whose record exists with the same fingerprint (its entries, their files' sizes and times,
  the model identity) is skipped; chunk files are written atomically, so a killed run loses at most the chunk
  in progress. The index is written by whichever run finds every chunk done (run again with the default rank
  to finish a job whose ranks all ended).
- Batched: within a chunk, files are sorted by length and encoded together (each channel one row, zero-padded
  on the right: Mimi is causal, so padding never changes the codes of the real frames), in blocks of
  `block_frames` through the streaming path (the same codes as one call; memory bounded for hour-long files).
- The Mimi and tokenizer files' sha256 are recorded; prepared data made with another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .check import DEFAULT_TOLERANCE, check_dataset
from .encode import Codec, CodecError, codebooks_per_side, encode_rows, load_codec, model_identity
from .manifest import (
    ManifestEntry,
    audio_info,
    file_sha256,
    moshi_words,
    read_channels,
    read_sidecar,
    read_text_file,
    user_words,
)
from .shards import (
    CHUNK_DIR,
    FORMAT,
    INDEX_NAME,
    VERSION,
    ChunkRecord,
    Identity,
    Item,
    PreparedDataError,
    PreparedIndex,
    chunk_name,
    read_chunk_record,
    read_index,
    write_chunk,
)
from .text_grid import num_frames, text_stream

if TYPE_CHECKING:
    import torch

    from ..model_files import ModelFiles


__all__ = ["PrepareError", "PrepareOptions", "PrepareReport", "Codec", "CodecError", "codebooks_per_side",
           "model_identity", "load_codec", "default_out", "prepare", "is_prepared", "ensure_prepared"]


class PrepareError(ValueError):
    """A dataset or output folder that cannot be prepared; the message says why."""


@dataclass(frozen=True)
class PrepareOptions:
    chunk_size: int = 64  # manifest entries per chunk (the unit of resumption and of the split across ranks)
    batch_size: int = 8  # files encoded together
    max_batch_seconds: float = 1200.0  # audio per batch, all rows together (bounds memory for long files)
    block_frames: int = 125  # frames per streaming call (10 s at 12.5 Hz; fewer calls are faster, more memory)
    rank: int = 0
    world_size: int = 1
    skip_invalid: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} not in 0..world_size-1 (world_size {self.world_size})")
        if min(self.chunk_size, self.batch_size, self.block_frames) < 1 or self.max_batch_seconds <= 0:
            raise ValueError("chunk_size, batch_size, block_frames and max_batch_seconds must be positive")


@dataclass
class PrepareReport:
    index: PreparedIndex | None  # None while chunks of other ranks are missing
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # other ranks' chunks not done yet
    skipped_problems: list[str] = field(default_factory=list)


def default_out(manifest: str | Path) -> Path:
    """Where `ensure_prepared` puts a manifest's prepared data: beside it, `<stem>.prepared/`."""
    path = Path(manifest).expanduser()
    return path.with_name(f"{path.stem}.prepared")


def _stat(path: Path) -> list[int]:
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [-1, -1]


def _fingerprint(entries: list[ManifestEntry], identity: Identity) -> str:
    rows = [[e.kind, e.raw_path, str(e.path), e.duration, _stat(e.path),
             _stat(e.sidecar) if e.kind == "audio" else None] for e in entries]
    blob = json.dumps({"identity": identity.to_dict(), "entries": rows, "version": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_out(out: Path, identity: Identity) -> None:
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} is a file: give a folder")
    if out.is_dir():
        unknown = sorted(p.name for p in out.iterdir() if p.name not in (INDEX_NAME, CHUNK_DIR))
        if unknown and not (out / INDEX_NAME).exists() and not (out / CHUNK_DIR).exists():
            raise PrepareError(f"--out {out} holds other files ({', '.join(unknown[:3])}...): refusing to write "
                               f"prepared data there; give an empty or new folder")
    if (out / INDEX_NAME).exists():
        try:
            raw = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise PrepareError(f"--out {out} holds an {INDEX_NAME} that is not one of prepared data: refusing to "
                               f"replace it; give an empty or new folder")
        try:
            old = read_index(out).identity
        except PreparedDataError:
            return  # ours but damaged or of an older version: rebuilt
        diff = old.differences(identity)
        if diff:
            raise PrepareError(f"{out} holds data prepared with another model ({'; '.join(diff)}): give another "
                               f"--out, or delete {out} to prepare it again with this one")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="Mimi frames (80 ms each)", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def _batches(entries: list[tuple[ManifestEntry, int, int]], options: PrepareOptions, rate: int
             ) -> list[list[tuple[ManifestEntry, int, int]]]:
    """Entries (entry, channels, samples at the codec's rate) sorted by length, grouped into batches."""
    limit = options.max_batch_seconds * rate
    batches: list[list[tuple[ManifestEntry, int, int]]] = []
    for item in sorted(entries, key=lambda e: e[2]):
        batch = batches[-1] if batches else None
        rows = sum(c for _, c, _ in batch) + item[1] if batch else 0
        if batch is None or len(batch) >= options.batch_size or rows * item[2] > limit:
            batches.append([item])
        else:
            batch.append(item)
    return batches


def _prepare_audio(codec: Codec, batch: list[tuple[ManifestEntry, int, int]], options: PrepareOptions, bar
                   ) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """entry index -> (its grid [F, 1 + 2Q] int32, the user's words on the grid [F] int32 (-1 in mono), its
    channel count)."""
    mimi, ident = codec.mimi, codec.identity
    q = ident.codebooks
    signals = [read_channels(e.path, mimi.sample_rate) for e, _, _ in batch]
    rows = [ch for s in signals for ch in s]
    owners = [i for i, s in enumerate(signals) for _ in range(len(s))]
    lengths = [num_frames(len(s[0]), mimi.frame_size) for s in signals]

    def advance(start: int, stop: int) -> None:
        bar.update(sum(max(0, min(n, stop) - min(n, start)) for n in lengths))

    codes = encode_rows(mimi, rows, q, options.block_frames, codec.device, advance)
    out: dict[int, tuple[np.ndarray, int]] = {}
    for i, ((entry, _, _), signal) in enumerate(zip(batch, signals, strict=True)):
        mine = [c for c, o in zip(codes, owners, strict=True) if o == i]
        frames = mine[0].shape[-1]
        grid = np.full((frames, 1 + 2 * q), -1, dtype=np.int32)
        words, _ = read_sidecar(entry.sidecar)

        def on_grid(chosen: list, frames: int = frames) -> np.ndarray:
            return text_stream(chosen, frames, ident.frame_rate, codec.tokenizer.encode, ident.text_pad_id,
                               ident.text_epad_id)

        grid[:, 0] = on_grid(moshi_words(words, len(signal), ident.main_speaker))
        grid[:, 1:1 + q] = mine[0].T
        user = np.full(frames, -1, dtype=np.int32)
        if len(mine) == 2:
            grid[:, 1 + q:] = mine[1].T
            user = on_grid(user_words(words, len(signal), ident.main_speaker))
        out[entry.index] = (grid, user, len(signal))
    return out


def _headers(entries: list[ManifestEntry], rate: int) -> list[tuple[ManifestEntry, int, int]]:
    """(entry, channels, samples at `rate`) of the audio entries (headers only)."""
    out = []
    for e in entries:
        if e.kind == "audio":
            info = audio_info(e.path)
            out.append((e, info.channels, int(info.samples * rate / info.sample_rate)))
    return out


def _prepare_chunk(codec: Codec, name: str, entries: list[ManifestEntry], fingerprint: str, out: Path,
                   options: PrepareOptions, bar) -> None:
    rate = codec.mimi.sample_rate
    audio = _headers(entries, rate)
    grids: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for batch in _batches(audio, options, rate):
        grids.update(_prepare_audio(codec, batch, options, bar))
    record = ChunkRecord(name, fingerprint)
    parts, users, texts = [], [], []
    frame_offset = token_offset = 0
    for e in entries:  # manifest order inside the chunk
        if e.kind == "audio":
            grid, user, channels = grids[e.index]
            record.items.append(Item("stereo" if channels == 2 else "mono", e.raw_path, e.line, frame_offset,
                                     len(grid), len(grid) / codec.identity.frame_rate))
            parts.append(grid)
            users.append(user)
            frame_offset += len(grid)
        else:
            tokens = [t for line in read_text_file(e.path) for t in codec.tokenizer.encode(line)]
            record.items.append(Item("text", e.raw_path, e.line, token_offset, len(tokens), 0.0))
            texts.append(np.asarray(tokens, dtype=np.int32))
            token_offset += len(tokens)
    audio_arr = np.concatenate(parts) if parts else None
    user_arr = np.concatenate(users) if users else None
    text_arr = np.concatenate(texts) if texts else None
    write_chunk(out, record, codec.identity, audio_arr, text_arr, user_arr)


def _select(manifest: Path, options: PrepareOptions) -> tuple[list[ManifestEntry], list[str]]:
    """The entries to prepare (checked), and the problems of the skipped ones."""
    result = check_dataset(manifest, options.tolerance)
    problems = [str(p) for p in result.problems]
    if problems and not options.skip_invalid:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PrepareError(f"{manifest} has {len(problems)} problems:\n{shown}{more}\nRun `openmoshi data check "
                           f"{manifest}` for the full list; fix them, or pass --skip-invalid to leave those "
                           f"entries out")
    kept = [e for e in result.entries if e.index not in result.bad_entries]
    if not kept:
        raise PrepareError(f"{manifest}: no valid entry to prepare")
    return kept, problems


def prepare(manifest: str | Path, out: str | Path, codec: Codec, options: PrepareOptions = PrepareOptions()
            ) -> PrepareReport:
    """Prepare this rank's chunks of `manifest` into `out`, then the index if every chunk is done."""
    manifest, out = Path(manifest).expanduser(), Path(out).expanduser()
    if out.resolve() == manifest.resolve().parent:
        raise PrepareError(f"--out {out} is the dataset's own folder: give a folder of its own")
    _check_out(out, codec.identity)
    entries, problems = _select(manifest, options)
    (out / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    groups = [entries[i:i + options.chunk_size] for i in range(0, len(entries), options.chunk_size)]
    plan = [(chunk_name(c), group, _fingerprint(group, codec.identity)) for c, group in enumerate(groups)]
    report = PrepareReport(None, skipped_problems=problems if options.skip_invalid else [])
    todo = []
    for c, (name, group, fp) in enumerate(plan):
        found = read_chunk_record(out, name)
        if found is not None and found[0].fingerprint == fp:
            report.reused.append(name)
        elif c % options.world_size == options.rank:
            todo.append((name, group, fp))
    rate, frame = codec.mimi.sample_rate, codec.mimi.frame_size
    frames = sum(num_frames(n, frame) for _, group, _ in todo for _, _, n in _headers(group, rate))
    with _progress(frames, options.progress and bool(todo)) as bar:
        for name, group, fp in todo:
            _prepare_chunk(codec, name, group, fp, out, options, bar)
            report.computed.append(name)
    records = []
    for name, _, fp in plan:
        found = read_chunk_record(out, name)
        if found is None or found[0].fingerprint != fp:
            report.pending.append(name)
        else:
            records.append(found[0])
    if report.pending:
        return report
    items = [i for r in records for i in r.items]
    summary: dict[str, Any] = {
        "hours": sum(i.duration for i in items) / 3600,
        "conversations": sum(i.kind == "stereo" for i in items), "mono": sum(i.kind == "mono" for i in items),
        "text_files": sum(i.kind == "text" for i in items),
        "frames": sum(i.length for i in items if i.kind != "text"),
        "text_tokens": sum(i.length for i in items if i.kind == "text"),
        "skipped_entries": len(problems) if options.skip_invalid else 0,
    }
    index = PreparedIndex(out, codec.identity, str(manifest.resolve()), file_sha256(manifest), records, summary)
    index.write()
    report.index = index
    return report


def is_prepared(manifest: str | Path, out: str | Path, identity: Identity) -> PreparedIndex | None:
    """The index of `out` when it was prepared from this manifest (same content) with this model, else None."""
    try:
        index = read_index(out)
    except PreparedDataError:
        return None
    if index.identity != identity or index.manifest_sha256 != file_sha256(Path(manifest).expanduser()):
        return None
    return index


def ensure_prepared(data: str | Path, files: ModelFiles, out: str | Path | None = None, *,
                    device: str | torch.device | None = None,
                    options: PrepareOptions = PrepareOptions(progress=True)) -> PreparedIndex:
    """The prepared data for the model `files` (its Mimi and tokenizer; the LM is never loaded).

    `data` is a manifest (JSONL, or a .txt list of text files): its prepared folder (`out`, default
    `default_out(data)`) is returned when it matches the manifest's content and the model, else prepared first
    (resuming what is already there). `data` may also be a prepared folder (or its index.json): it is checked
    against the model and returned.

    Raises PrepareError (a dataset with problems, data made with another model) and, in a multi-rank call
    (`options.rank/world_size`), PrepareError when other ranks' chunks are still missing: then synchronise the
    ranks (a barrier) and call again, or call it on one rank while the others wait.
    """
    identity = model_identity(files)
    path = Path(data).expanduser()
    if path.is_dir() or path.name == INDEX_NAME:
        try:
            index = read_index(path)
        except PreparedDataError as err:
            raise PrepareError(str(err)) from None
        diff = index.identity.differences(identity)
        if diff:
            raise PrepareError(f"{index.folder} was prepared with another model ({'; '.join(diff)}): prepare "
                               f"its manifest again with this model's Mimi and tokenizer")
        return index
    out_path = default_out(path) if out is None else Path(out).expanduser()
    index = is_prepared(path, out_path, identity)
    if index is not None:
        return index
    report = prepare(path, out_path, load_codec(files, device, identity), options)
    if report.index is None:
        raise PrepareError(f"{out_path}: {len(report.pending)} chunks of other ranks are not prepared yet "
                           f"({', '.join(report.pending[:3])}...): wait for them, then call again")
    return report.index
