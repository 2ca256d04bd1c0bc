import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.compare import VariantColumn, compare, to_json
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.jobs import ColumnText
from stance_studio.core.metrics import continuation_logprobs, kl_per_token, marker_rates
from stance_studio.core.repetition import loops
from stance_studio.core.runtime import runtime_for

SETTINGS = GenerationSettings(max_new_tokens=8)


def _reference_kl(base, blend, gen) -> float:
    """KL to base computed the plain way: the variant, then the base, one after the other."""
    runtime = runtime_for(base.model)
    with runtime.scoped(blend):
        (v,) = continuation_logprobs(base, [gen])
    with runtime.scoped([]):
        (b,) = continuation_logprobs(base, [gen])
    return max(float(kl_per_token(v, b).mean()), 0.0)


def test_every_column_is_measured_against_the_base(tiny, deltas_factory):
    a = make_checkpoint("a", deltas_factory(tiny, scale=0.4, seed=1), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, scale=0.4, seed=2, kinds=("o_proj",)), tiny)
    columns = [VariantColumn("a", "a", [(a, 1.0)]), VariantColumn("mix", "a=0.5,b=-1", [(a, 0.5), (b, -1.0)])]
    streamed = {}

    def progress(report):
        if isinstance(report.partial, ColumnText):
            streamed[report.partial.column] = report.partial.text

    result = compare(tiny, Blender(tiny), columns, "hello there", SETTINGS, progress=progress)
    assert [c.label for c in result.columns] == ["a", "mix"]  # the extra base row stays hidden
    assert set(streamed) == {0, 1}
    single = Blender(tiny)
    for column, got in zip(columns, result.columns):
        assert streamed[columns.index(column)] == got.text
        with single.runtime.scoped(column.blend):
            from stance_studio.core.generation import generate

            gen = generate(tiny, "hello there", SETTINGS)
        assert got.text == gen.text
        assert abs(got.kl_to_base - _reference_kl(tiny, column.blend, gen)) < 1e-4
        assert got.kl_to_base > 0
        assert (got.hedges, got.boosters) == marker_rates(gen.text)
        assert got.loops == loops(gen.text) and to_json(result)["columns"][0]["loops"] == result.columns[0].loops
    assert to_json(result)["columns"][1]["spec"] == "a=0.5,b=-1"


def test_base_column_has_no_kl_and_is_identical(tiny, deltas_factory):
    a = make_checkpoint("a", deltas_factory(tiny, scale=0.4), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 0.3)])
    columns = [VariantColumn("base", "base"), VariantColumn("a", "a", [(a, 1.0)])]
    result = compare(tiny, blender, columns, "hi", SETTINGS)
    assert result.columns[0].kl_to_base == 0.0 and result.columns[0].identical_to_base
    assert not result.columns[1].identical_to_base
    assert blender.active == [(a, 0.3)]  # the blend shown is untouched
    assert torch.is_grad_enabled()


def test_each_stance_of_the_columns_reads_every_answer(tiny, deltas_factory):
    import pytest

    from stance_studio.core.datasets import builtin_stances, load_dataset
    from stance_studio.core.metrics import EVAL_SETTINGS
    from stance_studio.core.stance_classifier import stance_classifier
    from stance_studio.core.stance_reference import reference_from_checkpoint

    path = builtin_stances()["curious-uncertainty"]
    data = load_dataset(path)
    a = make_checkpoint("a", deltas_factory(tiny, scale=0.4, seed=1), tiny,
                        stance={"dataset": str(path), "dataset_name": data.name, "dataset_hash": data.sha256})
    b = make_checkpoint("b", deltas_factory(tiny, scale=0.4, seed=2), tiny)  # no dataset recorded
    columns = [VariantColumn("base", "base", []), VariantColumn("a", "a", [(a, 1.0)]),
               VariantColumn("mix", "a=0.5,b=1", [(a, 0.5), (b, 1.0)])]
    prompt = data.examples[0].prompt
    result = compare(tiny, Blender(tiny), columns, prompt, EVAL_SETTINGS)
    assert [s.name for s in result.stances] == ["a"]
    assert len(result.notes) == 1 and result.notes[0].startswith("b records no stance dataset")
    classifier = stance_classifier(tiny, Blender(tiny), reference_from_checkpoint(a), EVAL_SETTINGS)
    for column in result.columns:
        assert set(column.stance_probability) == {"a"}
        assert column.stance_probability["a"] == pytest.approx(float(classifier.probability([column.text])[0]))
    # base's own answer to one of the stance's prompts is what its classifier learnt as "not the stance";
    # the stance's reference answer to it reads as the stance
    assert result.columns[0].stance_probability["a"] < 0.5 < float(classifier.probability([data.examples[0].response])[0])
    doc = to_json(result)
    assert doc["stances"][0]["stance"] == "a" and "stance_probability" in doc["columns"][1]
    skipped = compare(tiny, Blender(tiny), columns[:2], prompt, EVAL_SETTINGS, measure_stances=False)
    assert skipped.stances == [] and skipped.columns[1].stance_probability == {}
