import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stance_studio.core import checkpoints
from stance_studio.core.checkpoints import (
    FORMAT,
    SUFFIX,
    load_checkpoint,
    make_checkpoint,
    read_header,
    save_checkpoint,
)
from stance_studio.core.compatibility import check_compatible, compatibility
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


def _header_length(path) -> int:
    return int.from_bytes(Path(path).read_bytes()[:8], "little")


@pytest.mark.parametrize("residue, modulus, first", [(128, 256, b"\x80"), (0x4B50, 1 << 16, b"PK")])
def test_a_header_length_that_looks_like_pickle_or_zip_still_loads(tiny, residue, modulus, first, tmp_path):
    """The 8-byte header length can start with 0x80 or "PK"; the file is still safetensors."""
    name = "model.layers.0.self_attn.q_proj.weight"
    deltas = {name: DenseDelta(torch.full((32, 32), 0.01))}
    path = tmp_path / f"padded{SUFFIX}"

    def write(pad: int) -> int:
        save_checkpoint(make_checkpoint("padded", deltas, tiny, stance={"note": "x" * pad}), path)
        return _header_length(path)

    length = write(0)
    target = length + (residue - length) % modulus
    assert write(target - length) == target
    assert path.read_bytes().startswith(first)
    back = load_checkpoint(path)
    assert torch.equal(back.deltas[name].tensor, deltas[name].tensor)
    assert read_header(path)["stance"]["note"].startswith("x")


@pytest.mark.parametrize("writer", [
    lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4)),
    lambda p: torch.save({"w": torch.zeros(2)}, p),
])
def test_pickle_or_zip_content_is_refused_whatever_the_name(writer, tmp_path):
    path = tmp_path / f"disguised{SUFFIX}"
    writer(path)
    with pytest.raises(CheckpointError, match="never unpickles") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def write_raw(path, tensors, **fields):
    """A checkpoint file written by hand, for layouts save_checkpoint never makes."""
    metadata = {"format": FORMAT, "name": path.name, **fields}
    save_file(tensors, str(path), metadata=metadata)
    return path


Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("tensors, problem", [
    ({f"{Q}:A": torch.zeros(2, 32), f"{Q}:B": torch.zeros(32, 3)}, r"A is \(2, 32\), B is \(32, 3\)"),
    ({f"{Q}:A": torch.zeros(2, 32)}, r"needs .*:delta' alone or the pair"),
    ({f"{Q}:delta": torch.zeros(32, 32), f"{Q}:A": torch.zeros(2, 32), f"{Q}:B": torch.zeros(32, 2)}, "alone or the pair"),
    ({f"{Q}:weight": torch.zeros(32, 32)}, r"is not named 'P:delta'"),
    ({Q: torch.zeros(32, 32)}, r"is not named 'P:delta'"),
])
def test_bad_tensor_layout_is_refused_from_the_header(tensors, problem, tmp_path, monkeypatch):
    """The library lists only files that open, yet reads headers only: the check reads no data."""
    path = write_raw(tmp_path / f"bad{SUFFIX}", tensors)
    real_open = checkpoints.safe_open

    class HeaderOnly:
        def __init__(self, *args, **kwargs):
            self._cm = real_open(*args, **kwargs)

        def __enter__(self):
            self._fh = self._cm.__enter__()
            return self

        def __exit__(self, *exc):
            return self._cm.__exit__(*exc)

        def get_tensor(self, key):
            raise AssertionError(f"tensor data of {key} read while checking the header")

        def __getattr__(self, name):
            return getattr(self._fh, name)

    monkeypatch.setattr(checkpoints, "safe_open", HeaderOnly)
    with pytest.raises(CheckpointError, match=problem) as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_nan_values_are_refused_at_load_naming_the_file(tmp_path):
    bad = torch.zeros(32, 32)
    bad[3, 4] = float("nan")
    path = write_raw(tmp_path / f"nan{SUFFIX}", {f"{Q}:delta": bad})
    assert read_header(path)["tensor_names"] == [f"{Q}:delta"]  # only data shows it
    with pytest.raises(CheckpointError, match="NaN or inf") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and Q in str(err.value)


@pytest.mark.parametrize("field, value", [("base", "[1, 2]"), ("metrics", "null"), ("training", '"full"')])
def test_metadata_field_that_is_not_an_object_is_refused(field, value, tmp_path):
    path = write_raw(tmp_path / f"odd{SUFFIX}", {f"{Q}:delta": torch.zeros(32, 32)}, **{field: value})
    with pytest.raises(CheckpointError, match=f"metadata field '{field}' must be a JSON object") as err:
        read_header(path)
    assert str(path) in str(err.value)


def norm_only(base):
    return {n: DenseDelta(torch.full(p.shape, 0.1)) for n, p in base.parameters.items() if n.endswith("norm.weight")}


def test_a_norm_only_checkpoint_is_refused_on_another_model(tiny, tmp_path):
    """Fresh norm scales are all ones in any model, so the touched tensors alone match;
    the recorded embedding hash still tells the models apart."""
    other = tiny_base(seed=1)
    ckpt = make_checkpoint("norms", norm_only(tiny), tiny)
    assert ckpt.base["fingerprint"] == other.fingerprint(list(ckpt.deltas))
    with pytest.raises(IncompatibleBaseError) as err:
        check_compatible(ckpt, other)
    message = str(err.value)
    assert "model tiny," in message and "tiny:1" in message and "embedding" in message
    path = save_checkpoint(ckpt, tmp_path / f"norms{SUFFIX}")
    assert not compatibility(read_header(path), other)[0]
    check_compatible(ckpt, other, allow_mismatch=True)  # the transfer override
    check_compatible(load_checkpoint(path), tiny_base(seed=0))


def test_a_checkpoint_of_another_layer_count_is_refused_naming_both(tiny):
    deep = tiny_base(layers=5)
    ckpt = make_checkpoint("norms", norm_only(tiny), tiny)
    with pytest.raises(IncompatibleBaseError, match=r"layer counts differ \(4 vs 5\)"):
        check_compatible(ckpt, deep)


def test_older_checkpoints_without_the_model_identity_still_apply(tiny, deltas_factory):
    ckpt = make_checkpoint("old", deltas_factory(tiny), tiny)
    for key in ("hidden_size", "embedding", "not_linear"):
        ckpt.base.pop(key)
    check_compatible(ckpt, tiny_base(seed=0))
    with pytest.raises(IncompatibleBaseError):
        check_compatible(ckpt, tiny_base(seed=1))
