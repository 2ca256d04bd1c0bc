import pytest
import torch

from stance_studio.core.datasets import load_dataset
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import Cancelled, StanceStudioError, TrainingDivergedError, UnknownModuleError
from stance_studio.core.jobs import CancelFlag
from stance_studio.core.training import TrainConfig, train


@pytest.fixture
def data(tiny):
    return load_dataset("curious-uncertainty", tiny.tokenizer)


def snapshot(base):
    return {n: p.detach().clone() for n, p in base.model.named_parameters()}


def test_full_training_lowers_loss_and_leaves_base_untouched(tiny, data):
    before = snapshot(tiny)
    result = train(tiny, data, TrainConfig(lr=3e-3, steps=12))
    assert result.losses[-1] < result.losses[0]
    assert set(result.deltas) == set(before)  # every parameter moves
    assert all(isinstance(d, DenseDelta) for d in result.deltas.values())
    assert result.trainable_params == tiny.num_parameters() and result.nonfinite_steps == 0
    for name, p in tiny.model.named_parameters():
        assert torch.equal(p.detach(), before[name]) and not p.requires_grad


def test_selective_changes_only_matching_parameters(tiny, data):
    result = train(tiny, data, TrainConfig(method="selective", modules=["layers.1.self_attn.q_proj", "depth:0.9:v_proj"],
                                          lr=1e-2, steps=3))
    assert set(result.deltas) == {"model.layers.1.self_attn.q_proj.weight", "model.layers.3.self_attn.v_proj.weight"}


def test_lora_stores_exact_low_rank_deltas(tiny, data):
    result = train(tiny, data, TrainConfig(method="lora", rank=3, steps=4, lr=1e-2))
    assert len(result.deltas) == 8  # q_proj and v_proj of 4 layers
    for name, delta in result.deltas.items():
        assert isinstance(delta, LowRankDelta) and delta.rank == 3
        assert name.endswith(("q_proj.weight", "v_proj.weight"))
        assert delta.shape == tuple(tiny.parameters[name].shape)
    assert result.trainable_params == sum(3 * (s[0] + s[1]) for s in (d.shape for d in result.deltas.values()))


def test_lora_delta_reproduces_the_adapter(tiny, data, monkeypatch):
    """The stored B·scaling @ A equals the merged adapter's weight change."""
    import stance_studio.core.training as training

    captured = {}
    real = training._lora_deltas

    def spy(wrapped, base):
        deltas = real(wrapped, base)
        merged = wrapped.merge_and_unload()
        captured.update({n: p.detach().clone() for n, p in merged.named_parameters()})
        return deltas

    monkeypatch.setattr(training, "_lora_deltas", spy)
    result = train(tiny, data, TrainConfig(method="lora", rank=2, steps=3, lr=5e-2))
    for name, delta in result.deltas.items():
        torch.testing.assert_close(tiny.parameters[name].detach() + delta.materialize(), captured[name],
                                   rtol=1e-5, atol=1e-6)


def test_training_is_seeded(tiny, data):
    a = train(tiny, data, TrainConfig(steps=3, lr=1e-3, seed=1))
    b = train(tiny, data, TrainConfig(steps=3, lr=1e-3, seed=1))
    c = train(tiny, data, TrainConfig(steps=3, lr=1e-3, seed=2))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert a.losses == b.losses and torch.equal(a.deltas[name].tensor, b.deltas[name].tensor)
    assert not torch.equal(a.deltas[name].tensor, c.deltas[name].tensor)


def test_diverging_learning_rate_skips_steps_then_stops(tiny, data):
    seen = []
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        train(tiny, data, TrainConfig(lr=1e6, steps=30, grad_clip=1e30), progress=lambda p: seen.append(p.info))
    skipped = [i for i in seen if i.get("skipped")]
    assert len(skipped) == 3 and skipped[-1]["nonfinite_steps"] == 3


def test_isolated_non_finite_step_is_skipped_and_counted(tiny, data, monkeypatch):
    """One bad batch: the step is skipped, counted, and training carries on."""
    import stance_studio.core.training as training

    real = training.collate
    calls = {"n": 0}

    def poisoned(tokenizer, examples):
        batch = real(tokenizer, examples)
        calls["n"] += 1
        if calls["n"] == 2:
            batch["labels"][:] = -100  # no target tokens: the loss is NaN
        return batch

    monkeypatch.setattr(training, "collate", poisoned)
    result = train(tiny, data, TrainConfig(steps=4, lr=1e-3))
    assert result.nonfinite_steps == 1 and result.losses[1] is None
    assert all(torch.isfinite(d.tensor).all() for d in result.deltas.values())


def test_cancel_stops_between_steps(tiny, data):
    flag = CancelFlag()
    steps = []

    def progress(p):
        if p.stage == "train" and p.done:
            steps.append(p.done)
            if p.done == 2:
                flag.set()

    with pytest.raises(Cancelled):
        train(tiny, data, TrainConfig(steps=10), progress=progress, cancel=flag)
    assert steps == [1, 2]


