"""The prepared format: per-chunk NumPy `.npy` arrays and JSON records, tied together by `index.json`.

Why `.npy`: a standard, self-describing array format that every tool reads without our code, that holds no
pickled objects (read with allow_pickle=False), and that `np.load(mmap_mode="r")` maps from disk, so a random
crop reads only its own pages and a dataset far larger than memory streams from disk at no cost.

Layout of OUT/ (docs/data.md):
- `chunks/chunk-NNNNNN.audio.npy`: int32 [F, 1 + 2Q], the chunk's audio entries one after another on the frame
  grid (time-major, so a crop is one contiguous block): column 0 = Moshi's text stream, 1..Q = Moshi's Mimi
  codes, Q+1..2Q = the user's (-1 for single-stream speech);
- `chunks/chunk-NNNNNN.user_text.npy`: int32 [F], the same rows' USER words laid on the grid by the text-stream
  rule (-1 for single-stream speech): the target of the trainer's auxiliary transcript loss, never an input;
- `chunks/chunk-NNNNNN.text.npy`: int32 [N], the chunk's text files' tokens, packed (only if it has any);
- `chunks/chunk-NNNNNN.json`: the chunk's items (kind, source, offset, length, duration), its fingerprint (the
  entries and their files' sizes and times, plus the model identity): written last, its presence = done;
- `index.json`: the identity (Mimi and tokenizer sha256, codebooks, frame rate, PAD/EPAD), the manifest's sha256,
  and the list of chunks with their items; written once every chunk is there.
Every file is written atomically (`io_safety`), so an interrupted run leaves whole chunks or none.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io_safety import atomic_output, write_text

FORMAT = "openmoshi-lm-data"
VERSION = 2  # 2: the user_text arrays
INDEX_NAME = "index.json"
CHUNK_DIR = "chunks"

ItemKind = Literal["stereo", "mono", "text"]


class PreparedDataError(ValueError):
    """A prepared folder that cannot be used (missing, damaged, or made with another model)."""


@dataclass(frozen=True)
class Identity:
    """What prepared data depends on: a different Mimi or tokenizer gives different tokens, so it is refused."""

    mimi_sha256: str
    tokenizer_sha256: str
    codebooks: int  # Mimi codebooks stored per side (Q)
    card: int  # codebook size
    frame_rate: float
    sample_rate: int
    text_pad_id: int
    text_epad_id: int
    main_speaker: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Identity:
        try:
            return cls(**raw)
        except TypeError as err:
            raise PreparedDataError(f"bad identity record {raw}: {err}") from None

    def differences(self, other: Identity) -> list[str]:
        """'field: ours vs theirs' for each field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class Item:
    """One prepared entry: where its rows are in its chunk's array (frames, or tokens for text)."""

    kind: ItemKind
    source: str  # the manifest's path string
    line: int  # its manifest line
    offset: int
    length: int  # frames (audio) or tokens (text)
    duration: float  # seconds of audio (0 for text)


@dataclass
class ChunkRecord:
    name: str
    fingerprint: str
    items: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ChunkRecord:
        return cls(raw["name"], raw["fingerprint"], [Item(**i) for i in raw["items"]])


def chunk_name(number: int) -> str:
    return f"chunk-{number:06d}"


def chunk_paths(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """(audio .npy, text .npy, record .json) of a chunk."""
    base = folder / CHUNK_DIR / name
    return base.with_name(f"{name}.audio.npy"), base.with_name(f"{name}.text.npy"), base.with_name(f"{name}.json")


def user_text_path(folder: Path, name: str) -> Path:
    """The chunk's user-words array (beside its audio array)."""
    return folder / CHUNK_DIR / f"{name}.user_text.npy"


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as f:
        np.save(f, array, allow_pickle=False)


def write_chunk(folder: Path, record: ChunkRecord, identity: Identity, audio: np.ndarray | None,
                text: np.ndarray | None, user_text: np.ndarray | None = None) -> None:
    """The chunk's arrays, then its record (last: its presence marks the chunk done). `user_text` [F] goes with
    `audio` [F, 1 + 2Q] (both or neither)."""
    audio_path, text_path, record_path = chunk_paths(folder, record.name)
    if (audio is None) != (user_text is None) or (audio is not None and len(audio) != len(user_text)):
        raise ValueError("a chunk's user_text must have one row per audio row")
    if audio is not None:
        save_npy(audio_path, audio.astype(np.int32, copy=False))
        save_npy(user_text_path(folder, record.name), user_text.astype(np.int32, copy=False))
    if text is not None:
        save_npy(text_path, text.astype(np.int32, copy=False))
    write_text(record_path, json.dumps({"identity": identity.to_dict(), **record.to_dict()}, indent=1))


def read_chunk_record(folder: Path, name: str) -> tuple[ChunkRecord, Identity] | None:
    """A finished chunk's record and identity; None when it is missing or unreadable (to be redone)."""
    path = chunk_paths(folder, name)[2]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ChunkRecord.from_dict(raw), Identity.from_dict(raw["identity"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class PreparedIndex:
    """`index.json`: a prepared dataset, ready for the loader."""

    folder: Path
    identity: Identity
    manifest: str
    manifest_sha256: str
    chunks: list[ChunkRecord]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "identity": self.identity.to_dict(),
                "manifest": self.manifest, "manifest_sha256": self.manifest_sha256, "summary": self.summary,
                "chunks": [c.to_dict() for c in self.chunks]}

    def write(self) -> None:
        write_text(self.folder / INDEX_NAME, json.dumps(self.to_dict(), indent=1))

    def audio_array(self, chunk: str) -> np.ndarray:
        """The chunk's audio array [F, 1 + 2Q], memory-mapped (read-only)."""
        return _load(chunk_paths(self.folder, chunk)[0])

    def user_text_array(self, chunk: str) -> np.ndarray:
        """The chunk's user words on the grid [F] (rows as in `audio_array`), memory-mapped (read-only)."""
        return _load(user_text_path(self.folder, chunk))

    def text_array(self, chunk: str) -> np.ndarray:
        """The chunk's packed text tokens [N], memory-mapped (read-only)."""
        return _load(chunk_paths(self.folder, chunk)[1])


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise PreparedDataError(f"cannot read prepared array {path} ({err}): prepare the dataset again") from None


def read_index(folder: str | Path) -> PreparedIndex:
    """The index of a prepared folder (or of its index.json given directly). PreparedDataError."""
    folder = Path(folder).expanduser()
    path = folder if folder.suffix == ".json" else folder / INDEX_NAME
    folder = path.parent
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PreparedDataError(f"no prepared data at {folder} ({INDEX_NAME} missing): run `openmoshi data "
                                f"prepare MANIFEST --out {folder}`") from None
    except (OSError, ValueError) as err:
        raise PreparedDataError(f"cannot read {path} ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PreparedDataError(f"{path} is not an index of prepared data (format {FORMAT!r})")
    if raw.get("version") != VERSION:
        raise PreparedDataError(f"{path} has format version {raw.get('version')}, this openmoshi reads {VERSION}: "
                                f"prepare the dataset again")
    try:
        return PreparedIndex(folder, Identity.from_dict(raw["identity"]), raw["manifest"], raw["manifest_sha256"],
                             [ChunkRecord.from_dict(c) for c in raw["chunks"]], raw.get("summary", {}))
    except (KeyError, TypeError) as err:
        raise PreparedDataError(f"{path} is damaged ({err}): prepare the dataset again") from None
