"""`data prepare`: codes and text streams equal a direct computation; resumable; split by rank; model identity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_testutils import small_dataset, tiny_model_folder, write_conversation, write_manifest, write_wav

from openmoshi.cli import main as cli
from openmoshi.data import prepare as prep
from openmoshi.data.manifest import (
    moshi_words,
    read_channels,
    read_manifest,
    read_sidecar,
    read_text_file,
    user_words,
)
from openmoshi.data.prepare import PrepareError, PrepareOptions, ensure_prepared, load_codec, prepare
from openmoshi.data.shards import read_index
from openmoshi.data.text_grid import text_stream
from openmoshi.model_files import resolve_model_files

OPTS = PrepareOptions(chunk_size=2, batch_size=3, block_frames=3, progress=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def codec(model):
    return load_codec(resolve_model_files(str(model), roles=("mimi", "tokenizer")), "cpu")


def _arrays(index):
    return {c.name: np.asarray(index.audio_array(c.name)) for c in index.chunks if any(
        i.kind != "text" for i in c.items)}


def test_codes_and_text_equal_a_direct_computation(tmp_path, codec):
    manifest = small_dataset(tmp_path / "ds", n=5, text=True)
    report = prepare(manifest, tmp_path / "out", codec, OPTS)
    index = report.index
    assert index is not None and report.computed == ["chunk-000000", "chunk-000001", "chunk-000002"]
    ident, mimi, tok = codec.identity, codec.mimi, codec.tokenizer
    q = ident.codebooks
    entries = {e.raw_path: e for e in read_manifest(manifest)}
    kinds = []
    for chunk in index.chunks:
        for item in chunk.items:
            kinds.append(item.kind)
            entry = entries[item.source]
            if item.kind == "text":
                tokens = np.asarray(index.text_array(chunk.name))[item.offset:item.offset + item.length]
                expected = [t for line in read_text_file(entry.path) for t in tok.encode(line)]
                assert tokens.tolist() == expected
                continue
            grid = np.asarray(index.audio_array(chunk.name))[item.offset:item.offset + item.length]
            channels = read_channels(entry.path, mimi.sample_rate)
            for c, signal in enumerate(channels):  # each channel alone, whole file, batch mode
                codes = mimi.encode(torch.from_numpy(signal)[None, None], q)[0].numpy()
                assert grid[:, 1 + c * q:1 + (c + 1) * q].T.tolist() == codes.tolist(), (item.source, c)
            if len(channels) == 1:
                assert (grid[:, 1 + q:] == -1).all()
            words, _ = read_sidecar(entry.sidecar)
            text = text_stream(moshi_words(words, len(channels)), len(grid), ident.frame_rate, tok.encode,
                               ident.text_pad_id, ident.text_epad_id)
            assert grid[:, 0].tolist() == text.tolist()
            assert (grid[:, 0] != ident.text_pad_id).sum() > 3  # words really are there
            user = np.asarray(index.user_text_array(chunk.name))[item.offset:item.offset + item.length]
            if len(channels) == 1:  # no user in single-stream speech
                assert (user == -1).all()
            else:  # the user's words on the same grid, by the same rule
                expected = text_stream(user_words(words, 2), len(grid), ident.frame_rate, tok.encode,
                                       ident.text_pad_id, ident.text_epad_id)
                assert user.tolist() == expected.tolist()
                assert (user > ident.text_pad_id).sum() >= 2 and not np.array_equal(user, grid[:, 0])
            assert item.length == -(-len(channels[0]) // mimi.frame_size)
    assert kinds == ["stereo", "stereo", "mono", "stereo", "stereo", "text"]
    assert index.summary["conversations"] == 4 and index.summary["mono"] == 1


def test_resumes_and_redoes_only_what_changed(tmp_path, codec, monkeypatch):
    manifest = small_dataset(tmp_path / "ds", n=5)
    out = tmp_path / "out"
    real = prep._prepare_chunk
    calls = []

    def crash_on_second(codec_, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill mid-run
        return real(codec_, name, *args, **kwargs)

    monkeypatch.setattr(prep, "_prepare_chunk", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare(manifest, out, codec, OPTS)
    assert not (out / "index.json").exists()
    assert not list((out / "chunks").glob("*.part"))  # nothing torn left behind
    monkeypatch.setattr(prep, "_prepare_chunk", real)
    report = prepare(manifest, out, codec, OPTS)
    assert report.reused == ["chunk-000000"] and report.computed == ["chunk-000001", "chunk-000002"]
    first = _arrays(report.index)
    again = prepare(manifest, out, codec, OPTS)
    assert again.computed == [] and again.index is not None
    write_wav(tmp_path / "ds" / "conv3.wav", 3.0, seed=99)  # a recording replaced
    changed = prepare(manifest, out, codec, OPTS)
    assert changed.computed == ["chunk-000001"]
    after = _arrays(changed.index)
    assert (after["chunk-000000"] == first["chunk-000000"]).all()
    assert not np.array_equal(after["chunk-000001"], first["chunk-000001"])


def test_ranks_split_the_work_and_give_the_same_data(tmp_path, codec):
    manifest = small_dataset(tmp_path / "ds", n=5, text=True)
    single = prepare(manifest, tmp_path / "one", codec, OPTS).index
    r0 = prepare(manifest, tmp_path / "two", codec, PrepareOptions(**{**OPTS.__dict__, "rank": 0, "world_size": 2}))
    assert r0.index is None and r0.computed == ["chunk-000000", "chunk-000002"] and r0.pending == ["chunk-000001"]
    r1 = prepare(manifest, tmp_path / "two", codec, PrepareOptions(**{**OPTS.__dict__, "rank": 1, "world_size": 2}))
    assert r1.computed == ["chunk-000001"] and r1.index is not None
    a, b = _arrays(single), _arrays(r1.index)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert [c.to_dict()["items"] for c in single.chunks] == [c.to_dict()["items"] for c in r1.index.chunks]


def test_data_of_another_model_is_refused(tmp_path, codec):
    manifest = small_dataset(tmp_path / "ds", n=2)
    prepare(manifest, tmp_path / "out", codec, OPTS)
    other = tiny_model_folder(tmp_path / "other", seed=1)
    other_codec = load_codec(resolve_model_files(str(other), roles=("mimi", "tokenizer")), "cpu")
    with pytest.raises(PrepareError, match="another model .*mimi_sha256"):
        prepare(manifest, tmp_path / "out", other_codec, OPTS)


def test_ensure_prepared_prepares_once_beside_the_manifest(tmp_path, model, monkeypatch):
    manifest = small_dataset(tmp_path / "ds", n=3)
    files = resolve_model_files(str(model), roles=("mimi", "tokenizer"))
    index = ensure_prepared(manifest, files, device="cpu", options=OPTS)
    assert index.folder == tmp_path / "ds" / "data.prepared"
    assert read_index(index.folder).identity == index.identity

    def no_load(*args, **kwargs):
        raise AssertionError("already prepared: no model should load")

    monkeypatch.setattr(prep, "load_codec", no_load)
    assert ensure_prepared(manifest, files, device="cpu", options=OPTS).chunks == index.chunks
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines.append(write_conversation(tmp_path / "ds", "new", 1.0, [["hello", [0.1, 0.3], "SPEAKER_MAIN"]]))
    write_manifest(manifest, lines)
    with pytest.raises(AssertionError, match="no model should load"):  # a changed manifest is prepared again
        ensure_prepared(manifest, files, device="cpu", options=OPTS)


def test_cli(tmp_path, model, capsys):
    manifest = small_dataset(tmp_path / "ds", n=3)
    out = tmp_path / "out"
    args = ["data", "prepare", str(manifest), "--model", str(model), "--device", "cpu", "--no-progress",
            "--chunk-size", "2"]
    assert cli([*args, "--out", str(out)]) == 0
    assert "2 chunks prepared, 0 already done" in capsys.readouterr().out
    assert cli([*args, "--out", str(out)]) == 0
    assert "0 chunks prepared, 2 already done" in capsys.readouterr().out
    assert len(read_index(out).chunks) == 2
    # a broken entry: refused (listing it), or skipped on request
    lines = [json.loads(x) for x in manifest.read_text().splitlines()] + [{"path": "gone.wav", "duration": 1.0}]
    write_manifest(manifest, lines)
    assert cli([*args, "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "gone.wav: missing audio file" in err and "--skip-invalid" in err
    assert cli([*args, "--out", str(tmp_path / "o2"), "--skip-invalid"]) == 0
    assert "skipped: " in capsys.readouterr().out
    # an output folder holding other things, a missing model
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli([*args, "--out", str(tmp_path / "busy")]) == 1
    assert "holds other files" in capsys.readouterr().err
    (tmp_path / "busy" / "index.json").write_text("{}")
    assert cli([*args, "--out", str(tmp_path / "busy")]) == 1
    assert "not one of prepared data" in capsys.readouterr().err
    assert cli(["data", "prepare", str(manifest), "--model", str(tmp_path / "nomodel"), "--out", str(out)]) == 1
    assert "nomodel' is neither an existing folder" in capsys.readouterr().err
    assert cli([*args[:-2], "--rank", "2", "--world-size", "2"]) == 2


def test_ensure_prepared_takes_a_prepared_folder_and_checks_its_model(tmp_path, model):
    manifest = small_dataset(tmp_path / "ds", n=2)
    files = resolve_model_files(str(model), roles=("mimi", "tokenizer"))
    index = ensure_prepared(manifest, files, tmp_path / "out", device="cpu", options=OPTS)
    assert ensure_prepared(tmp_path / "out", files).chunks == index.chunks
    assert ensure_prepared(tmp_path / "out" / "index.json", files).chunks == index.chunks
    other = resolve_model_files(str(tiny_model_folder(tmp_path / "other", seed=1)), roles=("mimi", "tokenizer"))
    with pytest.raises(PrepareError, match="prepared with another model .*mimi_sha256"):
        ensure_prepared(tmp_path / "out", other)
    with pytest.raises(PrepareError, match="no prepared data"):
        ensure_prepared(tmp_path / "ds", files)
