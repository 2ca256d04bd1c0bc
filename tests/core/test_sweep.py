import pytest
import torch

from stance_studio.core import sweep as sweep_module
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import Cancelled, SweepRangeError
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.jobs import CancelFlag, MeasuredRow
from stance_studio.core.metrics import evaluate
from stance_studio.core.sweep import parse_range, point_blend, run_sweep

SETTINGS = GenerationSettings(max_new_tokens=6)
PROBES = ["why is the sky blue", "how do bees make honey", "what is a black hole"]


@pytest.fixture
def stances(tiny, deltas_factory):
    a = make_checkpoint("a", deltas_factory(tiny, scale=0.2, seed=1), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, kinds=("v_proj", "o_proj"), rank=2, scale=0.3, seed=2), tiny)
    return a, b


def test_parse_range():
    assert parse_range("-1:2:0.25") == [-1 + 0.25 * i for i in range(13)]
    assert parse_range("0:1:0.3") == [0, 0.3, 0.6, 0.9]
    assert parse_range("0.1:0.3:0.1") == [0.1, 0.2, 0.3]  # no floating-point drift past the end
    assert parse_range("0, 0.5,1") == [0.0, 0.5, 1.0]
    assert parse_range("2") == [2.0]


@pytest.mark.parametrize("text", ["", "a:b:c", "0:1", "0:1:0", "0:1:-1", "1:0:0.5", "0:1:1e-6", "nan", "0,inf",
                                  "0,0", "0:1000:1", "0:1:5e-324", "0:1e-10:1e-12"])
def test_bad_ranges_are_refused_with_the_text(text):
    with pytest.raises(SweepRangeError) as info:
        parse_range(text)
    assert repr(text.strip()) in str(info.value)


def test_a_step_below_the_finest_is_refused_by_name():
    """A subnormal step used to overflow counting the points (an internal error), and
    one below the rounding of the points made them repeat ("name a point twice")."""
    with pytest.raises(SweepRangeError, match=r"step of weights '0:1:5e-324' is 4.94066e-324; the finest step .* 1e-09"):
        parse_range("0:1:5e-324")
    assert parse_range("0:2e-9:1e-9") == [0.0, 1e-9, 2e-9]


def test_a_long_list_is_shortened_in_the_message():
    text = ",".join(str(i / 1000) for i in range(5000))
    with pytest.raises(SweepRangeError, match="make 5000 points") as info:
        parse_range(text)
    assert len(str(info.value)) < 200 and text[:40] in str(info.value)


def test_point_blend_merges_directions():
    a, b = object(), object()
    blend = point_blend([[(a, 1.0), (b, -0.5)], [(b, 1.0)]], (2.0, 3.0))
    assert blend == [(a, 2.0), (b, 2.0)]


