"""Reading safetensors files tensor by tensor, without mmap, for the strict checkpoint loaders.

Why not `safetensors.safe_open`: its mmap'd pages count as resident once touched, so copying a 15 GB checkpoint
into a model would peak at twice its size. Here the header is parsed first (the loaders check every name and
shape before reading any data), then each tensor is read into a fresh buffer and copied into place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the offending tensors."""


def read_header(f: BinaryIO, path: str | Path) -> tuple[dict[str, dict], int]:
    """The header {name: {dtype, shape, data_offsets}} (metadata dropped) and the offset where the data starts."""
    raw = f.read(8)
    if len(raw) != 8:
        raise CheckpointError(f"{path} is not a safetensors file (too short)")
    size = int.from_bytes(raw, "little")
    if not 0 < size < 100_000_000:
        raise CheckpointError(f"{path} is not a safetensors file (header size {size})")
    try:
        header = json.loads(f.read(size))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a safetensors file (bad header: {e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a mapping)")
    header.pop("__metadata__", None)
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES or "shape" not in info \
                or "data_offsets" not in info:
            raise CheckpointError(f"{path}: tensor {name} has an unsupported entry {info!r}")
    return header, 8 + size


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
    """(name, getter) pairs; each getter reads its tensor when called, so one tensor is in memory at a time."""
    for name, info in header.items():
        yield name, (lambda name=name, info=info: read_tensor(f, name, info, data_start, path))
