"""Reading safetensors files tensor by tensor, without mmap, for the strict checkpoint loaders.

The strict-loading engine (`openmoshi.checkpoint`) reads files through `open_safetensors` and `lazy_tensors`.
Why not `safetensors.safe_open`: its mmap'd pages count as resident once touched, so copying a 15 GB checkpoint
into a model would peak at twice its size. Here the header is parsed first (the loaders check every name and
shape before reading any data), then each tensor is read into a fresh buffer and copied into place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the offending tensors.

    The one error type of checkpoint loading: defined here (the lowest layer) and exported by
    `openmoshi.checkpoint`, the strict-loading engine, where callers import it from.
    """

__all__ = ["CheckpointError", "DTYPES", "read_header", "open_safetensors", "read_tensor", "lazy_tensors"]

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_header(f: BinaryIO, path: str | Path) -> tuple[dict[str, dict], int]:
    """The header {name: {dtype, shape, data_offsets}} (metadata dropped) and the offset where the data starts.

    Every entry is checked against the file: a known dtype, a shape of non-negative ints, data offsets whose
    length is the shape's bytes, inside the file and not overlapping another tensor's. A file that fails any
    check is a CheckpointError naming the tensor (never a traceback from a reshape later).
    """
    f.seek(0, 2)
    file_size = f.tell()
    f.seek(0)
    raw = f.read(8)
    if len(raw) != 8:
        raise CheckpointError(f"{path} is not a safetensors file (too short)")
    size = int.from_bytes(raw, "little")
    if not 0 < size < 100_000_000 or 8 + size > file_size:
        raise CheckpointError(f"{path} is not a safetensors file (header size {size}, file size {file_size})")
    try:
        header = json.loads(f.read(size))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a safetensors file (bad header: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a mapping)")
    header.pop("__metadata__", None)
    data_start = 8 + size
    spans = []
    for name, info in header.items():
        problem = _entry_problem(info)
        if problem is None:
            begin, end = info["data_offsets"]
            if data_start + end > file_size:
                problem = f"its data ends at byte {data_start + end}, past the end of the file ({file_size} bytes)"
        if problem:
            raise CheckpointError(f"{path}: tensor {name}: {problem} (a corrupt or truncated safetensors file)")
        spans.append((info["data_offsets"][0], info["data_offsets"][1], name))
    spans.sort()
    for (_, end_a, a), (begin_b, end_b, b) in zip(spans, spans[1:], strict=False):
        if begin_b < end_a and end_b > begin_b:
            raise CheckpointError(f"{path}: tensors {a} and {b} overlap in the file (a corrupt safetensors file)")
    return header, data_start


def _entry_problem(info: object) -> str | None:
    """Why a header entry is malformed (None when it is fine)."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        return f"malformed entry {info!r}"
    if info["dtype"] not in DTYPES:
        return f"unsupported dtype {info['dtype']!r} (supported: {', '.join(DTYPES)})"
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return f"bad shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"bad data offsets {offsets!r}"
    need = math.prod(shape) * DTYPES[info["dtype"]].itemsize
    if offsets[1] - offsets[0] != need:
        return (f"data offsets {offsets} span {offsets[1] - offsets[0]} bytes, but shape {shape} of "
                f"{info['dtype']} needs {need}")
    return None


@contextmanager
def open_safetensors(path: str | Path) -> Iterator[tuple[BinaryIO, dict[str, dict], int]]:
    """(open file, checked header, data start) of a safetensors file; the file is closed afterwards.

    FileNotFoundError for a missing file; CheckpointError for one that cannot be read or is not safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix not in (".safetensors", ".sft"):
        raise CheckpointError(f"only safetensors checkpoints are supported, got {path.name}")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{path} is not readable: {e}") from None
    with f:
        try:
            header, data_start = read_header(f, path)
        except OSError as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
        yield f, header, data_start


def read_tensor(f: BinaryIO, name: str, info: dict, data_start: int, path: str | Path) -> torch.Tensor:
    """One tensor of the file, read into its own buffer (CPU)."""
    begin, end = info["data_offsets"]
    buf = bytearray(end - begin)
    f.seek(data_start + begin)
    if f.readinto(buf) != len(buf):
        raise CheckpointError(f"{path} is truncated (tensor {name})")
    dtype = DTYPES[info["dtype"]]
    if not buf:
        return torch.empty(info["shape"], dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).view(info["shape"])


def lazy_tensors(f: BinaryIO, header: dict[str, dict], data_start: int,
                 path: str | Path) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """(name, getter) pairs in file order; each getter reads its tensor when called (one in memory at a time)."""
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        yield name, (lambda name=name, info=info: read_tensor(f, name, info, data_start, path))
