"""Every model family trains with every method, extracts, blends, runs side by side
and exports to PEFT, each on a tiny random model of that family."""

import json

import pytest
import torch

from stance_studio.core.analysis import analyse, layer_index, module_kind
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.datasets import load_dataset
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import ModelLoadError
from stance_studio.core.extraction import extract
from stance_studio.core.generation import GenerationSettings, side_by_side
from stance_studio.core.models import load_base
from stance_studio.core.modules import select_linear_modules, select_parameters
from stance_studio.core.peft_export import export_peft
from stance_studio.core.tiny import FAMILIES
from stance_studio.core.training import TrainConfig, train

IDS = torch.tensor([[1, 7, 30, 99, 5, 42]])
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                 "gemma2": "Gemma2ForCausalLM", "phi3": "Phi3ForCausalLM", "gpt2": "GPT2LMHeadModel"}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    """One model per family for the whole module: tests leave its weights as they found them."""
    return load_base(f"tiny:{family}:1")


_TRAINED: dict = {}


def trained(model, data, method):
    """One short training run per family and method, shared by the tests."""
    key = (model.model_id, method)
    if key not in _TRAINED:
        _TRAINED[key] = train(model, data, TrainConfig(method=method, steps=2, rank=2,
                                                       lr=3e-3 if method == "full" else 5e-2))
    return _TRAINED[key]


@pytest.fixture(scope="module")
def data():
    from stance_studio.core.tiny import tiny_tokenizer

    return load_dataset("curious-uncertainty", tiny_tokenizer())


def logits(base):
    with torch.no_grad():
        return base.model(IDS).logits.detach().clone()


def test_spec_builds_that_family_reproducibly(family):
    a, b, other = load_base(f"tiny:{family}:1"), load_base(f"tiny:{family}:1"), load_base(f"tiny:{family}:2")
    assert a.architecture == ARCHITECTURES[family] == type(a.model).__name__
    assert a.model_id == (f"tiny:{family}:1" if family != "llama" else "tiny:1")
    assert a.num_layers == 4 and torch.equal(logits(a), logits(b)) and not torch.equal(logits(a), logits(other))
    assert load_base(f"tiny:{family}:layers=6").num_layers == 6


def test_a_bad_tiny_spec_names_the_families():
    with pytest.raises(ModelLoadError, match="gpt2"):
        load_base("tiny:bert")


@pytest.mark.parametrize("method", ["full", "selective", "lora"])
def test_every_method_trains_and_blends(model, data, method):
    before = logits(model)
    result = trained(model, data, method)
    assert result.deltas and result.nonfinite_steps == 0 and all(loss is not None for loss in result.losses)
    params = model.parameters
    for name, delta in result.deltas.items():
        assert delta.shape == tuple(params[name].shape), name
    if method != "full":  # the default q_proj,v_proj resolve on this family's attention
        kinds = {module_kind(n) for n in result.deltas}
        assert kinds & {"q_proj", "v_proj", "qkv_proj", "c_attn"}, kinds
    kept, info = extract(result.deltas, model, "rank:2")
    blender = Blender(model)
    ckpt = make_checkpoint("s", kept, model)
    blender.apply([(ckpt, 1.0)])
    assert not torch.allclose(logits(model), before)
    blender.reset()
    assert torch.equal(logits(model), before)


def test_lora_deltas_equal_the_merged_adapter(model, data, monkeypatch):
    """On GPT-2's transposed Conv1D too, the stored B @ A is the weight change PEFT merges."""
    import stance_studio.core.training as training

    merged = {}
    real = training._lora_deltas

    def spy(wrapped, base):
        deltas = real(wrapped, base)
        merged.update({n: p.detach().clone() for n, p in wrapped.merge_and_unload().named_parameters()})
        return deltas

    monkeypatch.setattr(training, "_lora_deltas", spy)
    result = train(model, data, TrainConfig(method="lora", rank=2, steps=2, lr=5e-2))
    assert result.deltas
    for name, delta in result.deltas.items():
        assert isinstance(delta, LowRankDelta)
        torch.testing.assert_close(model.parameters[name] + delta.materialize(), merged[name], rtol=1e-4, atol=1e-5)


def test_lora_checkpoint_exports_to_peft_with_the_same_logits(model, data, tmp_path):
    from peft import PeftModel

    import copy

    result = trained(model, data, "lora")
    ckpt = make_checkpoint("s", result.deltas, model)
    out = export_peft(ckpt, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] == (model.architecture == "GPT2LMHeadModel")
    base_logits = logits(model)
    blender = Blender(model)
    blender.apply([(ckpt, 1.0)])
    ours = logits(model)
    blender.reset()
    theirs = PeftModel.from_pretrained(copy.deepcopy(model.model), str(out))(input_ids=IDS).logits.detach()
    assert not torch.allclose(ours, base_logits)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_side_by_side_batched_equals_one_at_a_time(model, data):
    """Runtime stances (per-row deltas) give each column what its weights would."""
    low = make_checkpoint("low", trained(model, data, "lora").deltas, model)
    full = make_checkpoint("full", trained(model, data, "full").deltas, model)
    columns = [[], [(low, 1.0)], [(low, -0.7), (full, 0.5)]]
    settings = GenerationSettings(max_new_tokens=8)
    blender = Blender(model)
    batched = side_by_side(model, blender, columns, "hello there", settings)
    swapped = side_by_side(model, blender, columns, "hello there", settings, batched=False)
    assert [g.new_ids for g in batched] == [g.new_ids for g in swapped]


@pytest.mark.parametrize("pattern", ["v_proj", "o_proj", "down_proj", "depth:0.6:v_proj", "self_attn"])
def test_llama_module_names_resolve_on_every_family(model, pattern):
    linear = select_linear_modules(model.model, [pattern], model.num_layers)
    kind = pattern.rpartition(":")[2]
    expected = {"GPT2LMHeadModel": {"v_proj": "c_attn", "o_proj": "attn.c_proj", "down_proj": "mlp.c_proj"},
                "Phi3ForCausalLM": {"v_proj": "qkv_proj"}}.get(model.architecture, {}).get(kind, kind)
    if kind != "self_attn":
        assert linear and {module_kind(n) for n in linear} == {expected}
    else:
        assert len(linear) >= 2 * model.num_layers
    if pattern.startswith("depth:"):
        assert {layer_index(n) for n in linear} == {2}
    assert select_parameters(model.model, [pattern], model.num_layers)


def test_layer_analysis_labels_each_family_kinds(model, data):
    result = trained(model, data, "full")
    kinds = {c.kind for c in analyse(result.deltas, model, spectra=False)}
    layers = {c.layer for c in analyse(result.deltas, model, spectra=False)}
    assert layers >= {0, 1, 2, 3}
    if model.architecture == "GPT2LMHeadModel":
        assert {"c_attn", "attn.c_proj", "mlp.c_proj", "c_fc"} <= kinds
    else:
        assert {"o_proj", "down_proj"} <= kinds
