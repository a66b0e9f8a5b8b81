"""Output files that never destroy data: path checks before any work, and atomic writes.

Every command that writes files uses this module:
- `check_outputs(outputs, inputs)` runs before a model loads. Each output must be a file path (not a folder,
  not a device), with the suffix its content needs (`.wav` for audio, `.npz` for codes...), in a folder that
  exists or can be created and is writable; no output may be another output or an input (compared as resolved
  real paths, and by inode where both exist, so symlinks and hard links count). It raises `OutputError`.
- `atomic_output(path)` yields a binary file object on a temporary file in the destination folder; on success
  the file is flushed, fsynced and renamed over `path` (os.replace: atomic on POSIX; a symbolic link is written
  through, its target replaced); on any failure it is removed. A failed or interrupted write therefore leaves
  the old file (or no file) in place, never a torn one.
  `write_bytes`, `write_text` and `save_npz` are built on it (`save_npz` never appends `.npz` to the name,
  unlike `np.savez` given a path).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]

# what an output is checked against: (label for messages, path or None = not written, allowed suffixes)
OutputSpec = tuple[str, "PathLike | None", tuple[str, ...]]


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message says which and why."""


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """(resolved real path, (device, inode) when the file exists)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def _check_one(label: str, raw: PathLike, suffixes: tuple[str, ...]) -> Path:
    """Everything but the suffix (checked last, after collisions)."""
    text = os.fspath(raw)
    if not text.strip():
        raise OutputError(f"{label}: empty path")
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        ending = f" ending in {suffixes[0]}" if suffixes else ""
        raise OutputError(f"{label} {text} is a folder; give a file name{ending}")
    if path.exists():
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OutputError(f"{label} {text} exists and is not a regular file: refusing to replace it")
        if not os.access(path, os.W_OK):
            raise OutputError(f"{label} {text} is read-only")
    folder = path.parent
    ancestor = folder
    while not ancestor.exists():  # the nearest existing folder must let us create the rest
        if ancestor.is_symlink():
            raise OutputError(f"{label} {text}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{label} {text}: cannot create the folder {folder}, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{label} {text}: the folder {ancestor} is not writable")
    return path


def check_outputs(outputs: Iterable[OutputSpec], inputs: Iterable[tuple[str, PathLike | None]] = ()) -> list[Path]:
    """Check every output before any work (see the module docstring); returns the outputs' paths in order
    (None entries skipped). Raises `OutputError`; collisions are reported before a wrong suffix."""
    outputs = list(outputs)
    checked: list[tuple[str, Path, tuple[str, tuple[int, int] | None]]] = []
    for label, raw, suffixes in outputs:
        if raw is None:
            continue
        path = _check_one(label, raw, suffixes)
        ident = _identity(path)
        for other_label, other_path, other_ident in checked:
            if _same(ident, other_ident):
                raise OutputError(f"{label} {raw} and {other_label} {other_path} are the same file: one would "
                                  f"overwrite the other")
        checked.append((label, path, ident))
    for in_label, in_raw in inputs:
        if in_raw is None:
            continue
        in_ident = _identity(Path(os.fspath(in_raw)).expanduser())
        for label, path, ident in checked:
            if _same(ident, in_ident):
                raise OutputError(f"{label} {path} is {in_label} {in_raw}: refusing to overwrite an input "
                                  f"(choose another output path)")
    for (label, raw, suffixes), (_, path, _) in zip([o for o in outputs if o[1] is not None], checked, strict=True):
        if suffixes and path.suffix.lower() not in suffixes:
            raise OutputError(f"{label} {raw}: the file name must end in {' or '.join(suffixes)}")
    return [path for _, path, _ in checked]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary file that replaces `path` only once completely written (see the module docstring)."""
    path = Path(os.fspath(path)).expanduser()
    if path.is_symlink():  # write through the link (the new file replaces its target), as `>` would
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600: give it the old file's mode, else the usual one for a new file
        mode = stat.S_IMODE(os.stat(path).st_mode) if path.is_file() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not possible everywhere (some file systems, Windows)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def save_npz(path: PathLike, **arrays: Any) -> None:
    """np.savez to exactly `path` (no `.npz` appended), atomically."""
    import numpy as np

    with atomic_output(path) as f:
        np.savez(f, **arrays)