def test_alpha_zero_equals_base_and_metrics_move_with_alpha(tiny, stances):
    a, _ = stances
    blender = Blender(tiny)
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    rows_seen = []
    result = run_sweep(tiny, blender, [[(a, 1.0)]], [[0.0, 1.0, 2.0]], PROBES, SETTINGS,
                       progress=lambda p: rows_seen.append(p.partial.row) if isinstance(p.partial, MeasuredRow) else None)
    rows = result["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 1.0, 2.0] and rows_seen == rows
    assert result["axes"] == ["alpha"] and result["directions"] == ["a"]
    base = evaluate(tiny, Blender(tiny), [], PROBES, SETTINGS).as_json()
    for key in ("kl_to_base", "identical_fraction", "stance_score", "hedges_per_100w", "boosters_per_100w"):
        assert rows[0][key] == pytest.approx(base[key]), key
    assert rows[0]["variant"] == "base" and rows[1]["variant"] == "a=1" and rows[2]["variant"] == "a=2"
    assert rows[0]["kl_to_base"] == pytest.approx(0.0, abs=1e-6) and rows[0]["identical_fraction"] == 1.0
    assert 0 < rows[1]["kl_to_base"] < rows[2]["kl_to_base"]
    # the point at alpha=1 is the stance itself
    direct = evaluate(tiny, Blender(tiny), [(a, 1.0)], PROBES, SETTINGS).as_json()
    assert rows[1]["kl_to_base"] == pytest.approx(direct["kl_to_base"], rel=1e-4)
    assert "samples" not in rows[1] and isinstance(rows[1]["sample"], str)
    for n, p in tiny.model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_every_evaluation_key_reaches_the_rows(tiny, stances, monkeypatch):
    """A metric the evaluation adds (as the stance-rate instrument does) flows into every row."""
    a, _ = stances
    real = sweep_module.evaluate

    class Extended:
        def __init__(self, m):
            self.m = m

        def as_json(self):
            return {**self.m.as_json(), "stance_rate": 0.25, "capability": {"change": 0.01}}

    monkeypatch.setattr(sweep_module, "evaluate", lambda *a, **k: Extended(real(*a, **k)))
    rows = run_sweep(tiny, Blender(tiny), [[(a, 1.0)]], [[0.0, 1.0]], PROBES[:1], SETTINGS)["rows"]
    assert all(r["stance_rate"] == 0.25 and r["capability"] == {"change": 0.01} for r in rows)


def test_grid_shape_and_order(tiny, stances):
    a, b = stances
    result = run_sweep(tiny, Blender(tiny), [[(a, 1.0)], [(b, 1.0)]], [[-1.0, 0.0, 1.0], [0.0, 0.5]], PROBES[:2],
                       SETTINGS)
    rows = result["rows"]
    assert result["axes"] == ["alpha", "beta"] and result["directions"] == ["a", "b"]
    assert [(r["alpha"], r["beta"]) for r in rows] == [(-1, 0), (-1, 0.5), (0, 0), (0, 0.5), (1, 0), (1, 0.5)]
    assert rows[0]["variant"] == "a=-1" and rows[3]["variant"] == "b=0.5" and rows[5]["variant"] == "a=1,b=0.5"
    assert rows[2]["kl_to_base"] == pytest.approx(0.0, abs=1e-6) and rows[2]["identical_fraction"] == 1.0
    assert rows[5]["kl_to_base"] > 0 and rows[1]["kl_to_base"] > 0


def test_a_blend_direction_is_scaled_as_a_whole(tiny, stances):
    a, b = stances
    rows = run_sweep(tiny, Blender(tiny), [[(a, 1.0), (b, -0.5)]], [[2.0]], PROBES[:1], SETTINGS)["rows"]
    assert rows[0]["variant"] == "a=2,b=-1"
    direct = evaluate(tiny, Blender(tiny), [(a, 2.0), (b, -1.0)], PROBES[:1], SETTINGS)
    assert rows[0]["kl_to_base"] == pytest.approx(direct.kl_to_base, rel=1e-4)


def test_cancel_stops_between_points_and_restores_the_blend(tiny, stances):
    a, b = stances
    blender = Blender(tiny)
    blender.apply([(b, 0.5)])
    flag = CancelFlag()
    measured = []

    def progress(p):
        if isinstance(p.partial, MeasuredRow):
            measured.append(p.partial.row)
            flag.set()

    with pytest.raises(Cancelled):
        run_sweep(tiny, blender, [[(a, 1.0)]], [[0.0, 1.0, 2.0]], PROBES[:1], SETTINGS, progress=progress, cancel=flag)
    assert len(measured) == 1
    assert [(src.name, w) for src, w in blender.active] == [("b", 0.5)]


def test_a_sweep_needs_directions_and_probes(tiny, stances):
    a, _ = stances
    with pytest.raises(SweepRangeError):
        run_sweep(tiny, Blender(tiny), [], [], PROBES)
    with pytest.raises(SweepRangeError):
        run_sweep(tiny, Blender(tiny), [[(a, 1.0)]], [[1.0]], [])


def test_points_beyond_the_blend_range_are_refused_before_any_work(tiny, stances):
    a, _ = stances
    from stance_studio.core.errors import VariantSpecError

    with pytest.raises(SweepRangeError, match="between -100 and 100"):
        parse_range("0:200:50")
    calls = []
    with pytest.raises(VariantSpecError, match="'a'"):
        # 40 × 3 = 120 is beyond the range even though each factor is within it
        run_sweep(tiny, Blender(tiny), [[(a, 3.0)]], [[0.0, 40.0]], PROBES, SETTINGS, progress=calls.append)
    assert calls == []


def test_progress_ends_at_its_total(tiny, stances):
    a, _ = stances
    reports = []
    run_sweep(tiny, Blender(tiny), [[(a, 1.0)]], [[0.0, 1.0]], PROBES[:1], SETTINGS, progress=reports.append)
    assert {r.stage for r in reports} == {"sweep"} and reports[-1].total == 3
    assert reports[-1].done == reports[-1].total and [r.done for r in reports] == sorted(r.done for r in reports)
