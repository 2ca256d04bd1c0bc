import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.compare import VariantColumn, compare, to_json
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.jobs import ColumnText
from stance_studio.core.metrics import continuation_logprobs, kl_per_token, marker_rates
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
