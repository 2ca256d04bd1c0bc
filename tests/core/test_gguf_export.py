import numpy as np
import pytest
import torch

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import CheckpointError, ExportError
from stance_studio.core.gguf_export import export_control_vector, export_gguf, export_lora_gguf, permute_rows


def read(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return fields, tensors, {t.name: t for t in reader.tensors}


def unpermute_rows(rows, n_head):
    out = rows.shape[0]
    return rows.reshape(n_head, out // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def test_permutation_is_llama_cpps_rotary_reordering():
    # llama.cpp interleaves the two rotary halves of each head: rows [0..3 | 4..7] -> 0,4,1,5,2,6,3,7
    rows = torch.arange(16.0)[:, None]
    got = permute_rows(rows, 2)[:, 0].tolist()
    assert got == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    assert torch.equal(unpermute_rows(permute_rows(rows, 2), 2), rows)


def test_lora_adapter_reads_back_exactly(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, rank=4, kinds=("q_proj", "k_proj", "v_proj", "down_proj"))
    ckpt = make_checkpoint("curious", deltas, tiny)
    path = export_lora_gguf(ckpt, tmp_path / "curious.gguf", tiny.model.config)
    fields, tensors, raw = read(path)
    assert fields["general.architecture"] == "llama"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 4.0
    assert fields["general.name"] == "curious"
    assert len(tensors) == 2 * len(deltas)
    heads, kv = tiny.model.config.num_attention_heads, tiny.model.config.num_key_value_heads
    for name, delta in deltas.items():
        layer = name.split(".")[2]
        kind = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "down_proj": "ffn_down"}[name.split(".")[-2]]
        a, b = tensors[f"blk.{layer}.{kind}.weight.lora_a"], tensors[f"blk.{layer}.{kind}.weight.lora_b"]
        assert np.array_equal(a, delta.A.numpy())
        # ggml shapes: lora_a [in, r], lora_b [r, out], as llama.cpp checks against the base tensor
        assert list(raw[f"blk.{layer}.{kind}.weight.lora_a"].shape) == [delta.A.shape[1], 4]
        assert list(raw[f"blk.{layer}.{kind}.weight.lora_b"].shape) == [4, delta.B.shape[0]]
        expected = delta.B
        if kind == "attn_q":
            expected = permute_rows(delta.B, heads)
            assert np.array_equal(unpermute_rows(torch.from_numpy(b), heads).numpy(), delta.B.numpy())
        elif kind == "attn_k":
            expected = permute_rows(delta.B, kv)
        assert np.array_equal(b, expected.numpy())


def test_mixed_ranks_fold_alpha_over_r_into_b(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, rank=4, kinds=("v_proj",))
    name = sorted(deltas)[0]
    deltas[name] = LowRankDelta(A=deltas[name].A[:2].clone(), B=deltas[name].B[:, :2].clone())
    path = export_lora_gguf(make_checkpoint("m", deltas, tiny), tmp_path / "m.gguf", tiny.model.config)
    fields, tensors, _ = read(path)
    assert fields["adapter.lora.alpha"] == 4.0
    layer = name.split(".")[2]
    b = torch.from_numpy(tensors[f"blk.{layer}.attn_v.weight.lora_b"])
    a = torch.from_numpy(tensors[f"blk.{layer}.attn_v.weight.lora_a"])
    # llama.cpp applies (alpha / r) * B @ A; that is the stored delta again
    torch.testing.assert_close((4.0 / 2) * b @ a, deltas[name].materialize(), rtol=1e-6, atol=1e-7)


def test_dense_and_norm_deltas_are_refused_and_nothing_written(tiny, deltas_factory, tmp_path):
    with pytest.raises(ExportError, match="dense deltas"):
        export_lora_gguf(make_checkpoint("d", deltas_factory(tiny), tiny), tmp_path / "d.gguf", tiny.model.config)
    with pytest.raises(CheckpointError, match="1-D parameters"):
        export_lora_gguf(make_checkpoint("n", deltas_factory(tiny, rank=2, include_norm=True), tiny),
                         tmp_path / "n.gguf", tiny.model.config)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_kept_unless_overwrite(tiny, deltas_factory, tmp_path):
    ckpt = make_checkpoint("c", deltas_factory(tiny, rank=2), tiny)
    target = tmp_path / "c.gguf"
    target.write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_gguf(ckpt, target, tiny.model.config)
    assert target.read_text() == "mine"
    export_gguf(ckpt, target, tiny.model.config, overwrite=True)
    assert read(target)[0]["general.type"] == "adapter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gguf"]


def steering_ckpt(tiny, layers=(1, 2), scale=0.5):
    ckpt = make_checkpoint("s", {}, tiny)
    ckpt.kind = "activation"
    gen = torch.Generator().manual_seed(3)
    ckpt.directions = {n: torch.randn(32, generator=gen) for n in range(tiny.num_layers)}
    ckpt.steering = {"apply_layers": list(layers), "scale": scale}
    return ckpt


def test_control_vector_reads_back_exactly(tiny, tmp_path):
    ckpt = steering_ckpt(tiny)
    path = export_gguf(ckpt, tmp_path / "s.gguf")
    fields, tensors, raw = read(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 2
    assert sorted(tensors) == ["direction.1", "direction.2"]
    for n in (1, 2):
        assert raw[f"direction.{n}"].tensor_type == 0  # F32
        assert np.array_equal(tensors[f"direction.{n}"], (ckpt.directions[n] * 0.5).numpy())


def test_control_vector_at_layer_zero_is_refused(tiny, tmp_path):
    with pytest.raises(ExportError, match="block 1"):
        export_control_vector(steering_ckpt(tiny, layers=(0, 1)), tmp_path / "s.gguf")
    assert list(tmp_path.iterdir()) == []
