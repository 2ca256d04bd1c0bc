import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import ACTIVATION, FORMAT_2, load_checkpoint, read_header, save_checkpoint
from stance_studio.core.datasets import Example, load_dataset
from stance_studio.core.errors import CheckpointError, ShapeMismatchError
from stance_studio.core.generation import GenerationSettings, side_by_side
from stance_studio.core.jobs import CancelFlag
from stance_studio.core.library import Library
from stance_studio.core.runtime import runtime_for
from stance_studio.core.steering import applied_vectors, at_layer, decoder_layers
from stance_studio.core.steering_build import SteerConfig, answer_means, build_steering, directions_from

IDS = torch.tensor([[1, 7, 30, 99, 5, 12]])


@pytest.fixture
def steer(tiny):
    data = load_dataset("curious-uncertainty")
    data.examples = data.examples[:3]
    return build_steering(tiny, data, "curious-steer", SteerConfig(max_new_tokens=8, band="0.3-0.8", strength=2.0))


def layer_outputs(base, ids=IDS):
    seen = []
    handles = [layer.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
               for layer in decoder_layers(base.model)]
    try:
        base.model(ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_mean_direction_is_the_mean_paired_difference():
    stance = torch.randn(4, 3, 8)
    own = torch.randn(4, 3, 8)
    torch.testing.assert_close(directions_from(stance, own, "mean"), (stance - own).mean(0))


def test_pca_direction_follows_the_shared_difference_and_its_size():
    gen = torch.Generator().manual_seed(0)
    axis = torch.zeros(16)
    axis[3] = 1.0
    own = torch.randn(6, 2, 16, generator=gen)
    stance = own + 5.0 * axis + 0.05 * torch.randn(6, 2, 16, generator=gen)
    pca = directions_from(stance, own, "pca")
    for layer in range(2):
        assert torch.nn.functional.cosine_similarity(pca[layer], axis, dim=0) > 0.99
        assert pca[layer].norm() == pytest.approx(5.0, rel=0.05)


def test_answer_means_average_the_answer_tokens_only(tiny):
    ex = Example("Why is the sky blue?", "Perhaps scattering.")
    means = answer_means(tiny, [(ex, ex.response)], CancelFlag())
    assert means.shape == (1, tiny.num_layers, 32)
    other = answer_means(tiny, [(Example("Why is the sky blue?", "Certainly scattering."), "Certainly scattering.")],
                         CancelFlag())
    assert not torch.allclose(means, other)


def test_build_records_every_layer_and_applies_the_band(tiny, steer):
    assert steer.kind == ACTIVATION and steer.method == "steer" and not steer.deltas
    assert sorted(steer.directions) == list(range(tiny.num_layers))
    assert steer.steering["apply_layers"] == [1, 2]  # depths (i + 0.5) / 4 = 0.375, 0.625 lie in 0.3-0.8
    assert steer.steering["scale"] == pytest.approx(2.0 / 2)
    assert steer.steering["norms"] == pytest.approx([float(v.norm()) for v in steer.directions.values()])
    assert all(n > 0 for n in steer.steering["norms"])


def test_steering_adds_alpha_times_the_vector_to_the_layer_output(tiny, steer):
    before = layer_outputs(tiny)
    blender = Blender(tiny)
    blender.apply([(steer, 0.5)])
    after = layer_outputs(tiny)
    vectors = applied_vectors(steer)
    first = min(vectors)
    for layer in range(first):
        assert torch.equal(before[layer], after[layer])  # layers before the first steered one are untouched
    # the first steered layer's own computation is unchanged; its output moves by exactly α v
    torch.testing.assert_close(after[first], before[first] + 0.5 * vectors[first], rtol=1e-5, atol=1e-5)
    assert not blender.is_base
    blender.reset()
    assert blender.is_base
    assert all(torch.equal(a, b) for a, b in zip(before, layer_outputs(tiny)))


def test_steering_roundtrips_through_the_library_in_format_2(tiny, steer, library_path):
    lib = Library(library_path)
    path = lib.save(steer)
    header = read_header(path)
    assert header["format"] == FORMAT_2 and header["kind"] == ACTIVATION
    assert sorted(header["tensor_names"]) == sorted(f"layers.{n}:direction" for n in range(tiny.num_layers))
    loaded = lib.load("curious-steer")
    assert loaded.kind == ACTIVATION and loaded.steering == steer.steering
    for layer, vector in steer.directions.items():
        assert torch.equal(loaded.directions[layer], vector)
    assert [e.method for e in lib.entries()] == ["steer"]
    Blender(tiny).check(loaded)  # fits the model it was built on


def test_a_steering_checkpoint_for_another_width_is_refused(tiny, steer):
    steer.directions = {0: torch.ones(64)}
    steer.steering = {"apply_layers": [0], "scale": 1.0}
    with pytest.raises(ShapeMismatchError, match="hidden size 32"):
        Blender(tiny).apply([(steer, 1.0)])
    steer.directions = {9: torch.ones(32)}
    with pytest.raises(ShapeMismatchError, match="steers layer 9"):
        Blender(tiny).apply([(steer, 1.0)])


def test_a_malformed_direction_file_is_refused(tiny, steer, tmp_path):
    from safetensors.torch import save_file

    path = save_checkpoint(steer, tmp_path / "s.stance.safetensors")
    meta = read_header(path)
    raw = {"format": FORMAT_2, "kind": ACTIVATION, "name": "x"}
    save_file({"layers.0:direction": torch.ones(2, 3)}, str(tmp_path / "bad.stance.safetensors"), metadata=raw)
    with pytest.raises(CheckpointError, match="one vector"):
        load_checkpoint(tmp_path / "bad.stance.safetensors")
    save_file({"layers.x:direction": torch.ones(3)}, str(tmp_path / "bad2.stance.safetensors"), metadata=raw)
    with pytest.raises(CheckpointError, match="layers.N:direction"):
        load_checkpoint(tmp_path / "bad2.stance.safetensors")
    assert meta["kind"] == ACTIVATION


def test_per_row_steering_in_one_batch_matches_one_column_at_a_time(tiny, steer, deltas_factory):
    from stance_studio.core.checkpoints import make_checkpoint

    weights = make_checkpoint("w", deltas_factory(tiny, rank=2, scale=0.2), tiny)
    columns = [[], [(steer, 1.0)], [(steer, -1.0), (weights, 0.5)], [(weights, 1.0)]]
    settings = GenerationSettings(max_new_tokens=10)
    blender = Blender(tiny)
    batched = side_by_side(tiny, blender, columns, "Why is the sky blue?", settings)
    one_by_one = side_by_side(tiny, blender, columns, "Why is the sky blue?", settings, batched=False)
    assert [g.new_ids for g in batched] == [g.new_ids for g in one_by_one]
    assert batched[1].new_ids != batched[0].new_ids  # steering changed the answer
    assert blender.is_base


def test_per_row_hook_adds_each_rows_own_vector(tiny, steer):
    ids = IDS.repeat(3, 1)
    before = layer_outputs(tiny, ids)
    with runtime_for(tiny.model).rows([[], [(steer, 1.0)], [(steer, -2.0)]]):
        after = layer_outputs(tiny, ids)
    first = min(applied_vectors(steer))
    v = applied_vectors(steer)[first]
    assert torch.equal(after[first][0], before[first][0])
    torch.testing.assert_close(after[first][1], before[first][1] + v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after[first][2], before[first][2] - 2 * v, rtol=1e-5, atol=1e-5)


def test_at_layer_moves_the_vector_to_one_layer(steer):
    one = at_layer(steer, 3)
    assert list(applied_vectors(one)) == [3]
    assert torch.equal(applied_vectors(one)[3], steer.directions[3])
    assert steer.steering["apply_layers"] == [1, 2]  # the original is unchanged


def test_activations_name_the_decoder_layers_the_vectors_go_to(tiny, steer):
    assert steer.steering["module"] == "model.layers"
    acts = steer.activations
    assert sorted(acts) == ["model.layers.1", "model.layers.2"]
    modules = dict(tiny.model.named_modules())
    assert all(name in modules for name in acts)
    torch.testing.assert_close(acts["model.layers.1"], steer.directions[1] * steer.steering["scale"])
