import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stance_studio.core import checkpoints
from stance_studio.core.checkpoints import (
    FORMAT,
    SUFFIX,
    check_compatible,
    load_checkpoint,
    make_checkpoint,
    read_header,
    save_checkpoint,
)
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import CheckpointError, IncompatibleBaseError, ShapeMismatchError
from stance_studio.core.tiny import tiny_base


def test_dense_round_trip_is_exact(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, include_norm=True)
    ckpt = make_checkpoint("curious", deltas, tiny, training={"method": "full", "loss": [2.0, 1.5]})
    path = save_checkpoint(ckpt, tmp_path / f"curious{SUFFIX}")
    back = load_checkpoint(path)
    assert set(back.deltas) == set(deltas)
    for name, delta in deltas.items():
        assert isinstance(back.deltas[name], DenseDelta)
        assert torch.equal(back.deltas[name].tensor, delta.tensor)
    assert back.training["loss"] == [2.0, 1.5]
    assert back.base["fingerprint"] == tiny.fingerprint(list(deltas))
    assert back.base["model"] == tiny.model_id


def test_low_rank_round_trip_keeps_factors(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, rank=3)
    path = save_checkpoint(make_checkpoint("lr", deltas, tiny), tmp_path / f"lr{SUFFIX}")
    back = load_checkpoint(path)
    for name, delta in deltas.items():
        got = back.deltas[name]
        assert isinstance(got, LowRankDelta) and got.rank == 3
        assert torch.equal(got.A, delta.A) and torch.equal(got.B, delta.B)
    # factors are stored, not the dense product: the file is small
    dense_bytes = sum(d.materialize().numel() * 4 for d in deltas.values())
    assert path.stat().st_size < dense_bytes


def test_metadata_is_json_strings_with_format(tiny, deltas_factory, tmp_path):
    path = save_checkpoint(make_checkpoint("x", deltas_factory(tiny), tiny, metrics={"retention": 0.9}), tmp_path / "x.stance.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["format"] == FORMAT
    assert json.loads(meta["metrics"]) == {"retention": 0.9}
    assert all(k.endswith(":delta") for k in keys)


def test_non_finite_checkpoint_is_never_written(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny)
    name = next(iter(deltas))
    bad = deltas[name].tensor.clone()
    bad[0, 0] = float("nan")
    deltas[name] = DenseDelta(bad)
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(make_checkpoint("bad", deltas, tiny), tmp_path / "bad.stance.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_refuses_other_base(tiny, deltas_factory, tmp_path):
    other = tiny_base(seed=1)
    ckpt = make_checkpoint("s", deltas_factory(tiny), tiny)
    with pytest.raises(IncompatibleBaseError) as err:
        check_compatible(ckpt, other)
    assert "tiny" in str(err.value) and "tiny:1" in str(err.value)
    check_compatible(ckpt, other, allow_mismatch=True)  # the transfer override
    check_compatible(ckpt, tiny)


def test_wrong_shape_is_refused_naming_both(tiny, tmp_path):
    big = tiny_base(hidden=48)
    name = "model.layers.0.self_attn.q_proj.weight"
    ckpt = make_checkpoint("wide", {name: DenseDelta(torch.zeros(48, 48))}, big)
    with pytest.raises(ShapeMismatchError) as err:
        check_compatible(ckpt, tiny, allow_mismatch=True)
    assert "(48, 48)" in str(err.value) and "(32, 32)" in str(err.value)


@pytest.mark.parametrize("cut", [8, 100, -10])
def test_truncated_file_is_a_clear_error(tiny, deltas_factory, tmp_path, cut):
    path = save_checkpoint(make_checkpoint("t", deltas_factory(tiny), tiny), tmp_path / "t.stance.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_pickle_files_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)


def test_foreign_safetensors_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a Stance Studio checkpoint"):
        read_header(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.stance.safetensors"):
        load_checkpoint(tmp_path / "nowhere.stance.safetensors")


def test_cancelled_write_leaves_no_partial_file(tiny, deltas_factory, tmp_path, monkeypatch):
    import stance_studio.core.checkpoints as mod

    def boom(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(make_checkpoint("c", deltas_factory(tiny), tiny), tmp_path / "c.stance.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_has_the_usual_permissions(tiny, deltas_factory, tmp_path, monkeypatch):
    """A library can be shared: the file gets the mode of any new file (umask), not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(0o022)
    monkeypatch.setattr(checkpoints, "_UMASK", 0o022)
    try:
        path = save_checkpoint(make_checkpoint("shared", deltas_factory(tiny), tiny), tmp_path / f"shared{SUFFIX}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
