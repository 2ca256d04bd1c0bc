"""Shared fixtures. Every test runs with its own library and cache folders, so no
test ever touches a user's data."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("stance-home")
    monkeypatch.setenv("STANCE_STUDIO_LIBRARY", str(root / "library"))
    if "STANCE_STUDIO_TEST_KEEP_CACHE" not in __import__("os").environ:
        monkeypatch.setenv("STANCE_STUDIO_CACHE", str(root / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    yield


@pytest.fixture
def tiny():
    """A fresh tiny Llama-style base model (built in code, no download)."""
    from stance_studio.core.tiny import tiny_base

    return tiny_base()


@pytest.fixture
def library_path(tmp_path):
    path = tmp_path / "library"
    path.mkdir()
    return path


def make_deltas(base, kinds=("q_proj", "v_proj"), rank=None, scale=0.05, seed=0, include_norm=False):
    """Random deltas on the tiny model's ``kinds`` modules: dense, or low-rank with ``rank``."""
    import torch

    from stance_studio.core.deltas import DenseDelta, LowRankDelta

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in base.model.named_parameters():
        is_norm = include_norm and name.endswith("layernorm.weight")
        if not is_norm and not any(f".{k}." in name for k in kinds):
            continue
        if rank is not None and p.dim() == 2:
            A = torch.randn(rank, p.shape[1], generator=gen) * scale
            B = torch.randn(p.shape[0], rank, generator=gen) * scale
            out[name] = LowRankDelta(A=A, B=B)
        else:
            out[name] = DenseDelta(torch.randn(p.shape, generator=gen) * scale)
    return out


@pytest.fixture
def deltas_factory():
    return make_deltas
