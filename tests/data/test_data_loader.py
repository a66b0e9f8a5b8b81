"""The loader: batches on the model's grid, deterministic from a seed, ranks, text-only batches, the held-out
split, and resumption equal to an uninterrupted run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from data_testutils import small_dataset, tiny_model_folder

from openmoshi.data.loader import LMBatch, LMDataLoader, LoaderConfig
from openmoshi.data.prepare import PrepareOptions, load_codec, prepare
from openmoshi.model_files import resolve_model_files
from openmoshi.testing.kyutai import tiny_lm_config

T = 16


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    codec = load_codec(resolve_model_files(str(tiny_model_folder(root / "model")), roles=("mimi", "tokenizer")),
                       "cpu")
    manifest = small_dataset(root / "ds", n=6, text=True)
    index = prepare(manifest, root / "out", codec, PrepareOptions(chunk_size=4, progress=False)).index
    text_list = root / "ds" / "texts.txt"
    text_list.write_text("books.txt\n")
    text_index = prepare(text_list, root / "text_out", codec, PrepareOptions(progress=False)).index
    return index, text_index


def cfg(**kw) -> LoaderConfig:
    return LoaderConfig.for_model(tiny_lm_config(), **{"batch_size": 2, "frames": T, **kw})


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def grids(index):
    """source -> (its grid [F, 1 + 2Q], kind)."""
    out = {}
    for c in index.chunks:
        for i in c.items:
            if i.kind != "text":
                out[i.source] = (np.asarray(index.audio_array(c.name))[i.offset:i.offset + i.length], i.kind)
    return out


def locate(row: np.ndarray, index, t: int = T) -> tuple[str, int]:
    """(source, start) of the conversation window a batch row [K, T] was cut from; asserts there is one."""
    q = index.identity.codebooks
    for source, (grid, _) in grids(index).items():
        model_rows = np.concatenate([grid[:, :1 + 8], grid[:, 1 + q:1 + q + 8]], axis=1).T  # [17, F]
        for start in range(max(1, len(grid) - t + 1)):
            window = np.full((17, t), -1)
            part = model_rows[:, start:start + t]
            window[:, :part.shape[1]] = part
            if np.array_equal(window, row):
                return source, start
    raise AssertionError("a batch row is no window of any conversation")


def test_batches_are_windows_of_the_conversations(prepared):
    index, _ = prepared
    batches = take(LMDataLoader(index, cfg(frames=T)), 6)
    kinds = dict((s, k) for s, (_, k) in grids(index).items())
    for batch in batches:
        assert isinstance(batch, LMBatch) and batch.codes.shape == (2, 17, T) and str(batch.codes.dtype) == \
            "torch.int64" and not batch.text_only
        for row in batch.codes.numpy():
            source, _ = locate(row, index)
            if kinds[source] == "mono":
                assert (row[9:] == -1).all()
            else:
                assert (row[9:] >= 0).all()


def test_shorter_conversations_are_padded_with_minus_one(prepared):
    index, _ = prepared
    padded = 0
    for batch in take(LMDataLoader(index, cfg(frames=40)), 6):
        for row in batch.codes.numpy():
            source, start = locate(row, index, 40)
            length = len(grids(index)[source][0])
            if length < 40:
                padded += 1
                assert start == 0 and (row[:, length:] == -1).all() and (row[:9, :length] != -1).all()
    assert padded >= 2


def test_deterministic_from_the_seed_and_an_epoch_covers_every_crop(prepared):
    index, _ = prepared
    a = [b.codes for b in take(LMDataLoader(index, cfg(seed=3)), 8)]
    b = [b.codes for b in take(LMDataLoader(index, cfg(seed=3)), 8)]
    c = [b.codes for b in take(LMDataLoader(index, cfg(seed=4)), 8)]
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any(not (x == y).all() for x, y in zip(a, c, strict=True))
    loader = LMDataLoader(index, cfg(batch_size=1))
    n = loader.batches_per_epoch()
    expected = sorted(s for s, (g, _) in grids(index).items() for _ in range(max(1, len(g) // T)))
    seen = sorted(locate(b.codes[0].numpy(), index)[0] for b in take(loader, n))
    assert seen == expected and loader.epoch == 1 and loader.batch == 0


def test_ranks_share_an_epoch_without_overlap(prepared):
    from collections import Counter

    index, _ = prepared
    expected = Counter(s for s, (g, _) in grids(index).items() for _ in range(max(1, len(g) // T)))
    total = sum(expected.values())
    seen: Counter = Counter()
    for rank in range(2):
        loader = LMDataLoader(index, cfg(batch_size=1, rank=rank, world_size=2))
        assert loader.batches_per_epoch() == total // 2
        seen.update(locate(b.codes[0].numpy(), index)[0] for b in take(loader, total // 2))
    assert sum(seen.values()) == 2 * (total // 2) and not seen - expected  # no crop twice, none invented


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_resuming_mid_epoch_equals_an_uninterrupted_run(prepared, share):
    index, _ = prepared
    config = cfg(seed=7, text_only_share=share)
    full = [b.codes for b in take(LMDataLoader(index, config), 12)]
    first = LMDataLoader(index, config)
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    resumed = LMDataLoader(index, config)
    resumed.load_state_dict(state)
    rest = [b.codes for b in take(resumed, 7)]
    assert all((x == y).all() for x, y in zip(full[5:], rest, strict=True))
    assert LMDataLoader(index, config).batches_per_epoch() < 12  # the run crossed an epoch boundary
    with pytest.raises(ValueError, match="other data or another loader config"):
        LMDataLoader(index, cfg(seed=8)).load_state_dict(state)


def test_the_state_is_the_same_on_every_rank_and_survives_a_new_world_size(prepared):
    index, _ = prepared
    loaders = [LMDataLoader(index, cfg(batch_size=1, rank=r, world_size=2)) for r in range(2)]
    for loader in loaders:
        take(loader, 3)
    assert loaders[0].state_dict() == loaders[1].state_dict()
    state = loaders[0].state_dict()
    one = LMDataLoader(index, cfg(batch_size=1))  # one rank now: the 3 batches of 2 ranks were 6 crops
    one.load_state_dict(state)
    assert (one.epoch, one.batch, one.step) == (state["epoch"], 6, 3)


def test_text_only_batches(prepared):
    index, text_index = prepared
    batches = take(LMDataLoader(index, cfg(text_only_share=0.5)), 40)
    text = [b for b in batches if b.text_only]
    assert 8 <= len(text) <= 32
    packed = np.asarray(index.text_array([c.name for c in index.chunks if any(i.kind == "text" for i in c.items)][0]))
    for b in text:
        codes = b.codes.numpy()
        assert (codes[:, 1:] == -1).all()
        for row in codes[:, 0]:
            assert any(np.array_equal(row, packed[s:s + T]) for s in range(len(packed) - T + 1))
    only = take(LMDataLoader(text_index, cfg()), 3)
    assert all(b.text_only for b in only)
    with pytest.raises(ValueError, match="no text files"):
        LMDataLoader(_without_text(index), cfg(text_only_share=0.5))


def _without_text(index):
    import copy

    clone = copy.deepcopy(index)
    for c in clone.chunks:
        c.items = [i for i in c.items if i.kind != "text"]
    return clone


def test_validation_split_is_held_out_and_stable(prepared):
    index, _ = prepared
    train = LMDataLoader(index, cfg(val_share=0.3))
    val = LMDataLoader(index, cfg(val_share=0.3, seed=5), split="val")
    train_src = {i.source for _, i in train.items}
    val_src = {i.source for _, i in val.items}
    assert val_src and train_src and not train_src & val_src
    assert len(train_src | val_src) == 6
    batches = list(val)
    windows = sum(-(-i.length // T) for _, i in val.items)
    assert sum(b.codes.shape[0] for b in batches) == windows
    assert [b.codes for b in batches][0].equal(list(LMDataLoader(index, cfg(val_share=0.3), split="val"))[0].codes)
    for b in take(train, 5):
        for row in b.codes.numpy():
            assert locate(row, index)[0] in train_src
    # two ranks: the same number of batches each
    per_rank = [len(list(LMDataLoader(index, cfg(val_share=0.3, rank=r, world_size=2), split="val")))
                for r in range(2)]
    assert per_rank[0] == per_rank[1] >= 1


def test_config_checks(prepared):
    index, _ = prepared
    with pytest.raises(ValueError, match="holds 8 codebooks per side"):
        LMDataLoader(index, LoaderConfig(moshi_codebooks=9))
    with pytest.raises(ValueError, match="rank"):
        LoaderConfig(rank=2, world_size=2)
    assert LoaderConfig.for_model(tiny_lm_config()).num_streams == 17
    assert LoaderConfig.for_model(tiny_lm_config(dep_q=16)).num_streams == 17


def test_batches_feed_the_model_and_its_loss(prepared):
    """The grid is what LMModel.forward and lm_loss take: in-range tokens, a finite loss, text-only too."""
    import torch

    from openmoshi.lm.loss import LossConfig, lm_loss
    from openmoshi.lm.model import LMModel

    index, _ = prepared
    lm_cfg = tiny_lm_config()
    model = LMModel(lm_cfg)
    model.init_weights()
    batches = take(LMDataLoader(index, LoaderConfig.for_model(lm_cfg, batch_size=2, frames=T, text_only_share=0.5,
                                                              seed=1)), 6)
    assert {b.text_only for b in batches} == {False, True}
    for batch in batches:
        codes = batch.codes
        assert codes[:, 0].max() < lm_cfg.text_card and codes[:, 1:].max() < lm_cfg.card
        with torch.no_grad():
            loss = lm_loss(model(codes), codes, LossConfig.for_model(lm_cfg))
        assert torch.isfinite(loss.total), (batch.text_only, loss)


def test_user_text_comes_cropped_with_its_window(prepared):
    """`user_text=True`: each row's user words are the same frames of the same conversation as its codes (-1 in
    mono, past the end, and in text-only batches); the crops are those of a loader without it."""
    index, _ = prepared
    users = {}
    for c in index.chunks:
        for i in c.items:
            if i.kind != "text":
                users[i.source] = np.asarray(index.user_text_array(c.name))[i.offset:i.offset + i.length]
    plain = take(LMDataLoader(index, cfg(frames=24, text_only_share=0.3)), 10)
    with_user = take(LMDataLoader(index, cfg(frames=24, text_only_share=0.3, user_text=True)), 10)
    assert all(b.user_text is None for b in plain)
    seen_words = 0
    for a, b in zip(plain, with_user, strict=True):
        assert np.array_equal(a.codes.numpy(), b.codes.numpy()) and a.text_only == b.text_only
        assert b.user_text.shape == (b.codes.shape[0], 24) and str(b.user_text.dtype) == "torch.int64"
        if b.text_only:
            assert (b.user_text == -1).all()
            continue
        for row, user in zip(b.codes.numpy(), b.user_text.numpy(), strict=True):
            source, start = locate(row, index, 24)
            expected = np.full(24, -1)
            part = users[source][start:start + 24]
            expected[:len(part)] = part
            assert user.tolist() == expected.tolist()
            seen_words += int((user > 3).sum())
    assert seen_words > 0
    # the option changes no batch, so a position saved without it resumes with it
    loader = LMDataLoader(index, cfg(frames=24, user_text=True))
    loader.load_state_dict(LMDataLoader(index, cfg(frames=24)).state_dict())