def test_unknown_module_lists_valid_names(tiny, data):
    with pytest.raises(UnknownModuleError) as err:
        train(tiny, data, TrainConfig(method="selective", modules=["nonexistent_proj"]))
    assert "nonexistent_proj" in str(err.value) and "model.layers" in str(err.value)


@pytest.mark.parametrize("kwargs", [{"method": "sgd"}, {"steps": 0}, {"lr": -1.0}, {"rank": 0}, {"grad_clip": -1.0}])
def test_bad_config_is_a_clear_error(kwargs):
    with pytest.raises(StanceStudioError):
        TrainConfig(**kwargs)


def test_grad_clip_zero_turns_clipping_off(tiny, data):
    """A tiny clip norm shrinks every update; 0 leaves the gradients as they are."""
    clipped = train(tiny, data, TrainConfig(steps=2, lr=1e-3, grad_clip=1e-6))
    free = train(tiny, data, TrainConfig(steps=2, lr=1e-3, grad_clip=0.0))
    assert all(g is not None and g > 1e-3 for g in free.grad_norms)  # norms are reported before clipping
    moved = lambda r: sum(float(d.materialize().abs().sum()) for d in r.deltas.values())  # noqa: E731
    assert moved(free) > moved(clipped)


@pytest.mark.parametrize("merged", [False, True])
def test_training_while_a_blend_is_shown_gives_the_same_delta_as_with_none(tiny, data, deltas_factory, merged):
    """Training starts from the true base: no stance hook and no merged weight
    reaches the training copy."""
    from stance_studio.core.blend import Blender

    config = TrainConfig(lr=3e-3, steps=3, seed=5)
    plain = train(tiny, data, config)
    blender = Blender(tiny)
    blender.apply([(deltas_factory(tiny, rank=2, scale=0.3, seed=9, include_norm=True), 1.0)])
    blender.runtime.merge = merged
    shown = train(tiny, data, config)
    assert set(shown.deltas) == set(plain.deltas)
    for name, delta in plain.deltas.items():
        assert torch.equal(shown.deltas[name].tensor, delta.tensor), name
    assert shown.losses == plain.losses
    assert [alpha for _, alpha in blender.active] == [1.0]  # the blend is still shown


def _with_attention_dropout(base, p=0.3):
    """Dropout in training draws from torch's global random state (the tiny model has
    none by default), so work that also draws from it would change the run."""
    for module in base.model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = p
    return base


def test_work_between_steps_on_the_loaded_model_leaves_the_training_bitwise_the_same(tiny, data, deltas_factory,
                                                                                    monkeypatch):
    """A caller may use the loaded model between training steps (the GUI answers a
    generation there): applying a blend, sampling and drawing random numbers there must
    not change one bit of what the run trains."""
    from stance_studio.core.blend import Blender
    from stance_studio.core.generation import GenerationSettings, generate

    _with_attention_dropout(tiny)
    config = TrainConfig(method="selective", lr=1e-2, steps=5, batch_size=2)
    plain = train(tiny, data, config)
    blender, stance = Blender(tiny), deltas_factory(tiny, seed=3, scale=0.5)
    calls = []

    def interleaved():
        calls.append(len(calls))
        blender.apply([(stance, 1.0 if len(calls) % 2 else -2.0)])
        generate(tiny, "Is it raining?", GenerationSettings(max_new_tokens=4, greedy=False, seed=len(calls)))
        torch.rand(1000)  # any draw from the global random state

    cancel = CancelFlag()
    cancel.between_steps_hook = interleaved
    busy = train(tiny, data, config, cancel=cancel)
    assert calls == list(range(2 * config.steps))  # before every step and between its passes
    assert busy.losses == plain.losses
    assert set(busy.deltas) == set(plain.deltas)
    for name, delta in plain.deltas.items():
        assert torch.equal(busy.deltas[name].materialize(), delta.materialize()), name
    # the check has teeth: the same work with the random state not set aside changes the run
    import stance_studio.core.training as training

    monkeypatch.setattr(training, "_between_steps", lambda flag, model: flag.between_steps())
    assert train(tiny, data, config, cancel=cancel).losses != plain.losses


def test_between_steps_sees_the_cancel_flag_set_there(tiny, data):
    cancel = CancelFlag()
    cancel.between_steps_hook = cancel.set  # the user cancels while interactive work runs
    with pytest.raises(Cancelled):
        train(tiny, data, TrainConfig(steps=3), cancel=cancel)


def test_lora_training_prints_no_third_party_deprecation(tiny, data):
    """Every LoRA run printed transformers' FutureWarning about is_gradient_checkpointing
    (read by peft) on stderr: two lines a user cannot act on."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny, data, TrainConfig(method="lora", steps=1))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
