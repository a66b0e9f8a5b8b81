"""The per-frame steps make no host syncs: LMGenerator.step and DuplexSession.step (Mimi included).

A host sync is any read of a tensor's value on the host. Two nets catch them, so that the CPU tests see what
would stall a GPU:
- a TorchDispatchMode that sees every aten op, also those called from C++ (`if mask.any():` runs
  `_local_scalar_dense`; `x[mask]` indexes with a bool tensor, which runs nonzero; `nonzero`, `masked_select`,
  `unique` have data-dependent shapes);
- Python-level patches for what never reaches the dispatcher on CPU: `.cpu()`, `.numpy()`, `.tolist()`.
Work outside the step (building caches on the first call, reset/join/leave) is not checked.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from runtime_testutils import build_tiny_repo, single_thread  # noqa: F401
from torch.utils._python_dispatch import TorchDispatchMode

from openmoshi.inference.generator import LMGenerator
from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.session import DuplexSession

pytestmark = pytest.mark.usefixtures("single_thread")
aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default}


class HostSync(AssertionError):
    pass


class _NoSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING:
            raise HostSync(f"host sync: {func}")
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            for index in args[1]:
                if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
                    raise HostSync(f"host sync: {func} with a bool mask (runs nonzero)")
        return func(*args, **kwargs)


@contextlib.contextmanager
def no_host_sync(monkeypatch):
    def sync(*_args, **_kwargs):
        raise HostSync("host sync: a tensor read on the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, sync)
        with _NoSync():
            yield


def test_the_net_catches_each_kind_of_sync(monkeypatch):
    x = torch.arange(6.0)
    mask = x > 2
    for bad in (lambda: x.item() if x.numel() == 1 else x[0].item(), lambda: bool(mask.any()),
                lambda: x[mask], lambda: mask.nonzero(), lambda: torch.nonzero(mask), lambda: x.cpu(),
                lambda: x.tolist(), lambda: x.numpy(), lambda: torch.masked_select(x, mask),
                lambda: torch.unique(x), lambda: torch.where(mask)):
        with no_host_sync(monkeypatch), pytest.raises(HostSync):
            bad()
    with no_host_sync(monkeypatch):  # what the steps do instead is allowed
        torch.where(mask, x, 0.0), x.masked_fill(mask, 0.0), x.gather(0, torch.tensor([1, 2]))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_models(resolve_model_files(str(build_tiny_repo(tmp_path_factory.mktemp("tiny"), seed=3))), "cpu")


def test_generator_step_makes_no_host_sync(models, monkeypatch):
    lm, n_user = models.lm, models.lm.cfg.num_user_codebooks
    user = torch.randint(0, lm.cfg.card, (8, 2, n_user), generator=torch.Generator().manual_seed(0))
    with LMGenerator(lm, 2, seed=0) as gen:
        gen.step(user[0])  # lazily built caches (RoPE frequencies)
        for t in range(1, 8):
            if t == 5:
                gen.reset(torch.tensor([True, False]))
            with no_host_sync(monkeypatch):
                out = gen.step(user[t], torch.tensor([True, t % 3 != 0]))
        assert out is not None and (out.text[0] >= 0)


def test_session_step_makes_no_host_sync(models, monkeypatch):
    fs = models.mimi.frame_size
    frames = 0.3 * torch.randn(10, 3, 1, fs, generator=torch.Generator().manual_seed(1))
    with DuplexSession(models.mimi, models.lm, 3, seed=0, start_all=False) as s:
        s.join([0, 1])
        s.step(frames[0])  # lazily built caches
        for t in range(1, 10):
            if t == 3:
                s.join(2)  # a fresh row: the priming step runs inside the next step
            if t == 6:
                s.leave(0)
            if t == 8:
                s.reset(1)
            with no_host_sync(monkeypatch):
                out = s.step(frames[t] if t != 4 else None)
        assert (out.audio[2] >= 0).all() and out.pcm[2].abs().sum() > 0
