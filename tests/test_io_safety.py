"""Output-path checks and atomic writes (openmoshi/io_safety.py): nothing a command writes can destroy a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from openmoshi.io_safety import OutputError, atomic_output, check_outputs, save_npz, write_text

WAV = (".wav",)


def test_good_outputs_pass_and_missing_folders_are_allowed(tmp_path: Path) -> None:
    (tmp_path / "in.wav").write_bytes(b"x")
    paths = check_outputs([("--output", tmp_path / "new" / "deeper" / "o.wav", WAV), ("--json", None, (".json",)),
                           ("--srt", tmp_path / "o.srt", (".srt",))], [("--input", tmp_path / "in.wav")])
    assert paths == [tmp_path / "new" / "deeper" / "o.wav", tmp_path / "o.srt"]
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "sub", "is a folder"),  # an existing folder
    (lambda d: str(d / "nothing") + "/", "is a folder"),  # a path written as a folder
    (lambda d: d / "o.mp3", "must end in .wav"),
    (lambda d: d / "o", "must end in .wav"),
    (lambda d: d / "o.wav.npz", "must end in .wav"),
    (lambda d: d / "file.txt" / "o.wav", "is a file"),  # its folder would have to be a file
    (lambda d: "", "empty path"),
])
def test_bad_output_paths(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("keep")
    with pytest.raises(OutputError, match=message):
        check_outputs([("--output", make(tmp_path), WAV)])


def test_a_device_is_never_replaced() -> None:
    with pytest.raises(OutputError, match="not a regular file"):
        check_outputs([("--output", "/dev/null", ())])


def test_collisions_between_outputs_and_with_inputs(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(b"recording")
    (tmp_path / "sym.wav").symlink_to(src)
    os.link(src, tmp_path / "hard.wav")
    any_suffix = (".wav", ".json")
    with pytest.raises(OutputError, match="same file"):
        check_outputs([("--output", tmp_path / "o.wav", any_suffix), ("--text-json", tmp_path / "o.wav", any_suffix)])
    with pytest.raises(OutputError, match="same file"):  # the same file written two ways
        check_outputs([("--output", tmp_path / "o.wav", WAV), ("--b", tmp_path / "x" / ".." / "o.wav", WAV)])
    for alias in ("in.wav", "sym.wav", "hard.wav", "./in.wav"):
        with pytest.raises(OutputError, match="refusing to overwrite"):
            check_outputs([("--output", tmp_path / alias, WAV)], [("--input", src)])
    with pytest.raises(OutputError, match="refusing to overwrite"):  # the input given through the link
        check_outputs([("--output", src, WAV)], [("--input", tmp_path / "sym.wav")])
    assert src.read_bytes() == b"recording"


def test_atomic_write_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "words.json"
    target.write_text("old")
    os.chmod(target, 0o640)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_output(target) as f:
        f.write(b"half of the new cont")
        raise Boom  # the write fails midway
    assert target.read_text() == "old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["words.json"]  # and no temporary file is left
    write_text(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640  # the mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["words.json"]


def test_atomic_write_creates_the_folder_and_a_readable_file(tmp_path: Path) -> None:
    write_text(tmp_path / "a" / "b" / "t.srt", "1\n")
    assert (tmp_path / "a" / "b" / "t.srt").read_text() == "1\n"
    assert (tmp_path / "a" / "b" / "t.srt").stat().st_mode & 0o444 == 0o444 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_npz_writes_exactly_the_path(tmp_path: Path) -> None:
    save_npz(tmp_path / "tokens.bin", a=np.arange(3))  # np.savez would write tokens.bin.npz
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.bin"]
    np.testing.assert_array_equal(np.load(tmp_path / "tokens.bin")["a"], np.arange(3))


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write_text(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
