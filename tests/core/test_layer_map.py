"""--map-layers depth: a stance made on L layers applies to a same-family model with
L' layers, layer by layer at the nearest depth fraction; modules whose shapes differ
are refused by name."""

import pytest
import torch

from stance_studio.cli import main
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import CheckpointError
from stance_studio.core.layer_map import map_by_depth, source_layer
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


def test_source_layers_follow_depth_fraction():
    assert [source_layer(j, 8, 4) for j in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [source_layer(j, 2, 4) for j in range(2)] == [1, 3]
    assert [source_layer(j, 4, 4) for j in range(4)] == [0, 1, 2, 3]
    assert [source_layer(j, 3, 30) for j in range(3)] == [5, 15, 25]


def layered_deltas(base, seed=0):
    """A distinct low-rank delta on every layer's v_proj plus the final norm."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in base.parameters.items():
        if name.endswith("v_proj.weight"):
            out[name] = LowRankDelta(A=torch.randn(2, p.shape[1], generator=gen), B=torch.randn(p.shape[0], 2, generator=gen))
        elif name == "model.norm.weight":
            out[name] = DenseDelta(torch.randn(p.shape, generator=gen) * 0.1)
    return out


@pytest.mark.parametrize("layers", [2, 6, 4])
def test_each_target_layer_takes_the_nearest_source_layer(layers):
    source, target = tiny_base(layers=4), tiny_base(layers=layers, seed=5)
    ckpt = make_checkpoint("s", layered_deltas(source), source)
    mapping = map_by_depth(ckpt, target)
    assert mapping.refused == {}
    assert set(mapping.checkpoint.deltas) == {f"model.layers.{j}.self_attn.v_proj.weight" for j in range(layers)} | {"model.norm.weight"}
    for j in range(layers):
        i = source_layer(j, layers, 4)
        assert mapping.checkpoint.deltas[f"model.layers.{j}.self_attn.v_proj.weight"] is ckpt.deltas[f"model.layers.{i}.self_attn.v_proj.weight"]
    assert mapping.checkpoint.base["model"] == target.model_id and mapping.checkpoint.base["mapped_from"]["num_layers"] == 4
    Blender(target).apply([(mapping.checkpoint, 1.0)])  # the mapped checkpoint passes the target's checks


def test_modules_whose_shapes_differ_are_refused_by_name():
    source, target = tiny_base(layers=4), tiny_base(layers=6)
    deltas = layered_deltas(source)
    deltas["model.layers.3.mlp.down_proj.weight"] = DenseDelta(torch.zeros(7, 5))  # not this model's shape
    mapping = map_by_depth(make_checkpoint("s", deltas, source), target)
    assert set(mapping.refused) == {"model.layers.4.mlp.down_proj.weight", "model.layers.5.mlp.down_proj.weight"}
    assert "(7, 5)" in mapping.refused["model.layers.5.mlp.down_proj.weight"]
    assert "model.layers.5.self_attn.v_proj.weight" in mapping.checkpoint.deltas


def test_nothing_maps_across_widths_or_families():
    source = tiny_base()
    ckpt = make_checkpoint("s", layered_deltas(source), source)
    with pytest.raises(CheckpointError, match="No module .* maps"):
        map_by_depth(ckpt, tiny_base(hidden=48, layers=6))
    with pytest.raises(CheckpointError, match="one family"):
        map_by_depth(ckpt, tiny_base(arch="qwen2"))


def test_generate_maps_layers_on_the_command_line(tmp_path, capsys):
    source = tiny_base()
    library = Library(tmp_path)
    deltas = layered_deltas(source)
    deltas["model.layers.0.mlp.down_proj.weight"] = DenseDelta(torch.zeros(3, 3))
    library.save(make_checkpoint("deep", deltas, source))
    args = ["generate", "--prompt", "hello", "--variant", "deep", "--model", "tiny:layers=6", "--library", str(tmp_path),
            "--max-new-tokens", "4", "--json"]
    assert main(args) == 2  # without the mapping: another base, refused
    capsys.readouterr()
    assert main([*args, "--map-layers", "depth"]) == 0
    err = capsys.readouterr().err
    assert err.count("refused") == 1 and "refused model.layers.0.mlp.down_proj.weight" in err and "(3, 3)" in err


def test_a_steering_stance_passes_at_its_own_depth_and_is_refused_by_name_at_another():
    """It was refused as touching "none of its parameters", even on its own model."""
    source = tiny_base(layers=4)
    steer = make_checkpoint("st", {}, source, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.ones(32) for n in range(4)}
    assert map_by_depth(steer, source).checkpoint is steer
    with pytest.raises(CheckpointError, match="'st' is an activation-steering stance made on 4 layers; "
                                              "--map-layers depth maps weight deltas only"):
        map_by_depth(steer, tiny_base(layers=6, seed=5))
